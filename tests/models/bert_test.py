"""Flax encoder vs Hugging Face reference outputs, masking invariance, loader errors."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ntkft import peft
from ntkft.models import (
  CheckpointMismatchError,
  HeadConfig,
  load_pretrained,
  read_config,
)
from tests.conftest import FIXTURES
from tests.test_util import assert_close

PARITY = FIXTURES / "parity"


def _batch(ref):
  return {k: jnp.asarray(ref[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _pooler(params, hidden):
  dense = params["pooler"]["dense"]
  return np.tanh(np.asarray(hidden[:, 0]) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"]))


def test_minilm_matches_reference_last_hidden_states():
  ref = np.load(PARITY / "minilm_last_hidden.npz")
  model = load_pretrained("minilm-l6", HeadConfig(num_labels=2, pooling="cls"))
  hidden = np.asarray(jax.jit(model.hidden_fn)(model.params, _batch(ref)))
  real = ref["attention_mask"].astype(bool)  # reference stores zeros at padding
  assert_close(hidden[real], ref["last_hidden_state"][real], rtol=1e-4, atol_scale=1e-5)
  assert_close(_pooler(model.params, hidden), ref["pooler_output"], rtol=1e-4, atol_scale=1e-4)
  assert set(model.newly_initialized) == {"head/bias", "head/kernel"}


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_roberta"])
def test_tiny_base_models_match_reference(name):
  ref = np.load(PARITY / name / "reference.npz")
  model = load_pretrained(PARITY / name, HeadConfig(num_labels=2, pooling="cls"))
  hidden = np.asarray(model.hidden_fn(model.params, _batch(ref)))
  real = ref["attention_mask"].astype(bool)
  assert_close(hidden[real], ref["last_hidden_state"][real])
  if name == "tiny_bert":  # RoBERTa classifiers do not use the base pooler
    assert_close(_pooler(model.params, hidden), ref["pooler_output"])


@pytest.mark.parametrize("name,num_labels", [("tiny_bert_cls", 3), ("tiny_roberta_cls", 2)])
def test_tiny_classifiers_match_reference_logits(name, num_labels):
  ref = np.load(PARITY / name / "reference.npz")
  model = load_pretrained(PARITY / name, HeadConfig(num_labels=num_labels, pooling="cls"))
  assert model.newly_initialized == ()
  logits = model.apply_fn(model.params, _batch(ref))
  assert_close(logits, ref["logits"])


def test_roberta_config_has_position_offset():
  cfg = read_config(PARITY / "tiny_roberta")
  assert cfg.family == "roberta" and cfg.pad_token_id == 1 and cfg.position_offset == 2


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("name", ["tiny_bert", "tiny_roberta"])
def test_outputs_at_real_tokens_do_not_depend_on_padding(name, pooling):
  model = load_pretrained(PARITY / name, HeadConfig(num_labels=2, pooling=pooling))
  pad = model.config.pad_token_id
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 99, size=(2, 7)).astype(np.int32)
  types = np.zeros_like(ids)
  outs, logits = [], []
  for extra in (0, 5, 25):
    batch = {"input_ids": np.pad(ids, ((0, 0), (0, extra)), constant_values=pad),
             "attention_mask": np.pad(np.ones_like(ids), ((0, 0), (0, extra))),
             "token_type_ids": np.pad(types, ((0, 0), (0, extra)))}
    outs.append(np.asarray(model.hidden_fn(model.params, batch))[:, :7])
    logits.append(np.asarray(model.apply_fn(model.params, batch)))
  for o, lg in zip(outs[1:], logits[1:]):
    # Padding changes the reduction lengths (summation order), not the values:
    # float32 rounding only; a leak through padding would be ~1e-2 of the scale.
    assert_close(o, outs[0])
    assert_close(lg, logits[0])


def test_padding_tokens_are_never_attended():
  """Changing the ids under padding must not change anything at real tokens."""
  model = load_pretrained(PARITY / "tiny_bert", HeadConfig(num_labels=2))
  batch = {"input_ids": np.array([[5, 6, 7, 0, 0]]), "attention_mask": np.array([[1, 1, 1, 0, 0]]),
           "token_type_ids": np.zeros((1, 5), np.int32)}
  other = dict(batch, input_ids=np.array([[5, 6, 7, 42, 17]]))
  a = np.asarray(model.hidden_fn(model.params, batch))[:, :3]
  b = np.asarray(model.hidden_fn(model.params, other))[:, :3]
  np.testing.assert_array_equal(a, b)


def _copy_checkpoint(tmp_path, name="tiny_bert"):
  dst = tmp_path / name
  shutil.copytree(PARITY / name, dst)
  return dst, load_file(str(dst / "model.safetensors"))


def test_loader_lists_every_problem_at_once(tmp_path):
  folder, tensors = _copy_checkpoint(tmp_path)
  del tensors["encoder.layer.1.attention.self.key.weight"]
  tensors["encoder.layer.0.mystery.weight"] = np.zeros((3,), np.float32)
  tensors["encoder.layer.0.intermediate.dense.bias"] = np.zeros((5,), np.float32)
  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointMismatchError) as err:
    load_pretrained(folder, HeadConfig(num_labels=2))
  msg = str(err.value)
  assert "3 problems" in msg
  assert "missing tensor 'encoder/layer_1/attention/key/kernel'" in msg
  assert "encoder.layer.0.mystery.weight" in msg
  assert "shape mismatch for 'encoder/layer_0/ffn/ffn_in/bias'" in msg


def test_loader_head_shape_mismatch_and_fresh_head(tmp_path):
  with pytest.raises(CheckpointMismatchError, match="shape mismatch for 'head/kernel'"):
    load_pretrained(PARITY / "tiny_bert_cls", HeadConfig(num_labels=2, pooling="cls"))
  model = load_pretrained(PARITY / "tiny_bert_cls", HeadConfig(num_labels=2, pooling="cls"),
                          load_head=False)
  assert set(model.newly_initialized) == {"head/bias", "head/kernel"}


def test_loader_missing_weights_and_unknown_family(tmp_path):
  folder, _ = _copy_checkpoint(tmp_path)
  (folder / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="no model.safetensors"):
    load_pretrained(folder, HeadConfig(num_labels=2))
  with pytest.raises(FileNotFoundError, match="neither an embedded model"):
    load_pretrained(tmp_path / "nope", HeadConfig(num_labels=2))
  cfg = json.loads((PARITY / "tiny_bert" / "config.json").read_text())
  cfg["model_type"] = "gpt2"
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="not a BERT-family encoder"):
    read_config(folder)


def test_loader_reads_sharded_safetensors(tmp_path):
  folder, tensors = _copy_checkpoint(tmp_path)
  (folder / "model.safetensors").unlink()
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  weight_map = {}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, str(folder / file))
    weight_map.update({k: file for k in keys})
  (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  ref = np.load(PARITY / "tiny_bert" / "reference.npz")
  model = load_pretrained(folder, HeadConfig(num_labels=2))
  hidden = np.asarray(model.hidden_fn(model.params, _batch(ref)))
  real = ref["attention_mask"].astype(bool)
  assert_close(hidden[real], ref["last_hidden_state"][real])


def test_lora_merge_equals_unmerged_forward():
  cfg = read_config(PARITY / "tiny_bert")
  spec = peft.PeftSpec(methods=("lora",), layers=(0, 1), targets=("query", "value", "ffn_out"),
                       rank=4, init="gaussian")
  adapters = peft.adapters_for(spec, cfg.num_layers)
  head = HeadConfig(num_labels=3, pooling="cls")
  model = load_pretrained(PARITY / "tiny_bert", head, adapters, seed=3)
  # make B clearly non-zero so the adapters matter
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v * 20.0 if "lora_b" in jax.tree_util.keystr(p) else v, model.params)
  plain = load_pretrained(PARITY / "tiny_bert", head, seed=3)
  ref = np.load(PARITY / "tiny_bert" / "reference.npz")
  merged = peft.merge_lora(params, adapters)
  with_adapters = np.asarray(model.apply_fn(params, _batch(ref)))
  merged_out = np.asarray(plain.apply_fn(merged, _batch(ref)))
  base_out = np.asarray(plain.apply_fn(plain.params, _batch(ref)))
  assert_close(merged_out, with_adapters)
  assert np.abs(with_adapters - base_out).max() > 1e-2  # the adapters did change the function
