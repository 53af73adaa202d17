"""Parameter subsets on the tiny BERT fixture (2 layers, H=32, FFN 37, vocab 99).

(LoRA merging alone is checked in tests/models/bert_test.py; here it is checked
together with BitFit biases that moved.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import peft
from ntkft.models import HeadConfig, flatten, load_pretrained, unflatten
from tests.conftest import FIXTURES
from tests.test_util import assert_close

TINY_BERT = FIXTURES / "parity" / "tiny_bert"
H, FFN, LAYERS = 32, 37, 2
BIASES = ("attention/attn_out/bias", "attention/key/bias", "attention/query/bias",
          "attention/value/bias", "attention_norm/bias", "ffn/ffn_in/bias", "ffn/ffn_out/bias",
          "ffn_norm/bias")
LAYER_LEAVES = ("attention/attn_out/bias", "attention/attn_out/kernel", "attention/key/bias",
                "attention/key/kernel", "attention/query/bias", "attention/query/kernel",
                "attention/value/bias", "attention/value/kernel", "attention_norm/bias",
                "attention_norm/scale", "ffn/ffn_in/bias", "ffn/ffn_in/kernel",
                "ffn/ffn_out/bias", "ffn/ffn_out/kernel", "ffn_norm/bias", "ffn_norm/scale")


def _model(spec, pooling="mean"):
  return load_pretrained(TINY_BERT, HeadConfig(num_labels=2, pooling=pooling),
                         adapters=peft.adapters_for(spec, LAYERS))


def _names(spec, pooling="mean"):
  return peft.trainable_names(spec, _model(spec, pooling).params, LAYERS)


def _in_layer(i, leaves):
  return [f"encoder/layer_{i}/{leaf}" for leaf in leaves]


HEAD = ["head/bias", "head/kernel"]
POOLER = ["pooler/dense/bias", "pooler/dense/kernel"]

CASES = {
    "lora_default_and_head": (
        peft.PeftSpec(), "mean",
        [f"encoder/layer_{i}/attention/{t}/lora_{ab}" for i in (0, 1) for t in ("query", "value")
         for ab in "ab"] + HEAD),
    "bitfit_layer1_no_head": (
        peft.PeftSpec(methods=("bitfit",), layers=(1,), head=False), "mean",
        _in_layer(1, BIASES)),
    "layers_0_and_head": (
        peft.PeftSpec(methods=("layers",), layers=(0,)), "mean", _in_layer(0, LAYER_LEAVES) + HEAD),
    "lora_ffn_out_plus_bitfit_layer1_cls_head": (
        peft.PeftSpec(methods=("lora", "bitfit"), layers=(1,), targets=("ffn_out",), rank=2),
        "cls",
        _in_layer(1, BIASES) + _in_layer(1, ("ffn/ffn_out/lora_a", "ffn/ffn_out/lora_b"))
        + HEAD + POOLER),
    "lora_plus_layers_layer0_all_targets": (
        peft.PeftSpec(methods=("lora", "layers"), layers=(0,), targets=peft.subsets.PROJECTIONS,
                      rank=1, head=False), "mean",
        _in_layer(0, LAYER_LEAVES) + [
            f"encoder/layer_0/{g}/{t}/lora_{ab}"
            for g, ts in (("attention", ("query", "key", "value", "attn_out")),
                          ("ffn", ("ffn_in", "ffn_out"))) for t in ts for ab in "ab"]),
    "head_only": (peft.PeftSpec(methods=()), "mean", HEAD),
    "duplicated_layers": (
        peft.PeftSpec(methods=("bitfit",), layers=(1, 1), head=False), "mean",
        _in_layer(1, BIASES)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trainable_names_are_exactly_the_expected_ones(case):
  spec, pooling, expected = CASES[case]
  names = _names(spec, pooling)
  assert names == sorted(expected)
  assert len(set(names)) == len(names)


def test_adapters_sit_on_the_named_modules():
  spec = peft.PeftSpec(layers=(1,), targets=("query", "ffn_in"), rank=3, alpha=6.0)
  adapters = peft.adapters_for(spec, LAYERS)
  assert sorted(adapters) == ["encoder/layer_1/attention/query", "encoder/layer_1/ffn/ffn_in"]
  assert all(a.rank == 3 and a.alpha == 6.0 for a in adapters.values())
  assert peft.adapters_for(peft.PeftSpec(methods=("bitfit",)), LAYERS) == {}
  params = flatten(_model(spec).params)
  assert params["encoder/layer_1/ffn/ffn_in/lora_a"].shape == (H, 3)
  assert params["encoder/layer_1/ffn/ffn_in/lora_b"].shape == (3, FFN)
  assert not np.any(np.asarray(params["encoder/layer_1/ffn/ffn_in/lora_b"]))  # zero_b init


def test_partition_combine_round_trip_and_counts():
  spec = peft.PeftSpec(methods=("lora", "bitfit"), layers=(0,), rank=2)
  params = _model(spec).params
  names = peft.trainable_names(spec, params, LAYERS)
  trainable, frozen = peft.partition(params, names)
  flat_t, flat_f, flat = flatten(trainable), flatten(frozen), flatten(params)
  assert sorted(flat_t) == names
  assert not set(flat_t) & set(flat_f) and set(flat_t) | set(flat_f) == set(flat)
  back = flatten(peft.combine(trainable, frozen))
  assert set(back) == set(flat)
  for name, value in flat.items():
    assert back[name] is value  # same arrays, nothing copied or changed
  # LoRA on query/value of layer 0: 2·(H·r + r·H); BitFit of layer 0; head H·2 + 2.
  lora = 2 * (H * 2 + 2 * H)
  bitfit = 4 * H + H + FFN + H + H
  head = H * 2 + 2
  assert peft.count(trainable) == lora + bitfit + head
  embeddings = 99 * H + 64 * H + 2 * H + 2 * H
  layer = 4 * (H * H + H) + 2 * 2 * H + (H * FFN + FFN) + (FFN * H + H)
  assert peft.count(params) == embeddings + LAYERS * layer + head + lora
  assert peft.count(trainable) + peft.count(frozen) == peft.count(params)


def test_partition_rejects_unknown_names():
  params = _model(peft.PeftSpec()).params
  with pytest.raises(ValueError, match=r"unknown parameter name\(s\): \['encoder/layer_9/x'\]"):
    peft.partition(params, ["head/kernel", "encoder/layer_9/x"])


def test_describe():
  spec = peft.PeftSpec(layers=(1,), targets=("query",), rank=2)
  params = _model(spec).params
  trainable, frozen = peft.partition(params, peft.trainable_names(spec, params, LAYERS))
  total = peft.count(params)
  assert peft.describe(trainable, frozen).splitlines() == [
      f"trainable 194 / total {total:,} ({100 * 194 / total:.3f}%)",
      "  encoder/layer_1/attention/query: 128",
      "  head: 66",
  ]


@pytest.mark.parametrize("kwargs,message", [
    (dict(methods=("prefix",)), r"unknown peft method\(s\) \['prefix'\]; choose from "
                                r"\('lora', 'bitfit', 'layers'\)"),
    (dict(targets=("query", "qkv")), r"unknown peft target\(s\) \['qkv'\]; choose from "),
    (dict(rank=0), r"LoRA rank must be a positive int, got 0"),
    (dict(rank=-2), r"LoRA rank must be a positive int, got -2"),
    (dict(init="kaiming"), r"unknown LoRA init 'kaiming'"),
    (dict(methods=(), head=False), r"peft selects no parameters"),
])
def test_bad_specs_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    peft.PeftSpec(**kwargs)


@pytest.mark.parametrize("layers", [(2,), (0, 5), (-1,)])
def test_layer_index_out_of_range(layers):
  spec = peft.PeftSpec(methods=("bitfit",), layers=layers)
  bad = [i for i in layers if not 0 <= i < LAYERS]
  message = (rf"peft.layers {bad} out of range: the model has 2 layers "
             r"\(valid indices 0..1\)").replace("[", r"\[").replace("]", r"\]")
  with pytest.raises(ValueError, match=message):
    peft.adapters_for(peft.PeftSpec(layers=layers), LAYERS)
  with pytest.raises(ValueError, match=message):
    peft.trainable_names(spec, _model(peft.PeftSpec(methods=("bitfit",))).params, LAYERS)


@pytest.mark.parametrize("value,expected", [
    ("all", None), (None, None), ((1, 0), (1, 0)), ([1], (1,)),
    ("(7,)", (7,)), ("[0, 1]", (0, 1)), ("3", (3,)), ("0,1", (0, 1)),
])
def test_from_config_layers(value, expected):
  spec = peft.PeftSpec.from_config({"methods": "bitfit", "layers": value, "rank": 4})
  assert spec.layers == expected and spec.methods == ("bitfit",) and spec.rank == 4


@pytest.mark.parametrize("value", ["last", "(1, x)", "()"])
def test_from_config_rejects_bad_layers(value):
  with pytest.raises(ValueError, match="peft.layers must be a tuple of ints or 'all'"):
    peft.PeftSpec.from_config({"layers": value})


def test_merge_lora_with_moved_bitfit_biases_matches_the_adapter_model():
  spec = peft.PeftSpec(methods=("lora", "bitfit"), layers=(0, 1), targets=("value", "ffn_in"),
                       rank=2, alpha=8.0, init="gaussian")
  model = _model(spec)
  trainable, frozen = peft.partition(model.params,
                                     peft.trainable_names(spec, model.params, LAYERS))
  leaves, treedef = jax.tree.flatten(trainable)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  moved = treedef.unflatten([l + 0.05 * jax.random.normal(k, l.shape)
                             for k, l in zip(keys, leaves)])  # "after training"
  params = peft.combine(moved, frozen)
  merged = peft.merge_lora(params, model.adapters)
  plain = load_pretrained(TINY_BERT, HeadConfig(num_labels=2))  # no adapters
  assert sorted(flatten(merged)) == sorted(flatten(plain.params))
  rng = np.random.default_rng(0)
  batch = {"input_ids": jnp.asarray(rng.integers(1, 99, size=(3, 6)), jnp.int32),
           "attention_mask": jnp.asarray([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]),
           "token_type_ids": jnp.zeros((3, 6), jnp.int32)}
  want = model.apply_fn(params, batch)
  got = plain.apply_fn(merged, batch)
  assert_close(got, want)
  # Not vacuous: dropping the adapters instead of merging them changes the output.
  dropped = unflatten({k: v for k, v in flatten(params).items() if "/lora_" not in k})
  assert np.abs(np.asarray(plain.apply_fn(dropped, batch) - want)).max() > 1e-3
