"""Choosing the merge coefficient α on held-out validation examples (never on dev).

As gortizji/tangent_task_arithmetic ``eval_task_addition.py`` (after Ilharco et al. 2023):
for a task subset S and a grid of α, the validation metric v_t(α) of each merged
task is normalized by the task's own fine-tuned validation metric, and the α with
the best mean is kept, then evaluated once on dev:

  score(α) = mean_{t∈S} v_t(α) / max(v_t^single, floor),    α* = argmax score (ties: smaller α)

The ``floor`` keeps a near-zero (or negative: Matthews, Pearson) single-task metric from
blowing the ratio up. Task negation (Ilharco et al.) keeps instead the largest α whose
mean normalized control metric stays at or above a threshold (:func:`negation_alpha`).
"""
from typing import Sequence

import numpy as np


def normalized(value: float, single: float, floor: float) -> float:
  """value / max(single, floor)."""
  if floor <= 0:
    raise ValueError(f"normalized: floor={floor} must be > 0")
  return float(value) / max(float(single), floor)


def best_alpha(grid: Sequence[float], scores: Sequence[float]) -> float:
  """The α of ``grid`` with the highest score; ties (and nan scores, never best) go to the
  smaller α.

  Raises:
    ValueError: empty or mismatched inputs, or every score nan.
  """
  grid, scores = np.asarray(grid, float), np.asarray(scores, float)
  if not len(grid) or grid.shape != scores.shape:
    raise ValueError(f"best_alpha: {len(grid)} coefficients, {len(scores)} scores")
  if np.all(np.isnan(scores)):
    raise ValueError("best_alpha: every score is nan")
  best = np.nanmax(scores)
  return float(np.min(grid[scores == best]))


def negation_alpha(grid: Sequence[float], control_scores: Sequence[float],
                   threshold: float) -> float:
  """The largest α of ``grid`` whose control score is ≥ ``threshold``; the smallest α of the
  grid if none is."""
  grid, scores = np.asarray(grid, float), np.asarray(control_scores, float)
  if not len(grid) or grid.shape != scores.shape:
    raise ValueError(f"negation_alpha: {len(grid)} coefficients, {len(scores)} scores")
  ok = grid[scores >= threshold]
  return float(ok.max()) if len(ok) else float(grid.min())
