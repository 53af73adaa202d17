"""GPT-2 / LLaMA layout decoders: HF parity, padding, causality, loader, LoRA, tangent model, eNTK.

Fixtures: tests/fixtures/decoders/ (tools/make_decoder_fixtures.py; transformers 5.23 reference).
"""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ntkft import linearize, ntk, peft
from ntkft.models import (
  AdapterSpec,
  CheckpointMismatchError,
  DecoderConfig,
  HeadConfig,
  flatten,
  init_model,
  load_pretrained,
  read_config,
)
from tests.conftest import FIXTURES
from tests.test_util import assert_close

DECODERS = FIXTURES / "decoders"
FAMILIES = ("gpt2", "llama")


def _ref(family):
  return np.load(DECODERS / f"tiny_{family}" / "reference.npz")


def _batch(ref, prefix=""):
  return {"input_ids": jnp.asarray(ref[prefix + "input_ids"]),
          "attention_mask": jnp.asarray(ref[prefix + "attention_mask"])}


def _load(family, **kw):
  return load_pretrained(DECODERS / f"tiny_{family}", HeadConfig(num_labels=3, pooling="last"),
                         **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_transformers_reference(family):
  ref = _ref(family)
  model = _load(family)
  assert model.newly_initialized == ("head/bias",)  # HF's score layer has no bias
  for prefix in ("", "left_"):
    batch = _batch(ref, prefix)
    real = ref[prefix + "attention_mask"].astype(bool)
    hidden = np.asarray(model.hidden_fn(model.params, batch))
    assert_close(hidden[real], ref[prefix + "last_hidden_state"][real])
    logits = np.asarray(model.apply_fn(model.params, batch))
    assert_close(logits, ref[prefix + "logits"])
  real = ref["attention_mask"].astype(bool)
  lm = np.asarray(model.lm_logits_fn(model.params, _batch(ref)))
  assert lm.shape == (4, 16, 99)
  assert_close(lm[real], ref["lm_logits"][real])


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_give_the_same_logits(family):
  ref = _ref(family)
  model = _load(family)
  right = model.apply_fn(model.params, _batch(ref))
  left = model.apply_fn(model.params, _batch(ref, "left_"))
  assert right.shape == (4, 3)
  assert_close(left, right)
  # The rows differ, so equal logits are not an accident of a constant output.
  assert np.abs(np.asarray(right)[0] - np.asarray(right)[1]).max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_extra_padding_does_not_change_real_tokens(family):
  ref = _ref(family)
  model = _load(family)
  batch = _batch(ref)
  longer = {k: jnp.pad(v, ((0, 0), (0, 7))) for k, v in batch.items()}   # 7 more pad (id 0)
  real = ref["attention_mask"].astype(bool)
  h = np.asarray(model.hidden_fn(model.params, batch))
  h_long = np.asarray(model.hidden_fn(model.params, longer))[:, :16]
  assert_close(h_long[real], h[real])
  assert_close(model.apply_fn(model.params, longer), model.apply_fn(model.params, batch))
  # Changing the ids under padding changes nothing either.
  noisy = dict(batch, input_ids=jnp.where(batch["attention_mask"] == 1, batch["input_ids"], 42))
  assert_close(np.asarray(model.hidden_fn(model.params, noisy))[real], h[real], rtol=1e-6,
               atol_scale=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_future_tokens_never_change_past_positions(family):
  ref = _ref(family)
  model = _load(family)
  batch = _batch(ref)
  row, t = 2, 9  # row 2 has all 16 tokens real
  changed = dict(batch, input_ids=batch["input_ids"].at[row, t].set(
      (batch["input_ids"][row, t] + 17) % 99))
  h0 = np.asarray(model.lm_logits_fn(model.params, batch))[row]
  h1 = np.asarray(model.lm_logits_fn(model.params, changed))[row]
  np.testing.assert_array_equal(h1[:t], h0[:t])
  assert np.abs(h1[t:] - h0[t:]).min(axis=-1).max() > 0  # every later position moves
  assert np.abs(h1[t:] - h0[t:]).max(axis=-1).min() > 1e-4


def test_param_names_and_shapes():
  g = flatten(_load("gpt2").params)
  assert g["decoder/layer_1/attention/c_attn/kernel"].shape == (32, 96)
  assert g["decoder/layer_0/ffn/ffn_in/kernel"].shape == (32, 37)
  assert g["embeddings/position/embedding"].shape == (32, 32)
  assert g["final_norm/scale"].shape == (32,)
  assert g["head/kernel"].shape == (32, 3)
  l = flatten(_load("llama").params)
  assert l["decoder/layer_0/attention/query/kernel"].shape == (32, 32)
  assert l["decoder/layer_0/attention/key/kernel"].shape == (32, 16)  # 2 k/v heads of 8
  assert l["decoder/layer_1/ffn/gate/kernel"].shape == (32, 37)
  assert l["decoder/layer_1/ffn/down/kernel"].shape == (37, 32)
  assert l["lm_head/kernel"].shape == (32, 99)
  assert not any(n.startswith("decoder/") and n.endswith("/bias") for n in l)  # no biases
  cfg = read_config(DECODERS / "tiny_llama")
  assert (cfg.family, cfg.kv_heads, cfg.dim_per_head, cfg.rope_theta) == ("llama", 2, 8, 1e4)


@pytest.mark.parametrize("family,drop,bogus,reshape", [
    ("gpt2", "transformer.h.1.mlp.c_fc.bias", "transformer.h.0.attn.c_q.weight",
     "transformer.ln_f.weight"),
    ("llama", "model.layers.1.self_attn.v_proj.weight", "model.layers.0.mlp.w1.weight",
     "model.norm.weight"),
])
def test_loader_lists_every_problem_at_once(tmp_path, family, drop, bogus, reshape):
  folder = tmp_path / family
  shutil.copytree(DECODERS / f"tiny_{family}", folder)
  tensors = load_file(str(folder / "model.safetensors"))
  del tensors[drop]
  tensors[bogus] = np.zeros((2, 2), np.float32)
  tensors[reshape] = np.zeros((31,), np.float32)
  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointMismatchError) as err:
    load_pretrained(folder, HeadConfig(3, "last"))
  text = str(err.value)
  assert "3 problems" in text and bogus in text and "(31,)" in text and "missing tensor" in text


def test_loader_rejects_unsupported_configs(tmp_path):
  folder = tmp_path / "llama"
  shutil.copytree(DECODERS / "tiny_llama", folder)
  cfg = json.loads((folder / "config.json").read_text())
  cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
    read_config(folder)
  with pytest.raises(ValueError, match="decoder pooling must be one of"):
    load_pretrained(DECODERS / "tiny_gpt2", HeadConfig(3, "cls"))


def test_peft_targets_are_family_aware():
  spec = peft.PeftSpec(family="gpt2", targets=("c_attn", "ffn_out"), layers=(1,), rank=2)
  assert sorted(peft.adapters_for(spec, 2)) == ["decoder/layer_1/attention/c_attn",
                                                 "decoder/layer_1/ffn/ffn_out"]
  spec = peft.PeftSpec(family="llama", targets=("value", "gate"), layers=(0,), rank=2)
  assert sorted(peft.adapters_for(spec, 2)) == ["decoder/layer_0/attention/value",
                                                 "decoder/layer_0/ffn/gate"]
  with pytest.raises(ValueError, match=r"unknown peft target\(s\) \['query'\] for model family "
                     r"'gpt2'; choose from \('c_attn', 'attn_out', 'ffn_in', 'ffn_out'\)"):
    peft.PeftSpec(family="gpt2", targets=("query",))
  with pytest.raises(ValueError, match="unknown model family 'opt'"):
    peft.PeftSpec(family="opt")
  assert peft.PeftSpec.from_config({"family": "gpt2"}).targets == ("c_attn",)
  # A spec built for another family is caught by the loader, not silently dropped.
  bert_adapters = peft.adapters_for(peft.PeftSpec(rank=2), 2)
  with pytest.raises(ValueError, match="peft.family='gpt2'"):
    _load("gpt2", adapters=bert_adapters)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trainable_names_and_merge(family):
  spec = peft.PeftSpec(methods=("lora", "bitfit"), family=family, targets=peft.targets_for(family),
                       rank=2, init="gaussian")
  model = _load(family, adapters=peft.adapters_for(spec, 2))
  names = peft.trainable_names(spec, model.params, 2)
  assert all(n.rsplit("/", 1)[1] in ("lora_a", "lora_b", "bias", "kernel") for n in names)
  assert sum(n.endswith("lora_b") for n in names) == 2 * len(peft.targets_for(family))
  has_layer_bias = any(n.startswith("decoder/") and n.endswith("/bias") for n in names)
  assert has_layer_bias == (family == "gpt2")  # LLaMA layers have no biases
  ref = _ref(family)
  batch = _batch(ref)
  merged = peft.merge_lora(model.params, model.adapters)
  plain = _load(family)
  out = model.apply_fn(model.params, batch)
  assert np.abs(np.asarray(out) - np.asarray(plain.apply_fn(plain.params, batch))).max() > 1e-3
  assert_close(plain.apply_fn(merged, batch), out)
  assert_close(plain.lm_logits_fn(merged, batch), model.lm_logits_fn(model.params, batch))


def _f64_subset(family):
  spec = peft.PeftSpec(family=family, targets=peft.targets_for(family)[:2], rank=2,
                       init="gaussian", head=True)
  model = _load(family, adapters=peft.adapters_for(spec, 2))
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), model.params)
  trainable, frozen = peft.partition(params, peft.trainable_names(spec, params, 2))

  @jax.jit
  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen


