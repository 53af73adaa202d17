"""Tests for ntkft.ntk.empirical_ntk_fn against a direct J1 J2^T reference.

The reference flattens params with ``ravel_pytree`` and takes ``jax.jacobian``
of the *batched* function (slow, obvious), giving the full kernel
``F[n, s, m, t] = sum_p J(x1)[n, s, p] J(x2)[m, t, p]``; each layout is then
written out by hand with ``np.einsum`` (independently of the engine's einsum
builder), with neural-tangents' normalized trace (divide by the traced size).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft import ntk
from tests.ntk import tiny_models

IMPLEMENTATIONS = ("jacobian_contraction", "ntk_vector_products")
# (trace_axes, diagonal_axes) -> einsum of the full kernel F[n, s, m, t].
LAYOUTS_2D = {
    ((-1,), ()): "ncmc->nm",
    ((), ()): "ncmd->nmcd",
    ((), (-1,)): "ncmc->nmc",
}


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _model(name):
  if name == "mlp":
    return tiny_models.mlp_apply, tiny_models.init_mlp(0), "mlp"
  return tiny_models.attention_apply, tiny_models.init_attention(1), "attention"


def full_kernel(apply_fn, x1, x2, params):
  """F with axes (n, *S, m, *S) from the Jacobian of the batched function."""
  flat, unravel = ravel_pytree(params)
  jac = jax.jit(jax.jacobian(lambda w, x: apply_fn(unravel(w), x)))
  j1 = np.asarray(jac(flat, x1))
  j2 = j1 if x2 is None else np.asarray(jac(flat, x2))
  return np.tensordot(j1, j2, axes=([-1], [-1]))


@functools.lru_cache(maxsize=None)
def direct_fulls(model):
  """(F(x1, x1), F(x1, x2)) in float64 for test_against_direct, computed once."""
  apply_fn, params, name = _model(model)
  x1 = tiny_models.make_inputs(name, 5, 10)
  x2 = tiny_models.make_inputs(name, 3, 11)
  with jax.enable_x64(True):
    return (full_kernel(apply_fn, x1, None, params),
            full_kernel(apply_fn, x1, x2, params))


def reduce_layout(full, trace_axes, diagonal_axes):
  ref = np.einsum(LAYOUTS_2D[(trace_axes, diagonal_axes)], full)
  return ref / (full.shape[1] if trace_axes else 1)


def reference(apply_fn, x1, x2, params, trace_axes, diagonal_axes):
  return reduce_layout(full_kernel(apply_fn, x1, x2, params), trace_axes,
                       diagonal_axes)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("model", ["mlp", "attention"])
def test_against_direct(x64, implementation, model):
  """All three layouts, x2=None and x2 with N2 != N1, array and dict inputs."""
  apply_fn, params, name = _model(model)
  x1 = tiny_models.make_inputs(name, 5, 10)
  x2 = tiny_models.make_inputs(name, 3, 11)
  full_11, full_12 = direct_fulls(model)
  for layout in LAYOUTS_2D:
    ntk_fn = ntk.empirical_ntk_fn(apply_fn, *layout, implementation)
    for x2_arg, full in ((None, full_11), (x2, full_12)):
      k = ntk_fn(x1, x2_arg, params)
      ref = reduce_layout(full, *layout)
      assert k.dtype == jnp.float64
      assert k.shape == ref.shape, (layout, x2_arg is None)
      np.testing.assert_allclose(k, ref, rtol=1e-10,
                                 atol=1e-12 * np.abs(ref).max())


def _apply_3d(params, x):
  """(N, 4) -> (N, 2, 3): two heads of the tiny MLP, to test general layouts."""
  out = tiny_models.mlp_apply(params, x)
  return jnp.stack([out, jnp.tanh(out) * x[:, :3]], axis=1)


# Output (N, 2, 3): F[n, a, b, m, c, d]. NT layout: kernel axes interleave
# (x1, x2) per kept output axis; diagonal axes appear once, traces are means.
LAYOUTS_3D = {
    ((1,), ()): ("nabmad->nmbd", 2),
    ((-1,), (1,)): ("nabmab->nma", 3),
    ((), ()): ("nabmcd->nmacbd", 1),
    ((1, 2), ()): ("nabmab->nm", 6),
    ((), (1, 2)): ("nabmab->nmab", 1),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_general_output_layouts(x64, implementation):
  params = tiny_models.init_mlp(3)
  x1 = tiny_models.make_inputs("mlp", 4, 1)
  x2 = tiny_models.make_inputs("mlp", 3, 2)
  full = full_kernel(_apply_3d, x1, x2, params)
  for layout, (spec, size) in LAYOUTS_3D.items():
    ref = np.einsum(spec, full) / size
    k = ntk.empirical_ntk_fn(_apply_3d, *layout, implementation)(
        x1, x2, params)
    assert k.shape == ref.shape, layout
    np.testing.assert_allclose(k, ref, rtol=1e-10,
                               atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("layout", [((-1,), ()), ((), ())])
def test_implementations_agree_float32(layout):
  apply_fn, params, name = _model("attention")
  x1 = tiny_models.make_inputs(name, 6, 3)
  x2 = tiny_models.make_inputs(name, 4, 4)
  kernels = [ntk.empirical_ntk_fn(apply_fn, *layout, impl)(x1, x2, params)
             for impl in IMPLEMENTATIONS]
  assert kernels[0].dtype == jnp.float32
  scale = np.abs(kernels[0]).max()
  np.testing.assert_allclose(kernels[0], kernels[1], atol=1e-5 * scale)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("batch_size", [None, 3])
def test_symmetric_psd(implementation, batch_size):
  apply_fn, params, name = _model("attention")
  x = tiny_models.make_inputs(name, 8, 5)
  k = np.asarray(ntk.empirical_ntk_fn(
      apply_fn, implementation=implementation, batch_size=batch_size)(
          x, None, params))
  assert k.shape == (8, 8)
  np.testing.assert_array_equal(k, k.T)   # exactly symmetric by construction
  eig = np.linalg.eigvalsh(k.astype(np.float64))
  assert eig.min() >= -1e-5 * eig.max()
  assert eig.max() > 0


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("layout", [((-1,), ()), ((), ())])
def test_chunked_equals_unchunked(x64, implementation, layout):
  apply_fn, params, name = _model("attention")
  x1 = tiny_models.make_inputs(name, 7, 6)
  x2 = tiny_models.make_inputs(name, 5, 7)
  ntk_fn = ntk.empirical_ntk_fn(apply_fn, *layout, implementation)
  blocks = []
  chunked_fn = ntk.empirical_ntk_fn(apply_fn, *layout, implementation,
                                    batch_size=3, on_chunk=blocks.append)
  for x2_arg in (None, x2):
    full = ntk_fn(x1, x2_arg, params)
    blocks.clear()
    chunked = chunked_fn(x1, x2_arg, params)
    np.testing.assert_allclose(chunked, full, rtol=1e-12,
                               atol=1e-14 * np.abs(full).max())
    # 7 = 3 + 3 + 1 (padded), 5 = 3 + 2 (padded); x2=None computes only the
    # 6 blocks with col >= row of the 3 x 3 grid, x2 the 3 x 2 grid.
    assert len(blocks) == 6
    assert all(b["chunk_size"] == (3, 3) for b in blocks)
    covered = np.zeros((7, 7 if x2_arg is None else 5), int)
    for b in blocks:
      covered[slice(*b["rows"]), slice(*b["cols"])] += 1
      if x2_arg is None and b["rows"] != b["cols"]:
        covered[slice(*b["cols"]), slice(*b["rows"])] += 1
    np.testing.assert_array_equal(covered, 1)


def test_ragged_tail_does_not_recompile():
  """N=7 in chunks of 3 traces apply_fn as often as N=6: the tail is padded."""
  _, params, name = _model("mlp")
  counts = []
  for n in (6, 7):
    counts.append(0)

    def counting_apply(p, x):   # a new function per n: no shared jit cache
      counts[-1] += 1           # runs at trace time only
      return tiny_models.mlp_apply(p, x)

    ntk_fn = ntk.empirical_ntk_fn(counting_apply, batch_size=3)
    x = tiny_models.make_inputs(name, n, 0)
    ntk_fn(x, None, params)
    ntk_fn(x, None, params)   # second call: cached, no retrace
  assert counts[0] == counts[1] > 0


def test_subset_of_params_with_frozen_extra(x64):
  """Differentiating only `trainable`; frozen leaves enter through *extra."""
  params = tiny_models.init_mlp(2)
  trainable = {"layer_1": params["layer_1"]}
  frozen = {k: v for k, v in params.items() if k != "layer_1"}

  def apply_fn(train, x, froz):
    return tiny_models.mlp_apply({**froz, **train}, x)

  x1 = tiny_models.make_inputs("mlp", 4, 0)
  x2 = tiny_models.make_inputs("mlp", 3, 1)
  ref = reference(lambda t, x: apply_fn(t, x, frozen), x1, x2, trainable,
                  (-1,), ())
  full_ref = reference(tiny_models.mlp_apply, x1, x2, params, (-1,), ())
  for impl in IMPLEMENTATIONS:
    k = ntk.empirical_ntk_fn(apply_fn, implementation=impl)(
        x1, x2, trainable, frozen)
    np.testing.assert_allclose(k, ref, rtol=1e-10)
    assert not np.allclose(k, full_ref)   # really only a subset


# ------------------------------------------------------------------ memory


def test_plan_chunks_closed_form():
  # 2 * c * O * P * itemsize <= budget  ->  c = budget // (2 O P itemsize).
  assert ntk.plan_chunks(100, 3, 1000, 4, 2 * 3 * 1000 * 4 * 7) == 7
  assert ntk.plan_chunks(100, 3, 1000, 4, 2 * 3 * 1000 * 4 * 7 + 1) == 7
  assert ntk.plan_chunks(100, 3, 1000, 4, 2 * 3 * 1000 * 4 * 8 - 1) == 7
  assert ntk.plan_chunks(5, 3, 1000, 4, 10**9) == 5     # capped at N
  with pytest.raises(ValueError, match="split the parameters"):
    ntk.plan_chunks(10, 3, 1000, 4, 2 * 3 * 1000 * 4 - 1)
  with pytest.raises(ValueError, match="num_params"):
    ntk.plan_chunks(10, 3, 0, 4, 1000)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_memory_budget_respected(implementation):
  apply_fn, params, name = _model("mlp")
  x1 = tiny_models.make_inputs(name, 9, 8)
  x2 = tiny_models.make_inputs(name, 6, 9)
  num_params = sum(np.size(v) for v in jax.tree.leaves(params))   # 139
  per_example = 2 * 3 * num_params * 4          # 2 sides x O=3 x P x f32
  ntk_fn = ntk.empirical_ntk_fn(apply_fn, implementation=implementation)
  full = ntk_fn(x1, x2, params)
  scale = np.abs(full).max()

  # Budget for 4 examples (not 5): chunks of 4 over the whole parameter set.
  budget = 5 * per_example - 1
  seen = []
  k = ntk.empirical_ntk_fn(apply_fn, implementation=implementation,
                           memory_budget_bytes=budget,
                           on_chunk=seen.append)(x1, x2, params)
  np.testing.assert_allclose(k, full, atol=1e-5 * scale)
  assert seen and all(b["jacobian_bytes"] <= budget for b in seen)
  assert {b["chunk_size"] for b in seen} == {(4, 4)}
  assert len(seen) == 3 * 2

  # Below one example (the largest leaf, 8 x 8 = 64 params, fits): parameter
  # groups of consecutive leaves, each within budget, covering all params.
  budget = 2 * 3 * 80 * 4
  seen = []
  k = ntk.empirical_ntk_fn(apply_fn, implementation=implementation,
                           memory_budget_bytes=budget,
                           on_chunk=seen.append)(x1, x2, params)
  np.testing.assert_allclose(k, full, atol=1e-5 * scale)
  assert all(b["jacobian_bytes"] <= budget for b in seen)
  assert seen[0]["num_groups"] >= 2
  assert sum(b["num_params"] for b in seen
             if b["rows"][0] == 0 and b["cols"][0] == 0) == num_params

  with pytest.raises(ValueError, match="too small"):
    ntk.empirical_ntk_fn(apply_fn, memory_budget_bytes=16)(x1, x2, params)


# --------------------------------------------------------------- bad input


def test_bad_inputs():
  apply_fn, params, name = _model("mlp")
  x = tiny_models.make_inputs(name, 3, 0)
  with pytest.raises(ValueError, match="unknown NTK implementation"):
    ntk.empirical_ntk_fn(apply_fn, implementation="structured_derivatives")
  with pytest.raises(ValueError, match="trace_axes must be"):
    ntk.empirical_ntk_fn(apply_fn, trace_axes="last")
  with pytest.raises(ValueError, match="out of range"):
    ntk.empirical_ntk_fn(apply_fn, trace_axes=(2,))(x, None, params)
  with pytest.raises(ValueError, match="example axis"):
    ntk.empirical_ntk_fn(apply_fn, trace_axes=(0,))(x, None, params)
  with pytest.raises(ValueError, match="overlap"):
    ntk.empirical_ntk_fn(apply_fn, trace_axes=(-1,), diagonal_axes=(1,))(
        x, None, params)
  with pytest.raises(ValueError, match="batch_size"):
    ntk.empirical_ntk_fn(apply_fn, batch_size=0)
  with pytest.raises(ValueError, match="no leaves"):
    ntk.empirical_ntk_fn(apply_fn)(x, None, {})
  with pytest.raises(TypeError, match="layer_0/kernel"):
    bad = jax.tree.map(lambda a: a, params)
    bad["layer_0"]["kernel"] = np.ones((4, 8), np.int32)
    ntk.empirical_ntk_fn(apply_fn)(x, None, bad)
  with pytest.raises(ValueError, match="disagree on the number of examples"):
    ntk.empirical_ntk_fn(lambda p, x: apply_fn(p, x["a"]))(
        {"a": x, "b": x[:2]}, None, params)
  with pytest.raises(ValueError, match="single array"):
    ntk.empirical_ntk_fn(lambda p, x: (apply_fn(p, x),))(x, None, params)
  assert ntk.NtkImplementation("ntk_vector_products") is (
      ntk.NtkImplementation.NTK_VECTOR_PRODUCTS)
  k_enum = ntk.empirical_ntk_fn(
      apply_fn, implementation=ntk.NtkImplementation.NTK_VECTOR_PRODUCTS)(
          x, None, params)
  assert k_enum.shape == (3, 3)
