"""Weight disentanglement error ξ of two task vectors (Ortiz-Jimenez et al. 2023, Sec. 3).

Ortiz-Jimenez, Favero, Frossard, NeurIPS 2023, *Task arithmetic in the tangent space*:
task vectors τ_1, τ_2 are weight-disentangled when adding them changes each task's
function only on its own inputs. For coefficients (α1, α2),

  ξ(α1, α2) = Σ_{i=1,2} E_{x ∼ D_i} [ dist( f_i(x; φ0 + α_i τ_i), f_i(x; φ0 + α1 τ1 + α2 τ2) ) ]

with dist(y, y') = 1[argmax y ≠ argmax y'] (the paper's prediction error), so
0 ≤ ξ ≤ 2 and ξ(0, 0) = 0. Here each task t_i is evaluated with its own head
(:mod:`ntkft.merge.runs`), and for a regression output (STS-B; our extension)
dist(y, y') = 1[|y − y'| > tol] on output 0.

The outputs come from :class:`ntkft.merge.outputs.MergedOutputs` (either mode):
``single_i = merged(t_i, {t_i: α_i}, split)``, ``both_i = merged(t_i, {t1: α1, t2: α2}, split)``.
"""
from typing import Sequence

import numpy as np


def disagreement(a: np.ndarray, b: np.ndarray, is_regression: bool, tol: float = 0.5) -> float:
  """E_x dist(a(x), b(x)) over the N rows of two (N, O) outputs.

  Classification: the fraction of rows whose argmax differs; regression: the fraction
  with |a[:, 0] − b[:, 0]| > ``tol``.

  Raises:
    ValueError: shapes differ or no rows.
  """
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape or a.ndim != 2 or not len(a):
    raise ValueError(f"disagreement: need two (N, O) outputs of one shape, N >= 1; got "
                     f"{a.shape} and {b.shape}")
  if is_regression:
    return float(np.mean(np.abs(a[:, 0] - b[:, 0]) > tol))
  return float(np.mean(np.argmax(a, -1) != np.argmax(b, -1)))


def disentanglement_error(singles: Sequence[np.ndarray], merged: Sequence[np.ndarray],
                          is_regression: Sequence[bool], tol: float = 0.5) -> float:
  """ξ = Σ_i disagreement(singles[i], merged[i]) over the tasks of the pair.

  Args:
    singles: per task i, (N_i, O_i) outputs of f_i(φ0 + α_i τ_i) on its examples.
    merged: per task i, (N_i, O_i) outputs of f_i(φ0 + α1 τ1 + α2 τ2) on the same examples.
    is_regression: per task i.
    tol: the regression threshold.
  """
  if not len(singles) == len(merged) == len(is_regression):
    raise ValueError(f"disentanglement_error: {len(singles)} singles, {len(merged)} merged, "
                     f"{len(is_regression)} flags; give one of each per task")
  return float(sum(disagreement(s, m, r, tol)
                   for s, m, r in zip(singles, merged, is_regression)))


def mean_off_origin(grid: Sequence[float], xi: np.ndarray) -> float:
  """Mean of a (G, G) ξ grid over (α1, α2) ≠ (0, 0) (ξ(0, 0) = 0 by definition)."""
  grid, xi = np.asarray(grid, float), np.asarray(xi, float)
  if xi.shape != (len(grid), len(grid)):
    raise ValueError(f"mean_off_origin: ξ grid {xi.shape} for {len(grid)} coefficients")
  keep = ~((grid[:, None] == 0) & (grid[None, :] == 0))
  return float(xi[keep].mean())