@pytest.mark.parametrize("family", FAMILIES)
def test_tangent_model_value_and_jvp_vs_finite_differences(family):
  with jax.enable_x64(True):
    apply, p0, frozen = _f64_subset(family)
    x = _batch(_ref(family))
    f_lin = jax.jit(linearize.tangent_apply_fn(apply))
    np.testing.assert_allclose(np.asarray(f_lin(p0, p0, x, frozen)),
                               np.asarray(apply(p0, x, frozen)), rtol=0, atol=1e-12)
    keys = jax.random.split(jax.random.key(0), len(jax.tree.leaves(p0)))
    direction = jax.tree.unflatten(jax.tree.structure(p0), [
        jax.random.normal(k, v.shape, jnp.float64) for k, v in zip(keys, jax.tree.leaves(p0))])
    eps = 1e-6  # central differences: O(eps²) truncation, O(1e-16/eps) rounding
    shift = lambda s: jax.tree.map(lambda a, d: a + s * d, p0, direction)
    fd = (apply(shift(eps), x, frozen) - apply(shift(-eps), x, frozen)) / (2 * eps)
    lin = f_lin(p0, shift(1.0), x, frozen) - apply(p0, x, frozen)
    assert np.abs(np.asarray(fd)).max() > 1e-2
    np.testing.assert_allclose(np.asarray(lin), np.asarray(fd), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_empirical_ntk_equals_jacobian_reference(family):
  with jax.enable_x64(True):
    apply, p0, frozen = _f64_subset(family)
    x = jax.tree.map(lambda a: a[:3], _batch(_ref(family), "left_"))
    kernel = ntk.empirical_ntk_fn(apply)(x, None, p0, frozen)
    jac = jax.jacobian(apply)(p0, x, frozen)  # leaves (N, C, *shape)
    j = jnp.concatenate([l.reshape(3, 3, -1) for l in jax.tree.leaves(jac)], axis=-1)
    want = jnp.einsum("icp,jcp->ij", j, j) / 3.0  # normalized trace over the C outputs
    assert kernel.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(want), rtol=1e-10, atol=1e-12)


def test_init_model_decoder_shapes():
  cfg = DecoderConfig(family="llama", vocab_size=50, hidden_size=16, num_layers=1, num_heads=4,
                      num_kv_heads=1, intermediate_size=24, max_position_embeddings=32,
                      tie_word_embeddings=True)
  model = init_model(cfg, HeadConfig(num_labels=2, pooling="mean"),
                     {"decoder/layer_0/attention/key": AdapterSpec(rank=2)})
  batch = {"input_ids": jnp.ones((3, 5), jnp.int32), "attention_mask": jnp.ones((3, 5), jnp.int32)}
  assert model.apply_fn(model.params, batch).shape == (3, 2)
  assert model.lm_logits_fn(model.params, batch).shape == (3, 5, 50)
  assert "lm_head" not in model.params  # tied
  assert flatten(model.params)["decoder/layer_0/attention/key/lora_a"].shape == (16, 2)
  with pytest.raises(ValueError, match="not divisible by num_kv_heads"):
    DecoderConfig(family="llama", vocab_size=5, hidden_size=16, num_layers=1, num_heads=4,
                  num_kv_heads=3, intermediate_size=8, max_position_embeddings=8)
