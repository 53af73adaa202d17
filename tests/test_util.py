"""Shared test helpers: float32 comparisons; tiny Hugging Face-layout BERT checkpoints.

``assert_close(actual, expected, rtol, atol_scale)`` compares float32 results
with a tolerance relative to the magnitude of what is compared.

``write_tiny_bert_checkpoint(path)`` writes a randomly initialized BERT encoder in
the Hugging Face folder layout (``config.json`` + ``model.safetensors`` in the
``bert.``-prefixed key layout + MiniLM's ``tokenizer.json``), so the real loader,
tokenizer and training loop run on it end to end in seconds. Its vocabulary is
the MiniLM tokenizer's (30522 word pieces), so any GLUE text tokenizes into it.

``tiny_bert_for_glue_runs(folder)`` and ``cli_env(cache_dir)``: the model and the
environment of the tests that run ``python -m ntkft.run`` on GLUE.
"""
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from ntkft.models import EncoderConfig, HeadConfig, flatten, init_model, resolve_model_dir
from tests.conftest import GLUE_DIR, REPO

MINILM_VOCAB = 30522


def assert_close(actual, expected, rtol: float = 1e-5, atol_scale: float = 1e-5,
                 err_msg: str = "") -> None:
  """|actual − expected| ≤ rtol·|expected| + atol_scale·max|expected|, elementwise.

  For float32 results. A float32 reduction changes its summation order with the
  CPU's vector width, XLA's thread partitioning and the padded length, so two
  correct results differ by a few ulps of the largest terms summed, not of each
  element: an element near zero gets the tolerance of the array's scale. Exact
  properties (bit-identical resume, one program run twice) and float64 checks
  keep their own comparisons.
  """
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  scale = float(np.abs(expected).max()) if expected.size else 0.0
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_scale * scale,
                             err_msg=err_msg)

# ntkft module path inside encoder/layer_{i}/ -> HF module path inside encoder.layer.{i}.
_LAYER_MODULES = {
    "attention/query": "attention.self.query",
    "attention/key": "attention.self.key",
    "attention/value": "attention.self.value",
    "attention/attn_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "ffn/ffn_in": "intermediate.dense",
    "ffn/ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_EMBEDDINGS = {
    "embeddings/word": "embeddings.word_embeddings",
    "embeddings/position": "embeddings.position_embeddings",
    "embeddings/token_type": "embeddings.token_type_embeddings",
    "embeddings/layer_norm": "embeddings.LayerNorm",
}
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def to_hf_tensors(params, prefix: str = "bert.") -> dict[str, np.ndarray]:
  """ntkft encoder params -> HF BERT tensors (the inverse of ``convert_hf_tensors``).

  Dense kernels (d_in, d_out) become PyTorch weights (d_out, d_in); the pooler
  and head are left out (the loader then initializes them fresh).
  """
  out = {}
  for name, value in flatten(params).items():
    module, leaf = name.rsplit("/", 1)
    if module.startswith(("head", "pooler")):
      continue
    if module.startswith("encoder/"):
      _, layer, rest = module.split("/", 2)
      hf_module = f"encoder.layer.{layer.removeprefix('layer_')}.{_LAYER_MODULES[rest]}"
    else:
      hf_module = _EMBEDDINGS[module]
    value = np.asarray(value, dtype=np.float32)
    if leaf == "kernel":
      value = value.T
    out[f"{prefix}{hf_module}.{_LEAVES[leaf]}"] = np.ascontiguousarray(value)
  return out


def write_tiny_bert_checkpoint(path, num_layers: int = 2, hidden: int = 16,
                               seed: int = 0) -> pathlib.Path:
  """Writes a random tiny BERT (MiniLM vocabulary and tokenizer) into ``path``.

  Args:
    path: folder to create (parents too).
    num_layers: encoder depth.
    hidden: hidden size (2 attention heads, intermediate size 2·hidden,
      128 positions).
    seed: init seed of the weights.

  Returns:
    The folder, loadable with ``ntkft.models.load_pretrained`` and usable as
    ``config.model.name``.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  config = EncoderConfig(vocab_size=MINILM_VOCAB, hidden_size=hidden, num_layers=num_layers,
                         num_heads=2, intermediate_size=2 * hidden,
                         max_position_embeddings=128)
  model = init_model(config, HeadConfig(num_labels=2), seed=seed)
  hf_config = {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": MINILM_VOCAB,
      "hidden_size": hidden, "num_hidden_layers": num_layers, "num_attention_heads": 2,
      "intermediate_size": 2 * hidden, "max_position_embeddings": 128,
      "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
      "hidden_act": "gelu", "position_embedding_type": "absolute",
  }
  (path / "config.json").write_text(json.dumps(hf_config, indent=2))
  save_file(to_hf_tensors(model.params), str(path / "model.safetensors"))
  shutil.copy(resolve_model_dir("minilm-l6") / "tokenizer.json", path / "tokenizer.json")
  return path


def tiny_bert_for_glue_runs(folder, num_layers: int = 2) -> pathlib.Path:
  """``write_tiny_bert_checkpoint`` (``num_layers`` layers, hidden 16) into ``folder/bert``,
  for runs on GLUE.

  Fails the test at once when the GLUE data is missing (set NTKFT_DATA).
  """
  if not GLUE_DIR.is_dir():
    pytest.fail(f"GLUE data not found at {GLUE_DIR} (set NTKFT_DATA)")
  return write_tiny_bert_checkpoint(pathlib.Path(folder) / "bert", num_layers=num_layers,
                                    hidden=16)


def cli_env(cache_dir, **extra: str) -> dict[str, str]:
  """Environment of a ``python -m ntkft.run`` subprocess, plus the ``extra`` variables.

  CPU only; this checkout first on PYTHONPATH; every compiled program goes to the
  persistent compilation cache in ``cache_dir``, whatever its compile time or size.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", **extra)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env
