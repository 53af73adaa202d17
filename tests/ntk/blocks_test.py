"""Tests for per-block kernels (ntkft.ntk.per_block_ntk_fn) and block naming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft import ntk
from tests.ntk import tiny_models

IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def ntkft_like_mlp(seed=0):
  """The tiny MLP with ntkft-style paths: encoder/layer_i/ffn/ffn_in, head."""
  raw = tiny_models.init_mlp(seed)
  params = {
      "encoder": {
          "layer_0": {"ffn": {"ffn_in": raw["layer_0"]}},
          "layer_1": {"ffn": {"ffn_out": raw["layer_1"]}},
      },
      "head": raw["layer_2"],
  }

  def apply_fn(p, x):
    enc = p["encoder"]
    return tiny_models.mlp_apply(
        {"layer_0": enc["layer_0"]["ffn"]["ffn_in"],
         "layer_1": enc["layer_1"]["ffn"]["ffn_out"],
         "layer_2": p["head"]}, x)

  return apply_fn, params


def direct_ntk(apply_fn, x1, x2, params):
  """(N1, N2) NTK, mean over outputs, from jax.jacobian of the batched f."""
  flat, unravel = ravel_pytree(params)
  j1 = jax.jacobian(lambda w: apply_fn(unravel(w), x1))(flat)
  j2 = jax.jacobian(lambda w: apply_fn(unravel(w), x2))(flat)
  return np.einsum("ncp,mcp->nm", j1, j2) / j1.shape[1]


# ------------------------------------------------------------------ naming


def test_block_of_fn_on_ntkft_paths():
  layer = ntk.block_of_fn("layer")
  proj = ntk.block_of_fn("layer_projection")
  leaf = ntk.block_of_fn("leaf")
  cases = {
      # path: (layer, layer_projection)
      "encoder/layer_4/attention/query/lora_b": ("layer_4", "layer_4/query"),
      "encoder/layer_4/attention/key/kernel": ("layer_4", "layer_4/key"),
      "encoder/layer_11/attention/attn_out/bias": ("layer_11",
                                                   "layer_11/attn_out"),
      "encoder/layer_4/ffn/ffn_in/kernel": ("layer_4", "layer_4/ffn_in"),
      "encoder/layer_4/ffn/ffn_out/lora_a": ("layer_4", "layer_4/ffn_out"),
      "head/kernel": ("head", "head"),
      "pooler/dense/bias": ("pooler", "pooler/dense"),
      "embeddings/word_embeddings/embedding": (
          "embeddings", "embeddings/word_embeddings"),
  }
  for path, (want_layer, want_proj) in cases.items():
    assert layer(path) == want_layer, path
    assert proj(path) == want_proj, path
    assert leaf(path) == path
  with pytest.raises(ValueError, match="unknown mode"):
    ntk.block_of_fn("layers")


def test_block_names_maps_every_leaf():
  _, params = ntkft_like_mlp()
  names = ntk.block_names(params, by="layer")
  assert names == {
      "encoder/layer_0/ffn/ffn_in/bias": "layer_0",
      "encoder/layer_0/ffn/ffn_in/kernel": "layer_0",
      "encoder/layer_1/ffn/ffn_out/bias": "layer_1",
      "encoder/layer_1/ffn/ffn_out/kernel": "layer_1",
      "head/bias": "head",
      "head/kernel": "head",
  }
  assert list(names) == ntk.leaf_paths(params)
  assert set(ntk.block_names(params, by="layer_projection").values()) == {
      "layer_0/ffn_in", "layer_1/ffn_out", "head"}
  with pytest.raises(ValueError, match="unknown mode"):
    ntk.block_names(params, by="module")
  with pytest.raises(ValueError, match="no leaves"):
    ntk.block_names({}, by="layer")


def test_block_param_counts_sum_leaf_sizes_per_block():
  _, params = ntkft_like_mlp()
  sizes = {p: int(np.size(a)) for p, a in zip(ntk.leaf_paths(params), jax.tree.leaves(params))}
  counts = ntk.block_param_counts(params, "layer")
  assert list(counts) == ["layer_0", "layer_1", "head"]
  for block in counts:
    assert counts[block] == sum(n for p, n in sizes.items()
                                if ntk.block_names(params, "layer")[p] == block)
  assert sum(counts.values()) == sum(sizes.values())


# ----------------------------------------------------------------- kernels


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("by", ["layer", "leaf"])
def test_blocks_sum_to_full_and_match_direct(x64, implementation, by):
  apply_fn, params = ntkft_like_mlp()
  x1 = tiny_models.make_inputs("mlp", 5, 1)
  x2 = tiny_models.make_inputs("mlp", 3, 2)
  for x2_arg in (None, x2):
    xb = x1 if x2_arg is None else x2
    kb = ntk.per_block_ntk_fn(apply_fn, by, implementation=implementation)(
        x1, x2_arg, params)
    full = ntk.empirical_ntk_fn(apply_fn, implementation=implementation)(
        x1, x2_arg, params)
    assert list(kb) == list(dict.fromkeys(
        ntk.block_names(params, by).values()))
    np.testing.assert_allclose(sum(kb.values()), full, rtol=1e-12)
    # Each block is the NTK of its own parameters (others held fixed).
    if by == "layer":
      head_ref = direct_ntk(lambda h, x: apply_fn({**params, "head": h}, x),
                            x1, xb, params["head"])
      np.testing.assert_allclose(kb["head"], head_ref, rtol=1e-10)
      assert all(np.abs(k).max() > 0 for k in kb.values())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_blocks_full_layout_and_chunking(x64, implementation):
  """trace_axes=(): per-block (N1, N2, O, O) sum to the full kernel, chunked."""
  apply_fn, params = ntkft_like_mlp(1)
  x1 = tiny_models.make_inputs("mlp", 5, 3)
  x2 = tiny_models.make_inputs("mlp", 4, 4)
  full = ntk.empirical_ntk_fn(apply_fn, trace_axes=(),
                              implementation=implementation)(x1, x2, params)
  seen = []
  budget = 2 * 3 * 70 * 8       # float64; < one example's full Jacobian
  kb = ntk.per_block_ntk_fn(apply_fn, "layer_projection", trace_axes=(),
                            implementation=implementation, batch_size=2,
                            memory_budget_bytes=budget,
                            on_chunk=seen.append)(x1, x2, params)
  assert set(kb) == {"layer_0/ffn_in", "layer_1/ffn_out", "head"}
  assert all(k.shape == (5, 4, 3, 3) for k in kb.values())
  np.testing.assert_allclose(sum(kb.values()), full, rtol=1e-11,
                             atol=1e-13 * np.abs(full).max())
  assert seen[0]["num_groups"] >= 2
  assert all(b["jacobian_bytes"] <= budget for b in seen)


def test_lora_a_block_is_exactly_zero_at_b_zero(x64):
  """f(x) = tanh(x (W + A B)) v: at B = 0, df/dA = x^T (df/dh) B^T = 0."""
  rng = np.random.RandomState(0)
  d, r, o = 4, 2, 3
  frozen = {"w": rng.normal(size=(d, d)), "v": rng.normal(size=(d, o))}
  a = rng.normal(size=(d, r))

  def apply_fn(trainable, x, frozen):
    lora = trainable["query"]
    w = frozen["w"] + lora["lora_a"] @ lora["lora_b"]
    return jnp.tanh(x @ w) @ frozen["v"]

  x = rng.normal(size=(6, d))
  for implementation in IMPLEMENTATIONS:
    fn = ntk.per_block_ntk_fn(apply_fn, "leaf", implementation=implementation)
    at_zero = fn(x, None, {"query": {"lora_a": a,
                                     "lora_b": np.zeros((r, d))}}, frozen)
    assert set(at_zero) == {"query/lora_a", "query/lora_b"}
    np.testing.assert_array_equal(at_zero["query/lora_a"], 0.0)
    assert np.abs(at_zero["query/lora_b"]).min() > 0
    moved = fn(x, None, {"query": {"lora_a": a,
                                   "lora_b": rng.normal(size=(r, d))}},
               frozen)
    assert np.abs(moved["query/lora_a"]).max() > 1e-3   # the test can fail


def test_block_of_errors():
  apply_fn, params = ntkft_like_mlp()
  x = tiny_models.make_inputs("mlp", 3, 0)
  names = ntk.block_names(params, by="layer")
  missing = dict(list(names.items())[1:])
  with pytest.raises(ValueError, match="missing paths"):
    ntk.per_block_ntk_fn(apply_fn, missing)(x, None, params)
  extra = dict(names, **{"head/scale": "head"})
  with pytest.raises(ValueError, match="unknown paths.*head/scale"):
    ntk.per_block_ntk_fn(apply_fn, extra)(x, None, params)
  with pytest.raises(TypeError, match="non-empty strings"):
    ntk.per_block_ntk_fn(apply_fn, lambda path: len(path))(x, None, params)
  with pytest.raises(ValueError, match="unknown mode"):
    ntk.per_block_ntk_fn(apply_fn, "layers")
  with pytest.raises(ValueError, match="no leaves"):
    ntk.per_block_ntk_fn(apply_fn, "layer")(x, None, {})
