"""Rank correlations with a two-way cluster bootstrap and Holm's correction.

Used by the pre-registered kappa study (docs/preregistration.md §4):

* ``spearman(x, y)``: ``scipy.stats.spearmanr`` (nan when either side is constant);
* ``partial_spearman(x, y, covariates)``: the ranks of x and y each regressed on
  [1, ranks of the covariates], Pearson correlation of the residuals;
* ``two_way_bootstrap(estimate, keys, num_boot, seed)``: the data are cells
  (unit a, unit b), e.g. (layer set, seed), per group (task); each resample
  draws, within every group, the a-units and the b-units independently with
  replacement and keeps every cell (a, b) of the drawn units, with multiplicity;
* ``bootstrap_p``: 2·min(P*(est ≤ 0), P*(est ≥ 0));
* ``holm(p, alpha)``: per hypothesis, its step-down level α/(m − rank) and
  whether Holm rejects it.
"""
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman ρ of paired samples; nan if fewer than 3 pairs or a constant side."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan")
  return float(stats.spearmanr(x, y).statistic)


def partial_spearman(x: Sequence[float], y: Sequence[float],
                     covariates: Sequence[Sequence[float]]) -> float:
  """Spearman ρ of x and y controlling ``covariates`` (each a sequence like x)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  design = np.column_stack([np.ones(len(x))] + [stats.rankdata(c) for c in covariates])

  def residual(v):
    r = stats.rankdata(v)
    return r - design @ np.linalg.lstsq(design, r, rcond=None)[0]

  rx, ry = residual(x), residual(y)
  if len(x) < design.shape[1] + 2 or np.allclose(rx, 0) or np.allclose(ry, 0):
    return float("nan")
  return float(stats.pearsonr(rx, ry).statistic)


Keys = Mapping[str, Sequence[tuple]]  # group -> cells (unit a, unit b)


def two_way_bootstrap(estimate: Callable[[Keys], float], keys: Keys, num_boot: int,
                      seed: int = 0) -> np.ndarray:
  """``num_boot`` values of ``estimate`` on two-way cluster resamples of ``keys``.

  Args:
    estimate: maps {group: list of (a, b) cells, repeats allowed} to a number.
    keys: the observed cells per group.
    num_boot: resamples.
    seed: of ``np.random.default_rng``.
  """
  rng = np.random.default_rng(seed)
  units = {g: (sorted({k[0] for k in ks}), sorted({k[1] for k in ks}))
           for g, ks in keys.items()}
  present = {g: set(ks) for g, ks in keys.items()}
  out = np.empty(num_boot)
  for i in range(num_boot):
    sample = {}
    for g, (a_units, b_units) in units.items():
      a = rng.choice(len(a_units), len(a_units))
      b = rng.choice(len(b_units), len(b_units))
      sample[g] = [(a_units[j], b_units[k]) for j in a for k in b
                   if (a_units[j], b_units[k]) in present[g]]
    out[i] = estimate(sample)
  return out


def bootstrap_p(values: np.ndarray) -> float:
  """Two-sided bootstrap p-value of ``est = 0``: 2·min(P*(≤ 0), P*(≥ 0)), capped at 1."""
  v = np.asarray(values, float)
  v = v[np.isfinite(v)]
  if not len(v):
    return float("nan")
  return float(min(1.0, 2 * min(np.mean(v <= 0), np.mean(v >= 0))))


def percentile_ci(values: np.ndarray, level: float) -> list[float]:
  """[lo, hi] percentile interval at ``level`` (e.g. 0.95) of the finite values."""
  v = np.asarray(values, float)
  v = v[np.isfinite(v)]
  if not len(v):
    return [float("nan"), float("nan")]
  tail = 100 * (1 - level) / 2
  return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict:
  """Holm step-down: {name: {"level": α/(m − rank), "rejected": bool}}.

  Hypotheses with a nan p-value are never rejected and end the step-down.
  """
  m = len(p_values)
  order = sorted(p_values, key=lambda k: (np.isnan(p_values[k]), p_values[k]))
  out, going = {}, True
  for rank, name in enumerate(order):
    level = alpha / (m - rank)
    p = p_values[name]
    going = going and bool(np.isfinite(p) and p <= level)
    out[name] = {"level": level, "rejected": going}
  return out
