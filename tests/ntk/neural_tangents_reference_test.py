"""ntkft's empirical NTK against numbers from neural-tangents 0.6.5.

neural-tangents no longer imports with current jax, so its outputs were
computed once in a pinned env (jax 0.4.38) by ``tools/make_nt_fixture.py`` and
stored in ``tests/fixtures/nt/nt_reference.npz`` (key scheme and versions in
``tests/fixtures/nt/README.md``). The models are the pure-``jnp`` tiny models of
``tests/ntk/tiny_models.py``: an MLP ``(N, 4) -> (N, 3)`` and a masked
self-attention model with dict inputs ``{"tokens", "mask"} -> (N, 2)``.

Checks, all in float64:

* the fixture is complete and its kernels have neural-tangents' shapes;
* the tiny models still reproduce the stored params, inputs and outputs on the
  current jax (guards against drift in the model file or in jax itself);
* the stored kernels equal ``J(x1) J(x2)^T`` built from ``jax.jacrev`` here,
  contracted per the ``trace_axes`` / ``diagonal_axes`` convention (pins down
  what the stored numbers mean independently of ntkft). Note that
  neural-tangents' "trace" is normalized: ``trace_axes=(-1,)`` gives
  ``sum_o J_o(x1) . J_o(x2) / O``, the mean over outputs;
* ``ntkft.ntk.empirical_ntk_fn`` with both implementations reproduces every
  stored kernel to 1e-10 relative to the kernel's largest entry, unchunked and
  with ``batch_size=2`` (chunked blocks, padding, mirroring for ``x2=None``).
"""

import functools
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.ntk import tiny_models

HERE = pathlib.Path(__file__).resolve().parent
FIXTURE = HERE.parent / "fixtures" / "nt" / "nt_reference.npz"

N1, N2 = 5, 3
MODELS = {
    # model: (init_fn, apply_fn, params seed, x1 seed, x2 seed, outputs);
    # the seeds must match tools/make_nt_fixture.py.
    "mlp": ("init_mlp", "mlp_apply", 0, 10, 11, 3),
    "attention": ("init_attention", "attention_apply", 1, 20, 21, 2),
}
IMPLEMENTATIONS = {"jc": "jacobian_contraction", "vp": "ntk_vector_products"}
# (trace_axes, diagonal_axes) -> name used in the fixture keys.
AXES = {
    "trace=-1/diag=": ((-1,), ()),
    "trace=/diag=": ((), ()),
    "trace=/diag=-1": ((), (-1,)),
}
X2_CASES = ("none", "given")
RTOL = 1e-10




@pytest.fixture(scope="module")
def ref():
  """The fixture as {key: numpy array}."""
  if not FIXTURE.is_file():
    pytest.fail(f"missing {FIXTURE}; see tests/fixtures/nt/README.md")
  with np.load(FIXTURE) as data:
    return {key: data[key] for key in data.files}


@pytest.fixture
def x64():
  """float64 inside the test only; the previous setting is restored after."""
  with jax.enable_x64(True):
    yield


def _unflatten(ref, prefix):
  """Keys ``prefix/a/b`` -> {"a": {"b": jnp float64}}; a bare ``prefix`` key
  -> that array."""
  if prefix in ref:
    return jnp.asarray(ref[prefix], jnp.float64)
  tree = {}
  for key, value in ref.items():
    if not key.startswith(prefix + "/"):
      continue
    node = tree
    *parents, leaf = key[len(prefix) + 1 :].split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = jnp.asarray(value, jnp.float64)
  if not tree:
    raise KeyError(f"no fixture entries under {prefix!r}")
  return tree


def _case(ref, model, x2_case):
  params = _unflatten(ref, f"{model}/params")
  x1 = _unflatten(ref, f"{model}/x1")
  x2 = _unflatten(ref, f"{model}/x2") if x2_case == "given" else None
  return params, x1, x2


