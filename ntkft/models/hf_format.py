"""Hugging Face's BERT/RoBERTa checkpoint format: its tensor names and safetensors files.

The one place of the naming rules HF module path <-> ntkft module path
(``encoder.layer.{i}.attention.self.query`` <-> ``encoder/layer_{i}/attention/query``)
and of reading one ``.safetensors`` file, shared by the checkpoint loader
(``ntkft.models.pretrained``) and the PEFT adapter format
(``ntkft.models.peft_format``), which import this module and not each other.
"""
import pathlib
import re

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file


def load_safetensors_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The tensors of one .safetensors file; a truncated or corrupt file is a ValueError."""
  try:
    return load_file(str(path))
  except SafetensorError as e:
    raise ValueError(f"{path} is truncated or corrupt ({e}); download or convert it "
                     "again") from e


LAYER_RULES = [  # HF suffix inside encoder.layer.{i}. -> ntkft path inside layer_{i}/
    ("attention.self.query", "attention/query"),
    ("attention.self.key", "attention/key"),
    ("attention.self.value", "attention/value"),
    ("attention.output.dense", "attention/attn_out"),
    ("attention.output.LayerNorm", "attention_norm"),
    ("intermediate.dense", "ffn/ffn_in"),
    ("output.dense", "ffn/ffn_out"),
    ("output.LayerNorm", "ffn_norm"),
]
_EMBED_RULES = [
    ("embeddings.word_embeddings", "embeddings/word"),
    ("embeddings.position_embeddings", "embeddings/position"),
    ("embeddings.token_type_embeddings", "embeddings/token_type"),
    ("embeddings.LayerNorm", "embeddings/layer_norm"),
]
_LEAF = {"weight": "kernel", "bias": "bias", "gamma": "scale", "beta": "bias"}
_IGNORED = re.compile(r"^(embeddings\.position_ids|cls\..*|lm_head\..*)$")


def module_path(stem: str, family: str, load_head: bool) -> str | None:
  """HF module path (no leaf) -> ntkft module path; None if known-unused; '' if unknown."""
  m = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", stem)
  if m:
    for hf, ours in LAYER_RULES:
      if m.group(2) == hf:
        return f"encoder/layer_{m.group(1)}/{ours}"
    return ""
  for hf, ours in _EMBED_RULES:
    if stem == hf:
      return ours
  if stem == "pooler.dense":
    return "pooler/dense" if family == "bert" else None  # RoBERTa classifiers ignore it
  heads = ({"classifier": "head"} if family == "bert" else
           {"classifier.dense": "pooler/dense", "classifier.out_proj": "head"})
  if stem in heads:
    return heads[stem] if load_head else None
  return ""


def convert_hf_tensors(tensors: dict[str, np.ndarray], family: str, load_head: bool = True):
  """HF tensors -> ({ntkft name: array}, [unexpected HF names]).

  Linear weights are transposed to (d_in, d_out); embeddings keep (num, dim);
  LayerNorm weight/gamma -> scale, bias/beta -> bias.
  """
  prefix = f"{'bert' if family == 'bert' else 'roberta'}."
  converted, unexpected = {}, []
  for key, value in tensors.items():
    bare = key[len(prefix):] if key.startswith(prefix) else key
    if _IGNORED.match(bare):
      continue
    stem, _, leaf = bare.rpartition(".")
    path = module_path(stem, family, load_head)
    if path is None:
      continue
    if path == "" or leaf not in _LEAF:
      unexpected.append(key)
      continue
    is_norm = path.endswith("norm")
    is_embedding = path.startswith("embeddings/") and not is_norm
    if is_embedding:
      name = f"{path}/embedding"
    else:
      name = f"{path}/{'scale' if is_norm and leaf == 'weight' else _LEAF[leaf]}"
    if leaf == "weight" and value.ndim == 2 and not is_embedding:
      value = value.T
    converted[name] = np.asarray(value, dtype=np.float32)
  return converted, unexpected
