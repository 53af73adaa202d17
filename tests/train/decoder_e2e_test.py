"""End to end on a tiny random GPT-2-layout checkpoint: linearized LoRA training and the NTK report.

The checkpoint is written here in the exact HF GPT2ForSequenceClassification key layout
(``transformer.wte.weight``, ``transformer.h.{i}.attn.c_attn.weight`` (in, out), ...; see
tests/fixtures/decoders/README.md), with a byte-level BPE tokenizer.json that has a pad token.
"""
import json

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from safetensors.numpy import save_file

from ntkft import ntk_report
from ntkft.models import HeadConfig, load_pretrained
from ntkft.train import loop
from tests.conftest import GLUE_DIR, REPO
from tests.data.bpe_tokenizer_test import make_bpe_tokenizer
from tests.test_util import assert_close


def write_tiny_gpt2(path, hidden=16, layers=2, heads=2, positions=64, seed=0):
  """A random GPT-2 in HF layout (config.json, model.safetensors, tokenizer.json)."""
  path.mkdir(parents=True)
  make_bpe_tokenizer(path / "tokenizer.json", "gpt2", vocab_size=300, full_alphabet=True)
  vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
  v = max(vocab.values()) + 1
  rng = np.random.default_rng(seed)
  w = lambda *s: (0.2 * rng.standard_normal(s)).astype(np.float32)
  t = {"transformer.wte.weight": w(v, hidden), "transformer.wpe.weight": w(positions, hidden),
       "transformer.ln_f.weight": 1 + w(hidden), "transformer.ln_f.bias": w(hidden)}
  for i in range(layers):
    p = f"transformer.h.{i}."
    for ln in ("ln_1", "ln_2"):
      t[p + ln + ".weight"], t[p + ln + ".bias"] = 1 + w(hidden), w(hidden)
    for name, shape in (("attn.c_attn", (hidden, 3 * hidden)), ("attn.c_proj", (hidden, hidden)),
                        ("mlp.c_fc", (hidden, 4 * hidden)), ("mlp.c_proj", (4 * hidden, hidden))):
      t[p + name + ".weight"], t[p + name + ".bias"] = w(*shape), w(shape[1])
  save_file(t, str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps({
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": v,
      "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_positions": positions,
      "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
      "pad_token_id": 1, "eos_token_id": 0, "bos_token_id": 0}, indent=2))
  return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  if not GLUE_DIR.is_dir():
    pytest.fail(f"GLUE data not found at {GLUE_DIR}")
  return write_tiny_gpt2(tmp_path_factory.mktemp("h9_dec") / "gpt2")


def _parse(config_file, overrides):
  """The locked ConfigDict that ``python -m ntkft.run`` / ``ntkft.ntk_report`` build from flags."""
  argv = ["prog", f"--config={REPO / 'configs' / config_file}.py:runlocal"] + [
      f"--config.{k}={v}" for k, v in overrides.items()]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_tiny_gpt2_folder_loads_with_its_tokenizer(gpt2_dir):
  model = load_pretrained(gpt2_dir, HeadConfig(2, "last"))
  assert model.config.family == "gpt2" and model.config.intermediate_size == 64
  assert set(model.newly_initialized) == {"head/kernel", "head/bias"}


@pytest.mark.slow  # ~70 s on 2 shared cores (compiles the train and eval steps)
def test_linearized_lora_run_on_a_decoder(gpt2_dir, tmp_path):
  config = _parse("decoder_linearized", {
      "model.name": str(gpt2_dir), "data.n_train": 32, "data.n_eval": 32, "data.max_len": 32,
      "data.buckets": "(32,)", "data.batch_size": 16, "data.eval_batch_size": 32,
      "train.steps": 4, "train.ckpt_every": 4, "train.log_every": 2, "train.progress": False})
  assert config.peft.family == "gpt2" and tuple(config.peft.targets) == ("c_attn",)
  summary = loop.run(config, str(tmp_path / "w"))
  assert summary["mode"] == "linearized" and summary["steps"] == 4
  assert np.isfinite(summary["train_loss"]) and 0.0 <= summary["dev_metric"] <= 1.0
  records = [json.loads(l) for l in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert records


@pytest.mark.slow  # ~40 s on 2 shared cores
def test_ntk_report_on_a_decoder(gpt2_dir, tmp_path):
  config = _parse("decoder_ntk_spectrum", {
      "model.name": str(gpt2_dir), "n": 6, "chunk_size": 3, "data.max_len": 32,
      "progress": False})
  ntk_report.run(config, str(tmp_path))
  summary = json.loads((tmp_path / "spectrum.json").read_text())
  # LoRA r=8 on c_attn (16 -> 48) of both layers, A and B: 2 * (16*8 + 8*48)
  assert summary["n"] == 6 and summary["num_params"] == 2 * (16 * 8 + 8 * 48)
  k = np.load(tmp_path / "kernel.npz")["kernel"]
  assert k.shape == (6, 6)
  assert_close(k, k.T, rtol=1e-6, atol_scale=1e-6)  # float32 K_ij, K_ji: own reductions
  assert np.linalg.eigvalsh(k.astype(np.float64)).max() > 0
