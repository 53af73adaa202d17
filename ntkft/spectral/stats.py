"""Eigenvalue summaries of kernel matrices (NTK, sign/Adam kernel), on the host.

All computations run in float64 numpy (``np.linalg.eigh``); kernels are at most
a few thousand rows, so the host is the right place and the numbers are exact
up to float64 rounding whatever dtype the kernel was built in.

``spectrum_stats`` reports, for the eigenvalues ``lambda_1 <= ... <= lambda_n``
of ``K + ridge * I`` (``ridge = 0`` by default):

* ``condition_number``  kappa = lambda_max / lambda_min under the one policy
  of ntkft for tiny or negative eigenvalues (:func:`condition_number`): no
  clamping; kappa = +inf when lambda_min <= 0 (a singular PSD kernel, or one
  that rounding made indefinite), written as None (JSON null,
  :func:`ntkft.records.jsonable`). When ``0 < lambda_min <= rel_floor *
  lambda_max`` kappa is reported but dominated by rounding: a warning is
  emitted and ``lambda_min_below_floor`` is True (also when lambda_min <= 0).
* ``effective_rank``  exp(H(p)), p_i = lambda_i / sum_j lambda_j over the
  positive eigenvalues (Roy & Vetterli, "The effective rank: a measure of
  effective dimensionality", EUSIPCO 2007). Equals n for a multiple of I.
* ``participation_ratio``  (sum lambda)^2 / sum lambda^2 over the positive
  eigenvalues; also n for a multiple of I, 1 for rank one.
* ``decay``  a least-squares fit ``log lambda_(i) = c - alpha log i`` on the
  top of the spectrum in descending order, i = 1..ceil(decay_fraction * n)
  (top half by default), using only eigenvalues above the floor
  ``rel_floor * lambda_max``; returns ``alpha``, the fit's ``r2`` and the
  1-based index range actually used.

.. warning::
  The Adam/sign kernel ``K = J sign(J)^T`` is not symmetric. Its eigenvalues
  are complex in general, so ``spectrum_stats(k, symmetrize=True)`` reports the
  spectrum of the symmetric part ``(K + K^T) / 2`` (the part that governs
  ``d/dt |r|^2``) together with ``relative_asymmetry = |K - K^T|_F / |K|_F``.
  Without ``symmetrize`` an asymmetric input is an error, never silently
  reduced to one triangle as ``eigh`` would do.

Example::

  stats = spectrum_stats(k_train_train, ridge=1e-3)
  json.dumps(stats)   # plain floats/ints/bools
"""
import math
import warnings
from typing import Any

import numpy as np

# Relative Frobenius asymmetry tolerated as rounding (float32 kernels built by
# different contraction orders are symmetric to ~1e-7 relative).
SYMMETRY_RTOL = 1e-5


def _as_square_f64(k: Any, name: str = "k") -> np.ndarray:
  k = np.asarray(k, dtype=np.float64)
  if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty square (n, n) matrix, got shape {k.shape}")
  if not np.all(np.isfinite(k)):
    raise ValueError(f"{name} has non-finite entries (nan/inf)")
  return k


def condition_number(eigs: Any) -> float:
  """kappa = lambda_max / lambda_min of eigenvalues (any order); +inf if lambda_min <= 0.

  The one condition-number policy of ntkft (spectrum statistics, layer
  selection, Weyl bounds): no clamping of tiny eigenvalues; a singular or
  rounding-indefinite kernel has kappa = +inf (JSON null).
  """
  eigs = np.asarray(eigs, dtype=np.float64)
  lam_min, lam_max = float(np.min(eigs)), float(np.max(eigs))
  return lam_max / lam_min if lam_min > 0 else math.inf