def _expected_shape(model, axes_name, x2_case):
  n2 = N1 if x2_case == "none" else N2
  outputs = MODELS[model][-1]
  return {
      "trace=-1/diag=": (N1, n2),
      "trace=/diag=": (N1, n2, outputs, outputs),
      "trace=/diag=-1": (N1, n2, outputs),
  }[axes_name]


def _jacobian_nop(apply_fn, params, x):
  """d apply_fn(params, x)[n, o] / d params[p] as (N, O, P), P = all params."""
  jac_tree = jax.jacrev(apply_fn)(params, x)
  n, o = apply_fn(params, x).shape
  return jnp.concatenate(
      [leaf.reshape(n, o, -1) for leaf in jax.tree.leaves(jac_tree)], axis=-1
  )


@functools.cache
def _jitted_jacobian_fn(model):
  """One compiled Jacobian per model, shared by the parametrized cases."""
  apply_fn = getattr(tiny_models, MODELS[model][1])
  return jax.jit(functools.partial(_jacobian_nop, apply_fn))


def _assert_close_to_reference(actual, expected, what):
  actual = np.asarray(actual)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  assert actual.dtype == np.float64, (what, actual.dtype)
  scale = np.max(np.abs(expected))
  err = np.max(np.abs(actual - expected))
  assert (
      err <= RTOL * scale
  ), f"{what}: max abs err {err:.3e}, scale {scale:.3e}"


def test_fixture_is_complete(ref):
  assert "neural_tangents=0.6.5" in str(ref["meta/versions"])
  assert "jax=0.4.38" in str(ref["meta/versions"])
  for model, impl, axes_name, x2_case in itertools.product(
      MODELS, IMPLEMENTATIONS, AXES, X2_CASES
  ):
    key = f"{model}/{impl}/{axes_name}/x2={x2_case}"
    assert ref[key].dtype == np.float64, key
    assert ref[key].shape == _expected_shape(model, axes_name, x2_case), key
    # Nonzero and not degenerate, so the relative comparisons below mean
    # something.
    assert np.max(np.abs(ref[key])) > 1e-3, key


@pytest.mark.parametrize("model", list(MODELS))
def test_tiny_models_reproduce_fixture(ref, x64, model):
  init_name, apply_name, seed, seed1, seed2, outputs = MODELS[model]
  params_np = getattr(tiny_models, init_name)(seed)
  stored_params = _unflatten(ref, f"{model}/params")
  assert jax.tree.structure(params_np) == jax.tree.structure(stored_params)
  for got, want in zip(
      jax.tree.leaves(params_np), jax.tree.leaves(stored_params)
  ):
    np.testing.assert_array_equal(got, want)
  for name, n, input_seed in (("x1", N1, seed1), ("x2", N2, seed2)):
    stored_x = _unflatten(ref, f"{model}/{name}")
    made_x = tiny_models.make_inputs(model, n, input_seed)
    for got, want in zip(jax.tree.leaves(made_x), jax.tree.leaves(stored_x)):
      np.testing.assert_array_equal(got, want)
    out = getattr(tiny_models, apply_name)(stored_params, stored_x)
    assert out.dtype == jnp.float64 and out.shape == (n, outputs)
    np.testing.assert_allclose(
        out, ref[f"{model}/apply/{name}"], rtol=1e-12, atol=1e-14
    )


def test_attention_ignores_padding_tokens(ref, x64):
  """Padding tokens (mask 0) must not change the output; the fixture's dict
  inputs are only a meaningful test if the mask matters."""
  params, x1, _ = _case(ref, "attention", "none")
  assert float(jnp.min(x1["mask"])) == 0.0
  noisy = dict(x1, tokens=x1["tokens"] + 5.0 * (1.0 - x1["mask"])[..., None])
  out, out_noisy = (tiny_models.attention_apply(params, x) for x in (x1, noisy))
  np.testing.assert_allclose(out_noisy, out, rtol=1e-12, atol=1e-14)
  shuffled = dict(x1, mask=x1["mask"][::-1])
  assert not np.allclose(tiny_models.attention_apply(params, shuffled), out)


