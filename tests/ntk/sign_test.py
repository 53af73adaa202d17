"""Tests for the sign (Adam / SignGD) kernel K = J(x1) sign(J(x2))^T (Malladi et al.)."""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft import ntk, spectral
from tests.ntk import tiny_models


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def jacobian(apply_fn, x, params):
  """(N, O, P) Jacobian of the batched function w.r.t. raveled params."""
  flat, unravel = ravel_pytree(params)
  return np.asarray(jax.jit(jax.jacobian(
      lambda w: apply_fn(unravel(w), x)))(flat))


def direct_sign(j1, j2, trace, eps=None):
  s2 = np.sign(j2) if eps is None else j2 / np.sqrt(j2**2 + eps**2)
  if trace:
    return np.einsum("ncp,mcp->nm", j1, s2) / j1.shape[1]
  return np.einsum("ncp,mdp->nmcd", j1, s2)


@pytest.mark.parametrize("eps", [None, 1e-2])
def test_sign_kernel_against_direct(x64, eps):
  apply_fn, params = tiny_models.attention_apply, tiny_models.init_attention(2)
  x1 = tiny_models.make_inputs("attention", 5, 1)
  x2 = tiny_models.make_inputs("attention", 3, 2)
  j1, j2 = jacobian(apply_fn, x1, params), jacobian(apply_fn, x2, params)
  for trace_axes, trace in (((-1,), True), ((), False)):
    fn = ntk.sign_ntk_fn(apply_fn, trace_axes=trace_axes, eps=eps)
    np.testing.assert_allclose(fn(x1, x2, params),
                               direct_sign(j1, j2, trace, eps), rtol=1e-10,
                               atol=1e-13)
    # x2=None: K(x1, x1) with the sign on the second argument; not symmetric.
    k11 = np.asarray(fn(x1, None, params))
    np.testing.assert_allclose(k11, direct_sign(j1, j1, trace, eps),
                               rtol=1e-10, atol=1e-13)
  if eps is None:
    # Diagonal of the traced kernel: sum_c sum_p |J[n, c, p]| / C, C = 2.
    k = np.asarray(ntk.sign_ntk_fn(apply_fn)(x1, None, params))
    np.testing.assert_allclose(np.diag(k), np.abs(j1).sum(axis=(1, 2)) / 2,
                               rtol=1e-10)


def test_sign_asymmetric_and_symmetric_part():
  apply_fn, params = tiny_models.mlp_apply, tiny_models.init_mlp(4)
  x = tiny_models.make_inputs("mlp", 6, 3)
  k = np.asarray(ntk.sign_ntk_fn(apply_fn)(x, None, params))
  assert k.shape == (6, 6)
  assert not np.allclose(k, k.T, rtol=1e-3)      # genuinely asymmetric
  # The one symmetrization policy (ntkft.spectral), as sign_ntk_fn's docstring says.
  sym = spectral.symmetric_kernel(k, symmetrize=True)
  assert sym.dtype == np.float64
  np.testing.assert_array_equal(sym, sym.T)
  k64 = k.astype(np.float64)
  np.testing.assert_array_equal(sym, (k64 + k64.T) / 2)
  with pytest.raises(ValueError, match="not symmetric"):
    spectral.symmetric_kernel(k)               # asymmetry is an error unless asked for
  with pytest.raises(ValueError, match="square"):
    spectral.symmetric_kernel(np.zeros((3, 4)), symmetrize=True)


@pytest.mark.parametrize("same", [True, False])
def test_sign_chunked_equals_unchunked(x64, same):
  apply_fn, params = tiny_models.mlp_apply, tiny_models.init_mlp(5)
  x1 = tiny_models.make_inputs("mlp", 7, 4)
  x2 = None if same else tiny_models.make_inputs("mlp", 4, 5)
  full = ntk.sign_ntk_fn(apply_fn, eps=1e-3)(x1, x2, params)
  seen = []
  chunked = ntk.sign_ntk_fn(apply_fn, eps=1e-3, batch_size=3,
                            on_chunk=seen.append)(x1, x2, params)
  np.testing.assert_allclose(chunked, full, rtol=1e-12, atol=1e-14)
  # Asymmetric: with x2=None all 3 x 3 blocks are computed, none mirrored.
  assert len(seen) == (9 if same else 6)


def test_sign_bad_eps():
  with pytest.raises(ValueError, match="eps"):
    ntk.sign_ntk_fn(tiny_models.mlp_apply, eps=0.0)


def test_sign_kernel_needs_jacobian_contraction_and_known_options():
  with pytest.raises(ValueError, match="sign kernel needs implementation='jacobian_contraction'"):
    ntk.sign_ntk_fn(tiny_models.mlp_apply, implementation="ntk_vector_products")
  with pytest.raises(TypeError, match="batchsize"):
    ntk.sign_ntk_fn(tiny_models.mlp_apply, batchsize=3)
  with pytest.raises(TypeError):
    ntk.sign_ntk_fn(tiny_models.mlp_apply, (-1,))    # options are keyword-only