def symmetric_kernel(k: Any, name: str = "k", symmetrize: bool = False,
                     sym_rtol: float = SYMMETRY_RTOL) -> np.ndarray:
  """The one kernel validation of ntkft: ``(K + K^T) / 2`` in float64.

  Args:
    k: (n, n) kernel, any array type / dtype.
    name: what ``k`` is, for the error messages.
    symmetrize: accept any asymmetry (e.g. the sign/Adam kernel).
    sym_rtol: relative Frobenius asymmetry ``|K - K^T|_F / |K|_F`` accepted as
      rounding when ``symmetrize`` is False.

  Raises:
    ValueError: ``k`` not square, empty, not finite, or asymmetric beyond
      ``sym_rtol`` without ``symmetrize``.
  """
  return _symmetric_part(_as_square_f64(k, name), symmetrize, sym_rtol, name)[0]


def symmetric_part(k: Any) -> Any:
  """``(K + Kᵀ)/2`` of a square numpy or jax array, in its own dtype, with no checks
  (traceable: the form used inside jitted solvers). :func:`symmetric_kernel` is the
  validating float64 entry point built on it."""
  return 0.5 * (k + k.T)


def relative_asymmetry(k: Any) -> float:
  """``|K - K^T|_F / |K|_F`` in float64 (0 for the zero matrix)."""
  k = _as_square_f64(k)
  norm = np.linalg.norm(k)
  if norm == 0.0:
    return 0.0
  return float(np.linalg.norm(k - k.T) / norm)


def _symmetric_part(k: np.ndarray, symmetrize: bool, sym_rtol: float,
                    name: str = "kernel") -> tuple[np.ndarray, float]:
  asym = relative_asymmetry(k)
  if not symmetrize and asym > sym_rtol:
    raise ValueError(
        f"{name} is not symmetric: |K - K^T|_F / |K|_F = {asym:.3e} > "
        f"{sym_rtol:.1e}; pass symmetrize=True to analyse the symmetric part "
        "(K + K^T)/2 (e.g. for the sign/Adam kernel J sign(J)^T)")
  return symmetric_part(k), asym


def eigvalsh(k: Any, symmetrize: bool = False,
             sym_rtol: float = SYMMETRY_RTOL) -> np.ndarray:
  """Eigenvalues of a symmetric kernel, float64 numpy, ascending.

  Args:
    k: (n, n) symmetric matrix (any array type / dtype; copied to host float64).
    symmetrize: use the symmetric part ``(K + K^T)/2`` of an asymmetric ``k``.
    sym_rtol: relative Frobenius asymmetry accepted as rounding when
      ``symmetrize`` is False.

  Returns:
    (n,) float64 eigenvalues in ascending order.

  Raises:
    ValueError: ``k`` not square, not finite, or asymmetric beyond ``sym_rtol``
      while ``symmetrize`` is False.
  """
  return np.linalg.eigh(symmetric_kernel(k, "k", symmetrize, sym_rtol))[0]


def _power_law_fit(eigs_desc: np.ndarray, floor: float,
                   decay_fraction: float) -> dict:
  """Fits log lambda_(i) = c - alpha log i on the top of a sorted spectrum."""
  n = eigs_desc.shape[0]
  end = min(n, max(2, int(math.ceil(decay_fraction * n))))
  top = eigs_desc[:end]
  top = top[top > floor]
  num = int(top.shape[0])
  out = {"alpha": None, "r2": None, "index_start": 1, "index_end": num,
         "num_points": num, "fraction": float(decay_fraction)}
  if num < 2:
    return out
  log_i = np.log(np.arange(1, num + 1, dtype=np.float64))
  log_l = np.log(top)
  slope, intercept = np.polyfit(log_i, log_l, 1)
  resid = log_l - (slope * log_i + intercept)
  ss_res = float(np.sum(resid**2))
  ss_tot = float(np.sum((log_l - log_l.mean())**2))
  # A flat spectrum (all equal) is fitted exactly by alpha = 0.
  r2 = 1.0 if ss_tot <= 1e-30 else 1.0 - ss_res / ss_tot
  out["alpha"] = float(-slope)
  out["r2"] = float(r2)
  return out


