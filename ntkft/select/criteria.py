"""Layer-selection criteria of a kernel, and the validated selection problem.

For a symmetric kernel K (n, n) of a set of parameter blocks, ridge rho >= 0:

* ``"min_kappa"``: kappa(K + rho I) = lambda_max / lambda_min, +inf when
  lambda_min <= 0 (:func:`ntkft.select.bounds.condition_number`);
* ``"max_lambda_min"``: lambda_min(K + rho I);
* ``"max_alignment"``: ``A(K, Y) = tr(Y^T K Y) / (|K|_F |Y|_F^2)`` for targets
  (or residuals) Y (n, C) (Cristianini et al. 2002); the ridge does not enter.

:func:`prepare` validates the inputs of the searches of
:mod:`ntkft.select.selection` into a :class:`Problem`.
"""
import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from ntkft.select import bounds as bounds_lib
from ntkft.spectral.alignment import kernel_target_alignment
from ntkft.spectral.stats import symmetric_kernel

CRITERIA = ("min_kappa", "max_lambda_min", "max_alignment")
SPECTRAL = ("min_kappa", "max_lambda_min")


@dataclasses.dataclass(frozen=True)
class Problem:
  """Validated inputs of a selection: float64 symmetric kernels, targets, budget."""
  names: tuple[str, ...]
  kernels: tuple[np.ndarray, ...]      # (n, n) float64, symmetric
  targets: Optional[np.ndarray]        # (n, C) residual targets
  params: Optional[np.ndarray]         # (m,) parameter counts
  param_budget: Optional[int]
  ridge: float
  criterion: str
  rtol: float

  @property
  def n(self) -> int:
    return self.kernels[0].shape[0]

  @property
  def m(self) -> int:
    return len(self.names)


def prepare(kernels, criterion, k, targets, fx0, param_counts, param_budget,
            ridge, rtol) -> tuple[Problem, Optional[int]]:
  """Validates the search inputs; returns the problem and k (None or int).

  Raises:
    ValueError: naming the bad argument (see :func:`greedy_select`).
  """
  if criterion not in CRITERIA:
    raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
  if not isinstance(kernels, Mapping) or not kernels:
    raise ValueError("kernels must be a non-empty mapping block name -> (n, n) "
                     "kernel")
  names = tuple(kernels)
  mats = []
  for name in names:
    mat = symmetric_kernel(kernels[name], f"kernel of block {name!r}")
    if mats and mat.shape != mats[0].shape:
      raise ValueError(f"kernel of block {name!r} has shape {mat.shape}, but "
                       f"block {names[0]!r} has {mats[0].shape}")
    mats.append(mat)
  n = mats[0].shape[0]
  m = len(names)
  if k is not None:
    if isinstance(k, bool) or int(k) != k or k < 1:
      raise ValueError(f"budget k must be a positive int or None, got {k!r}")
    k = int(k)
    if k > m:
      raise ValueError(f"budget k={k} exceeds the number of candidate blocks "
                       f"({m}: {list(names)})")
  ridge = bounds_lib._ridge(ridge)
  if not 0 <= rtol < 1e-2:
    raise ValueError(f"rtol must be in [0, 1e-2), got {rtol}")

  y = None
  if targets is not None:
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != n:
      raise ValueError(f"targets must have shape (n,) or (n, C) with n={n}, "
                       f"got {y.shape}")
    if fx0 is not None:
      f0 = np.asarray(fx0, dtype=np.float64)
      if f0.shape != y.shape:
        raise ValueError(f"fx0 has shape {f0.shape}, targets have {y.shape}; "
                         "they must match")
      y = y - f0
    y = y.reshape(n, -1)
    if not np.all(np.isfinite(y)):
      raise ValueError("targets (or fx0) have non-finite entries")
  elif fx0 is not None:
    raise ValueError("fx0 given without targets")
  if criterion == "max_alignment":
    if y is None:
      raise ValueError("criterion 'max_alignment' needs targets")
    if not np.any(y):
      raise ValueError("max_alignment: the (residual) targets are all zero")

  params = None
  if param_counts is not None:
    missing = [b for b in names if b not in param_counts]
    if missing:
      raise ValueError(f"param_counts misses block(s) {missing}")
    params = np.array([int(param_counts[b]) for b in names], dtype=np.int64)
    if np.any(params < 0):
      raise ValueError("param_counts must be >= 0")
  if param_budget is not None:
    if params is None:
      raise ValueError("param_budget needs param_counts")
    if int(param_budget) <= 0:
      raise ValueError(f"param_budget must be positive (or None), got "
                       f"{param_budget}")
    param_budget = int(param_budget)
    if not np.any(params <= param_budget):
      raise ValueError(f"param_budget={param_budget} is smaller than every "
                       f"block (min {int(params.min())} parameters)")
  return Problem(names, tuple(mats), y, params, param_budget, ridge,
                  criterion, float(rtol)), k


def criterion_value(kernel: Any, criterion: str, targets: Any = None,
                    ridge: float = 0.0) -> float:
  """The criterion of one kernel, exactly (float64): kappa, lambda_min, or A.

  Args:
    kernel: (n, n) symmetric.
    criterion: one of ``CRITERIA``.
    targets: (n,) / (n, C), for ``"max_alignment"``.
    ridge: added to the eigenvalues (spectral criteria only).
  """
  if criterion not in CRITERIA:
    raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
  if criterion == "max_alignment":
    if targets is None:
      raise ValueError("criterion 'max_alignment' needs targets")
    return kernel_target_alignment(kernel, targets)
  eigs = np.linalg.eigvalsh(np.asarray(kernel, dtype=np.float64)) + ridge
  if criterion == "min_kappa":
    return bounds_lib.condition_number(eigs)
  return float(eigs[0])


def loss_and_eigs(prob: Problem, k_sum: np.ndarray):
  """(loss to minimize, criterion value, raw eigenvalues or None)."""
  if prob.criterion == "max_alignment":
    value = kernel_target_alignment(k_sum, prob.targets)
    return -value, value, None
  eigs = np.linalg.eigvalsh(k_sum)
  if prob.criterion == "min_kappa":
    value = bounds_lib.condition_number(eigs + prob.ridge)
    return value, value, eigs
  value = float(eigs[0]) + prob.ridge
  return -value, value, eigs


def block_stats(kernels: Mapping[str, Any], targets: Any = None,
                fx0: Any = None, ridge: float = 0.0,
                param_counts: Optional[Mapping[str, int]] = None) -> dict:
  """Single-block statistics {block: {lambda_min, lambda_max, kappa, ...}}.

  lambda_min / lambda_max / kappa are of ``K_b + ridge I``; ``alignment``
  (with targets, residuals if fx0) and ``trace`` of K_b.
  """
  prob, _ = prepare(kernels, "min_kappa", None, targets, fx0, param_counts,
                    None, ridge, bounds_lib.DEFAULT_RTOL)
  out = {}
  for i, name in enumerate(prob.names):
    kb = prob.kernels[i]
    eigs = np.linalg.eigvalsh(kb) + prob.ridge
    row = {"lambda_min": float(eigs[0]), "lambda_max": float(eigs[-1]),
           "kappa": bounds_lib.condition_number(eigs),
           "trace": float(np.trace(kb))}
    if prob.targets is not None:
      row["alignment"] = kernel_target_alignment(kb, prob.targets)
    if prob.params is not None:
      row["num_params"] = int(prob.params[i])
    out[name] = row
  return out
