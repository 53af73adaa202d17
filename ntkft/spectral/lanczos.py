"""Extreme eigenvalues of a symmetric operator from matrix-vector products only.

For kernels too large to form (e.g. the NTK of many examples, available as an
NTK-vector product ``v -> J (J^T v)``), ``lanczos_eigs`` runs the Lanczos
iteration with *full reorthogonalization* (each new vector is projected off all
previous ones, twice -- "twice is enough", Parlett), so the Krylov basis stays
orthonormal to rounding and no spurious copies of converged Ritz values appear.
Ritz values of the tridiagonal ``T_m = Q_m^T A Q_m`` approximate the extreme
eigenvalues of ``A``; with ``num_iters = n`` they are exact up to rounding.

The iteration itself is float64 numpy on the host (``O(n m)`` memory for the
basis); the cost is in the ``num_iters`` calls to ``matvec``, which may run on
an accelerator: it receives a float64 numpy vector of shape (n,) and must return
something ``np.asarray`` turns into shape (n,).

Convergence (Kaniel-Paige-Saad): Ritz values converge fastest at the ends of the
spectrum where eigenvalues are well separated relative to the spectral spread.
For a PSD kernel with power-law decay the *top* eigenvalues converge within a
few tens of iterations; the *bottom* ones sit in a dense cluster near zero and
need many more iterations (often close to n) -- check convergence by rerunning
with more iterations before trusting ``bottom_k``.
"""
from typing import Callable, Optional

import numpy as np
import scipy.linalg

_WHICH = ("both", "top", "bottom")


def _random_unit(rng: np.random.Generator, n: int,
                 basis: Optional[np.ndarray]) -> np.ndarray:
  """A random unit vector orthogonal to the rows of ``basis``."""
  for _ in range(10):
    v = rng.standard_normal(n)
    if basis is not None and basis.shape[0] > 0:
      for _ in range(2):
        v -= basis.T @ (basis @ v)
    norm = np.linalg.norm(v)
    if norm > 1e-8:
      return v / norm
  raise RuntimeError("lanczos: could not draw a vector orthogonal to the basis")


def lanczos_tridiagonal(matvec: Callable[[np.ndarray], np.ndarray], n: int,
                        num_iters: int, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Runs ``num_iters`` Lanczos steps; returns the tridiagonal of ``T_m``.

  Args:
    matvec: ``v (n,) float64 -> A v (n,)`` for a symmetric ``A``.
    n: dimension of ``A``.
    num_iters: Krylov dimension m, ``1 <= m <= n``.
    seed: seed of the random start vector.

  Returns:
    ``(alpha (m,), beta (m-1,))``: diagonal and off-diagonal of ``T_m``. On an
    invariant subspace (``beta_j`` ~ 0) the iteration continues from a fresh
    random vector orthogonal to the basis and stores ``beta_j = 0``, so ``T_m``
    stays exact (block diagonal).
  """
  if not 1 <= num_iters <= n:
    raise ValueError(f"lanczos: need 1 <= num_iters <= n, got num_iters="
                     f"{num_iters}, n={n}")
  rng = np.random.default_rng(seed)
  basis = np.zeros((num_iters, n), dtype=np.float64)
  alpha = np.zeros(num_iters, dtype=np.float64)
  beta = np.zeros(max(num_iters - 1, 0), dtype=np.float64)
  q = _random_unit(rng, n, None)
  scale = 0.0
  for j in range(num_iters):
    basis[j] = q
    w = np.asarray(matvec(q), dtype=np.float64)
    if w.shape != (n,):
      raise ValueError(f"lanczos: matvec returned shape {w.shape}, expected "
                       f"({n},)")
    if not np.all(np.isfinite(w)):
      raise ValueError(
          f"lanczos: matvec returned non-finite values at step {j}")
    alpha[j] = q @ w
    w = w - alpha[j] * q
    if j > 0:
      w = w - beta[j - 1] * basis[j - 1]
    active = basis[:j + 1]
    for _ in range(2):
      w -= active.T @ (active @ w)
    if j == num_iters - 1:
      break
    b = float(np.linalg.norm(w))
    scale = max(scale, abs(alpha[j]), b)
    if b <= 1e-12 * max(scale, np.finfo(np.float64).tiny):
      beta[j] = 0.0
      q = _random_unit(rng, n, active)
    else:
      beta[j] = b
      q = w / b
  return alpha, beta


def lanczos_eigs(matvec: Callable[[np.ndarray], np.ndarray], n: int, k: int,
                 num_iters: int, seed: int = 0, which: str = "both"
                ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
  """Approximate extreme eigenvalues of a symmetric operator by Lanczos.

  Args:
    matvec: ``v (n,) float64 -> A v (n,)`` for a symmetric ``A``.
    n: dimension of ``A``.
    k: number of eigenvalues wanted at each requested end, ``k <= num_iters``.
    num_iters: Krylov dimension (number of ``matvec`` calls), ``<= n``.
    seed: seed of the random start vector.
    which: ``"both"``, ``"top"`` or ``"bottom"``.

  Returns:
    ``(top_k, bottom_k)``: float64 arrays of shape (k,), ``top_k`` descending
    (largest first) and ``bottom_k`` ascending (smallest first); the end not
    requested by ``which`` is None. By Cauchy interlacing ``top_k[i]`` is at
    most the (i+1)-th largest eigenvalue and ``bottom_k[i]`` at least the
    (i+1)-th smallest, so both ends converge from inside the spectrum.
  """
  if which not in _WHICH:
    raise ValueError(f"lanczos_eigs: which must be one of {_WHICH}, got "
                     f"{which!r}")
  if not 1 <= k <= num_iters:
    raise ValueError(f"lanczos_eigs: need 1 <= k <= num_iters, got k={k}, "
                     f"num_iters={num_iters}")
  alpha, beta = lanczos_tridiagonal(matvec, n, num_iters, seed)
  if num_iters == 1:
    ritz = alpha.copy()
  else:
    ritz = scipy.linalg.eigh_tridiagonal(alpha, beta, eigvals_only=True)
  ritz = np.sort(ritz)
  top = ritz[::-1][:k].copy() if which in ("both", "top") else None
  bottom = ritz[:k].copy() if which in ("both", "bottom") else None
  return top, bottom