def spectrum_stats_from_eigs(eigs: Any, rel_floor: float = 1e-12,
                             ridge: float = 0.0,
                             decay_fraction: float = 0.5) -> dict:
  """``spectrum_stats`` on precomputed eigenvalues (e.g. from Lanczos).

  Args:
    eigs: (n,) eigenvalues of a symmetric kernel, any order.
    rel_floor: relative floor for lambda_min and for the decay fit.
    ridge: added to every eigenvalue first (the spectrum of ``K + ridge I``).
    decay_fraction: fit the power law on the top ``ceil(fraction * n)``.

  Returns:
    Dict of JSON-serializable values; see the module docstring.
  """
  eigs = np.sort(np.asarray(eigs, dtype=np.float64).reshape(-1))
  if eigs.shape[0] == 0:
    raise ValueError("eigs is empty")
  if not np.all(np.isfinite(eigs)):
    raise ValueError("eigs has non-finite entries")
  if not 0.0 < rel_floor < 1.0:
    raise ValueError(f"rel_floor must be in (0, 1), got {rel_floor}")
  if not 0.0 < decay_fraction <= 1.0:
    raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
  eigs = eigs + float(ridge)
  n = int(eigs.shape[0])
  lam_min, lam_max = float(eigs[0]), float(eigs[-1])
  floor = rel_floor * lam_max
  kappa = condition_number(eigs)
  below = lam_min <= floor
  if below:
    warnings.warn(
        f"spectrum_stats: lambda_min = {lam_min:.3e} <= rel_floor * lambda_max"
        f" = {floor:.3e}: the kernel is singular at float precision; condition "
        f"number {'inf (None)' if math.isinf(kappa) else f'{kappa:.3e}'} is "
        "dominated by rounding", stacklevel=2)
  pos = eigs[eigs > 0.0]
  if pos.shape[0] > 0:
    p = pos / pos.sum()
    effective_rank = float(np.exp(-np.sum(p * np.log(p))))
    participation_ratio = float(pos.sum()**2 / np.sum(pos**2))
  else:
    effective_rank = participation_ratio = 0.0
  return {
      "n": n,
      "ridge": float(ridge),
      "lambda_min": lam_min,
      "lambda_max": lam_max,
      "condition_number": float(kappa) if math.isfinite(kappa) else None,
      "lambda_min_below_floor": bool(below),
      "rel_floor": float(rel_floor),
      "trace": float(eigs.sum()),
      "num_positive": int(pos.shape[0]),
      "effective_rank": effective_rank,
      "participation_ratio": participation_ratio,
      "decay": _power_law_fit(eigs[::-1], max(floor, 0.0), decay_fraction),
  }


def spectrum_stats(k: Any, rel_floor: float = 1e-12, ridge: float = 0.0,
                   symmetrize: bool = False, decay_fraction: float = 0.5,
                   sym_rtol: float = SYMMETRY_RTOL) -> dict:
  """Spectral summary of a kernel matrix ``K + ridge * I``.

  Args:
    k: (n, n) kernel. Symmetric unless ``symmetrize``.
    rel_floor: lambda_min at or below ``rel_floor * lambda_max`` is flagged
      (``lambda_min_below_floor``, with a warning); kappa is not clamped.
    ridge: added to every eigenvalue (the spectrum the ridge solver sees).
    symmetrize: analyse ``(K + K^T)/2`` of an asymmetric kernel.
    decay_fraction: fraction of the (descending) spectrum used for the
      power-law fit.
    sym_rtol: relative asymmetry tolerated as rounding without ``symmetrize``.

  Returns:
    JSON-serializable dict with keys ``n, ridge, lambda_min, lambda_max,
    condition_number, lambda_min_below_floor, rel_floor, trace, num_positive,
    effective_rank, participation_ratio, decay{alpha, r2, index_start,
    index_end, num_points, fraction}, symmetrized, relative_asymmetry``.

  Raises:
    ValueError: ``k`` not square/finite, or asymmetric without ``symmetrize``.
  """
  k = _as_square_f64(k)
  k_sym, asym = _symmetric_part(k, symmetrize, sym_rtol)
  eigs = np.linalg.eigh(k_sym)[0]
  stats = spectrum_stats_from_eigs(eigs, rel_floor=rel_floor, ridge=ridge,
                                   decay_fraction=decay_fraction)
  stats["symmetrized"] = bool(symmetrize)
  stats["relative_asymmetry"] = float(asym)
  return stats
