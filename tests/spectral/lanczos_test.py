"""Tests for ntkft.spectral.lanczos against np.linalg.eigh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft.spectral import lanczos_eigs, lanczos_tridiagonal


def _psd(eigs, seed):
  n = eigs.shape[0]
  q, _ = np.linalg.qr(np.random.RandomState(seed).normal(size=(n, n)))
  return (q * eigs) @ q.T


def _counting_matvec(mat):
  calls = []

  def matvec(v):
    calls.append(1)
    return mat @ v

  return matvec, calls


def test_top_eigenvalues_power_law_spectrum():
  """Spread spectrum lambda_i = i^-2 (kappa = 4e4): top 5 from 60 of 200."""
  n, k = 200, 5
  eigs = np.arange(1, n + 1, dtype=np.float64)**-2.0
  mat = _psd(eigs, seed=0)
  ref = np.linalg.eigh(mat)[0]
  matvec, calls = _counting_matvec(mat)
  top, bottom = lanczos_eigs(matvec, n, k, num_iters=60, seed=0, which="top")
  assert bottom is None and len(calls) == 60
  assert top.shape == (k,) and np.all(np.diff(top) <= 0)
  # Observed ~1e-15 relative (already converged at 30 iterations).
  np.testing.assert_allclose(top, ref[::-1][:k], rtol=1e-9)
  # Ritz values never overshoot the true ones (interlacing).
  assert np.all(top <= ref[::-1][:k] * (1 + 1e-12))


def test_both_ends_with_well_separated_bottom():
  """Bottom eigenvalues converge when separated from the bulk.

  Spectrum: 3 isolated small values {1e-3, 2e-3, 4e-3}, a bulk in [1, 2] and
  top values {10, 20, 40}. With 50 iterations of 150 both ends agree to ~1e-12
  relative (asserted: 1e-9); the bulk in between is not resolved. (For contrast,
  the bottom of the dense i^-2 spectrum above is still ~15% off after 100 of
  200 iterations; only the full space resolves it.)
  """
  n, k = 150, 3
  bulk = np.linspace(1.0, 2.0, n - 6)
  eigs = np.concatenate([[1e-3, 2e-3, 4e-3], bulk, [10.0, 20.0, 40.0]])
  mat = _psd(eigs, seed=1)
  ref = np.linalg.eigh(mat)[0]
  top, bottom = lanczos_eigs(lambda v: mat @ v, n, k, num_iters=50, seed=1)
  np.testing.assert_allclose(top, ref[::-1][:k], rtol=1e-9)
  np.testing.assert_allclose(bottom, ref[:k], rtol=1e-9)
  assert np.all(np.diff(bottom) >= 0)


def test_full_krylov_space_is_exact():
  """num_iters = n gives every eigenvalue, bottom of a dense spectrum included.

  The bottom of a power-law spectrum (relative gap ~1e-2 of the spread) is the
  hard case; with the full space and full reorthogonalization the error is
  rounding-level relative to lambda_max.
  """
  n = 60
  eigs = np.arange(1, n + 1, dtype=np.float64)**-1.5
  mat = _psd(eigs, seed=2)
  ref = np.linalg.eigh(mat)[0]
  top, bottom = lanczos_eigs(lambda v: mat @ v, n, n, num_iters=n, seed=3)
  np.testing.assert_allclose(top, ref[::-1], rtol=0, atol=1e-12)
  np.testing.assert_allclose(bottom, ref, rtol=0, atol=1e-12)


def test_tridiagonal_basis_reproduces_matrix():
  """With m = n the tridiagonal is similar to the matrix: same trace, norm."""
  n = 30
  mat = _psd(np.linspace(0.1, 3.0, n), seed=4)
  alpha, beta = lanczos_tridiagonal(lambda v: mat @ v, n, n, seed=0)
  assert alpha.shape == (n,) and beta.shape == (n - 1,)
  np.testing.assert_allclose(alpha.sum(), np.trace(mat), rtol=1e-12)
  frob_t = np.sum(alpha**2) + 2 * np.sum(beta**2)
  np.testing.assert_allclose(frob_t, np.sum(mat**2), rtol=1e-10)


def test_invariant_subspace_breakdown_is_handled():
  """Few distinct eigenvalues: the Krylov space closes after 3 steps."""
  n = 20
  eigs = np.array([1.0] * 7 + [2.0] * 7 + [5.0] * 6)
  mat = _psd(eigs, seed=5)
  top, bottom = lanczos_eigs(lambda v: mat @ v, n, 2, num_iters=n, seed=0)
  assert np.all(np.isfinite(top)) and np.all(np.isfinite(bottom))
  np.testing.assert_allclose(top, [5.0, 5.0], atol=1e-10)
  np.testing.assert_allclose(bottom, [1.0, 1.0], atol=1e-10)


def test_jax_ntk_vector_product_matvec():
  """An implicit NTK-vector product v -> J (J^T v) (float32 JAX on the side)."""
  rng = np.random.RandomState(6)
  jac = jnp.asarray(rng.normal(size=(40, 25)).astype(np.float32))
  matvec_jit = jax.jit(lambda jac, v: jac @ (jac.T @ v))
  matvec = lambda v: matvec_jit(jac, v.astype(np.float32))
  ref = np.linalg.eigvalsh(np.asarray(jac, np.float64) @
                           np.asarray(jac, np.float64).T)
  top, _ = lanczos_eigs(matvec, 40, 3, num_iters=25, seed=0, which="top")
  np.testing.assert_allclose(top, ref[::-1][:3], rtol=1e-4)


def test_bad_arguments_raise():
  mat = np.eye(5)
  with pytest.raises(ValueError, match="which"):
    lanczos_eigs(lambda v: mat @ v, 5, 2, 4, which="middle")
  with pytest.raises(ValueError, match="num_iters"):
    lanczos_eigs(lambda v: mat @ v, 5, 2, 6)
  with pytest.raises(ValueError, match="k"):
    lanczos_eigs(lambda v: mat @ v, 5, 5, 4)
  with pytest.raises(ValueError, match="shape"):
    lanczos_eigs(lambda v: np.ones(4), 5, 2, 4)
