"""PEFT LoRA folders in and out, against adapters and logits made by Hugging Face PEFT.

Fixtures: tests/fixtures/peft (tools/make_peft_fixtures.py, peft 0.21.2 on the tiny
random checkpoints of tests/fixtures/parity): PEFT's adapter_model.safetensors and
the logits of ``PeftModel.from_pretrained(base, folder)`` on four padded inputs.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file

from configs import glue_common
from ntkft import export_peft, peft
from ntkft.models import HeadConfig, flatten, load_pretrained, peft_format
from ntkft.train import checkpoint
from ntkft.train.state import TrainState
from tests.conftest import FIXTURES

CASES = {  # adapter folder -> (base checkpoint, num_labels)
    "tiny_bert_cls_lora": ("tiny_bert_cls", 3),
    "tiny_roberta_cls_lora": ("tiny_roberta_cls", 2),
}


def _load(name, pooling="cls"):
  base, num_labels = CASES[name]
  return load_pretrained(FIXTURES / "parity" / base, HeadConfig(num_labels, pooling),
                         adapters_from=FIXTURES / "peft" / name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_peft_made_adapter_gives_peft_logits(name):
  model = _load(name)
  ref = np.load(FIXTURES / "peft" / name / "reference.npz")
  x = {k: jnp.asarray(ref[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
  logits = np.asarray(model.apply_fn(model.params, x))
  want = ref["logits"]
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  # Without the adapter the logits differ: the LoRA weights and heads were used.
  base = load_pretrained(FIXTURES / "parity" / CASES[name][0], HeadConfig(CASES[name][1], "cls"))
  assert np.abs(np.asarray(base.apply_fn(base.params, x)) - want).max() > 1e-2


def test_imported_adapters_follow_the_config_and_the_tensors():
  model = _load("tiny_roberta_cls_lora")
  # target_modules key, intermediate.dense, output.dense (= attn_out and ffn_out), 2 layers
  assert sorted(model.adapters) == sorted(
      f"encoder/layer_{i}/{m}" for i in range(2)
      for m in ("attention/key", "attention/attn_out", "ffn/ffn_in", "ffn/ffn_out"))
  assert {(a.rank, a.alpha) for a in model.adapters.values()} == {(2, 16.0)}
  assert not any("lora" in n or n.startswith(("head/", "pooler/"))
                 for n in model.newly_initialized)


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_of_an_imported_adapter_reproduces_peft_tensors(name):
  model = _load(name)
  params = {k: np.asarray(v) for k, v in flatten(model.params).items()}
  config, tensors, note = peft_format.to_peft(params, model.adapters, model.family, "cls")
  want = load_file(str(FIXTURES / "peft" / name / peft_format.ADAPTER_WEIGHTS))
  assert note == "" and sorted(tensors) == sorted(want)
  for key in want:
    np.testing.assert_array_equal(tensors[key], want[key], err_msg=key)
  peft_config = json.loads((FIXTURES / "peft" / name / peft_format.ADAPTER_CONFIG).read_text())
  assert (config["r"], config["lora_alpha"]) == (peft_config["r"], peft_config["lora_alpha"])


def _run_workdir(tmp_path, pooling):
  """An ntkft.run-style workdir (config.json + one checkpoint) on the tiny BERT."""
  config = glue_common.get_config("task=mnli")
  config.model.name = str(FIXTURES / "parity" / "tiny_bert_cls")
  config.model.pooling = pooling
  config.peft.rank, config.peft.alpha = 4, 8.0
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  spec = peft.PeftSpec.from_config(config.peft)
  model = load_pretrained(config.model.name, HeadConfig(3, pooling),
                          adapters=peft.adapters_for(spec, 2), seed=config.seed)
  trainable, frozen = peft.partition(model.params, peft.trainable_names(spec, model.params, 2))
  keys = iter(jax.random.split(jax.random.PRNGKey(7), 64))
  trained = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(next(keys), v.shape), trainable)
  tx = optax.adam(1e-3)
  state = TrainState(step=jnp.asarray(5, jnp.int32), trainable=trained, trainable0=trainable,
                     frozen=frozen, opt_state=tx.init(trained), rng=jax.random.PRNGKey(0))
  with checkpoint.manager(tmp_path, 1, 1) as mngr:
    checkpoint.save(mngr, 5, state, force=True)
    mngr.wait_until_finished()
  return config, peft.combine(trained, frozen)


def test_export_then_import_gives_the_trained_parameters(tmp_path):
  config, params = _run_workdir(tmp_path, "cls")
  out = tmp_path / "peft"
  result = export_peft.export(tmp_path, out)
  assert result["step"] == 5 and result["note"] == ""
  saved = json.loads((out / "adapter_config.json").read_text())
  assert saved["peft_type"] == "LORA" and saved["task_type"] == "SEQ_CLS"
  assert saved["r"] == 4 and saved["lora_alpha"] == 8.0
  assert saved["modules_to_save"] == ["classifier", "pooler"]
  model = load_pretrained(config.model.name, HeadConfig(3, "cls"), adapters_from=out)
  got, want = flatten(model.params), flatten(params)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


def test_mean_pooling_exports_lora_only_and_says_so(tmp_path):
  _run_workdir(tmp_path, "mean")
  result = export_peft.export(tmp_path, tmp_path / "peft")
  assert "only the LoRA weights" in result["note"]
  tensors = load_file(str(tmp_path / "peft" / peft_format.ADAPTER_WEIGHTS))
  assert tensors and all(".lora_" in k for k in tensors)
  # SEQ_CLS would make PeftModel.from_pretrained demand the classifier's tensors.
  saved = json.loads((tmp_path / "peft" / peft_format.ADAPTER_CONFIG).read_text())
  assert saved["task_type"] is None and saved["modules_to_save"] is None


def test_unsupported_adapters_raise(tmp_path):
  folder = tmp_path / "dora"
  config = json.loads((FIXTURES / "peft" / "tiny_bert_cls_lora" / "adapter_config.json")
                      .read_text())
  tensors = load_file(str(FIXTURES / "peft" / "tiny_bert_cls_lora" / "adapter_model.safetensors"))
  peft_format.write_adapter(folder, {**config, "use_dora": True}, tensors)
  with pytest.raises(ValueError, match="use_dora=True is not supported"):
    _load_from(folder)
  peft_format.write_adapter(folder, config, {**tensors, "base_model.model.bert.encoder.layer.0."
                                             "attention.self.nope.lora_A.weight": tensors[
                                                 next(iter(tensors))]})
  with pytest.raises(ValueError, match="targets no module"):
    _load_from(folder)
  with pytest.raises(ValueError, match="adapters or adapters_from, not both"):
    load_pretrained(FIXTURES / "parity" / "tiny_bert_cls", HeadConfig(3, "cls"),
                    adapters=peft.adapters_for(peft.PeftSpec(), 2),
                    adapters_from=FIXTURES / "peft" / "tiny_bert_cls_lora")
  with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
    _load_from(tmp_path)


def _load_from(folder):
  return load_pretrained(FIXTURES / "parity" / "tiny_bert_cls", HeadConfig(3, "cls"),
                         adapters_from=folder)