@pytest.mark.parametrize("x2_case", X2_CASES)
@pytest.mark.parametrize("axes_name", list(AXES))
@pytest.mark.parametrize("model", list(MODELS))
def test_fixture_matches_direct_jacobian(ref, x64, model, axes_name, x2_case):
  """Stored NT kernels == contractions of explicit Jacobians (N, O, P)."""
  params, x1, x2 = _case(ref, model, x2_case)
  jacobian_fn = _jitted_jacobian_fn(model)
  jac1_nop = jacobian_fn(params, x1)
  jac2_mqp = jac1_nop if x2 is None else jacobian_fn(params, x2)
  outputs = MODELS[model][-1]
  direct = {
      # neural-tangents divides a trace by the size of the traced axes (its
      # `_trace_and_diagonal` returns `ntk / contract_size`): a mean, not a sum.
      "trace=-1/diag=": jnp.einsum("nop,mop->nm", jac1_nop, jac2_mqp) / outputs,
      "trace=/diag=": jnp.einsum("nop,mqp->nmoq", jac1_nop, jac2_mqp),
      "trace=/diag=-1": jnp.einsum("nop,mop->nmo", jac1_nop, jac2_mqp),
  }[axes_name]
  for impl in IMPLEMENTATIONS:
    key = f"{model}/{impl}/{axes_name}/x2={x2_case}"
    _assert_close_to_reference(direct, ref[key], f"direct vs {key}")


def _ntkft_kernel(ref, model, impl, axes_name, x2_case, batch_size=None):
  """ntkft's kernel of a fixture case (its inputs and params from the fixture)."""
  # Imported here, not at module level, so that a missing ntkft.ntk fails
  # these tests (never skips them) while the fixture checks above still run.
  from ntkft.ntk import empirical_ntk_fn  # pylint: disable=g-import-not-at-top

  trace_axes, diagonal_axes = AXES[axes_name]
  params, x1, x2 = _case(ref, model, x2_case)
  ntk_fn = empirical_ntk_fn(getattr(tiny_models, MODELS[model][1]), trace_axes=trace_axes,
                            diagonal_axes=diagonal_axes,
                            implementation=IMPLEMENTATIONS[impl], batch_size=batch_size)
  return ntk_fn(x1, x2, params)


@pytest.mark.parametrize("x2_case", X2_CASES)
@pytest.mark.parametrize("axes_name", list(AXES))
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("model", list(MODELS))
def test_ntkft_matches_neural_tangents(
    ref, x64, model, impl, axes_name, x2_case
):
  # ntk_fn jits its own pieces and assembles chunks on the host; call it as is.
  kernel = _ntkft_kernel(ref, model, impl, axes_name, x2_case)
  key = f"{model}/{impl}/{axes_name}/x2={x2_case}"
  _assert_close_to_reference(kernel, ref[key], f"ntkft {key}")


@pytest.mark.slow  # ~20 s for the four cases on 2 shared cores.
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("model", list(MODELS))
def test_ntkft_chunked_matches_neural_tangents(ref, x64, model, impl):
  """batch_size=2 splits N1=5 into chunks 2+2+1 (padded) and N2=3 into 2+1,
  exercising block assembly and, for x2=None, the mirrored (transposed)
  blocks. Only the full (N1, N2, O, O) layout, where a wrong transpose of the
  output axes would show; the other layouts are covered unchunked above."""
  for axes_name, x2_case in itertools.product(["trace=/diag="], X2_CASES):
    key = f"{model}/{impl}/{axes_name}/x2={x2_case}"
    _assert_close_to_reference(
        _ntkft_kernel(ref, model, impl, axes_name, x2_case, batch_size=2),
        ref[key], f"ntkft batch_size=2 {key}"
    )
