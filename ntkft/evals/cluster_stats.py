"""Rank correlations with a two-way cluster bootstrap and Holm's correction.

Used by the pre-registered kappa study (docs/preregistration.md §4):

* ``spearman(x, y)``: ``scipy.stats.spearmanr`` (nan when either side is constant);
* ``partial_spearman(x, y, covariates)``: the ranks of x and y each regressed on
  [1, ranks of the covariates], Pearson correlation of the residuals;
* ``two_way_bootstrap(estimate, keys, num_boot, seed)``: the data are cells
  (unit a, unit b), e.g. (layer set, seed), per group (task); each resample
  draws, within every group, the a-units and the b-units independently with
  replacement and keeps every cell (a, b) of the drawn units, with multiplicity;
* ``crossed_bootstrap(estimate, keys, num_boot, seed)``: the same, but the
  a-units and b-units are crossed with the groups (every group has the same
  layer sets and seeds): each resample draws the a-units and the b-units ONCE
  (``crossed_indices``) and applies that draw to every group;
* ``weighted_spearman``, ``weighted_partial_spearman``, ``weighted_median``:
  the statistics of the sample that repeats observation k w[r, k] times, for a
  whole batch of weight rows r at once (a bootstrap resample is such a weight
  row: w[r, (a, b)] = count of a · count of b), equal to ``spearman``,
  ``partial_spearman`` and ``np.median`` of the expanded sample;
  ``weighted_rank_correlations`` does both for many predictors against one outcome;
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


def crossed_indices(num_a: int, num_b: int, num_boot: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The crossed draws: per resample r, ``a[r]`` (num_a indices in [0, num_a)) and
  ``b[r]`` (num_b in [0, num_b)), with replacement, drawn a then b from
  ``np.random.default_rng(seed)`` (the order of ``two_way_bootstrap`` for one group)."""
  rng = np.random.default_rng(seed)
  a = np.empty((num_boot, num_a), int)
  b = np.empty((num_boot, num_b), int)
  for i in range(num_boot):
    a[i] = rng.choice(num_a, num_a)
    b[i] = rng.choice(num_b, num_b)
  return a, b


def crossed_weights(num_a: int, num_b: int, num_boot: int, seed: int = 0) -> np.ndarray:
  """(num_boot, num_a·num_b) multiplicities of the crossed resamples over the a × b grid
  (a-major): w[r, i·num_b + j] = #{i in a[r]} · #{j in b[r]} (``crossed_indices``)."""
  a, b = crossed_indices(num_a, num_b, num_boot, seed)
  counts = lambda idx, m: np.array([np.bincount(r, minlength=m) for r in idx]).reshape(-1, m)
  ca, cb = counts(a, num_a), counts(b, num_b)
  return (ca[:, :, None] * cb[:, None, :]).reshape(num_boot, num_a * num_b).astype(float)


def crossed_bootstrap(estimate: Callable[[Keys], float], keys: Keys, num_boot: int,
                      seed: int = 0) -> np.ndarray:
  """``num_boot`` values of ``estimate`` on crossed cluster resamples of ``keys``.

  The a-units (and b-units) are the union over groups; each resample draws them
  once (``crossed_indices``) and every group keeps every cell (a, b) it has of
  the drawn units, with multiplicity #a·#b. With one group this is
  ``two_way_bootstrap`` draw for draw.
  """
  a_units = sorted({k[0] for ks in keys.values() for k in ks})
  b_units = sorted({k[1] for ks in keys.values() for k in ks})
  present = {g: set(ks) for g, ks in keys.items()}
  a_idx, b_idx = crossed_indices(len(a_units), len(b_units), num_boot, seed)
  out = np.empty(num_boot)
  for i in range(num_boot):
    cells = [(a_units[j], b_units[k]) for j in a_idx[i] for k in b_idx[i]]
    out[i] = estimate({g: [c for c in cells if c in present[g]] for g in keys})
  return out


def _ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(R, n): the average rank of x_k in the sample repeating x_l w[r, l] times,
  #{x_l < x_k} + (#{x_l = x_k} + 1)/2 counted with the weights (inf ranks last)."""
  less = (x[None, :] < x[:, None]).astype(float)  # [k, l] = x_l < x_k
  equal = (x[None, :] == x[:, None]).astype(float)
  return w @ less.T + (w @ equal.T + 1) / 2


def _wmean(v: np.ndarray, w: np.ndarray) -> np.ndarray:
  return (w * v).sum(1) / w.sum(1)


def _wpearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
  da = a - _wmean(a, w)[:, None]
  db = b - _wmean(b, w)[:, None]
  return (w * da * db).sum(1) / np.sqrt((w * da * da).sum(1) * (w * db * db).sum(1))


def _valid_weights(w, *values) -> np.ndarray:
  w = np.atleast_2d(np.asarray(w, float))
  for v in values:
    w = w * ~np.isnan(v)
  return w


def _constant(v: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(R,) whether the values of weight > 0 are all equal."""
  on = w > 0
  return np.where(on, v, np.inf).min(1) == np.where(on, v, -np.inf).max(1)


def weighted_spearman(x: Sequence[float], y: Sequence[float], w: np.ndarray) -> np.ndarray:
  """(R,) ``spearman`` of the sample repeating (x_k, y_k) w[r, k] times.

  Pairs with a nan side are dropped (weight 0); ±inf rank as extreme values.
  nan where fewer than 3 pairs remain or a side is constant.
  """
  x, y = np.asarray(x, float), np.asarray(y, float)
  w = _valid_weights(w, x, y)
  with np.errstate(invalid="ignore", divide="ignore"):
    rho = _wpearson(_ranks(x, w), _ranks(y, w), w)
  bad = (w.sum(1) < 3) | _constant(x, w) | _constant(y, w)
  return np.where(bad, np.nan, rho)


def _centred_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
  r = _ranks(v, w)
  return r - _wmean(r, w)[:, None]


def _residualizer(covariates: list, w: np.ndarray):
  """e -> e − Z (ZᵀWZ)⁺ ZᵀW e per row, Z the covariates' weighted-centred ranks (R, n, k)."""
  if not covariates:
    return lambda e: e
  z = np.stack([_centred_ranks(c, w) for c in covariates], -1)
  inv = np.linalg.pinv(np.einsum("rnk,rn,rnl->rkl", z, w, z), rcond=1e-10, hermitian=True)
  return lambda e: e - np.einsum("...rnk,...rkl,...rl->...rn", z, inv,
                                 np.einsum("rnk,rn,...rn->...rk", z, w, e))


def _zero(e: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Residuals ≡ 0 on the observations of weight > 0 (``np.allclose(e, 0)``)."""
  return np.where(w > 0, np.abs(e), 0).max(-1) <= 1e-8


def weighted_partial_spearman(x: Sequence[float], y: Sequence[float],
                              covariates: Sequence[Sequence[float]],
                              w: np.ndarray) -> np.ndarray:
  """(R,) ``partial_spearman`` of the sample repeating observation k w[r, k] times.

  Within each row: ranks r_x, r_y and the covariates' ranks Z, each centred at
  its weighted mean; residuals e = r − Z (ZᵀWZ)⁺ ZᵀW r (weighted least squares
  on [1, Z]); the weighted Pearson correlation of e_x and e_y. nan where fewer
  than (number of covariates) + 3 observations remain or a residual is ≡ 0.
  """
  x, y = np.asarray(x, float), np.asarray(y, float)
  covariates = [np.asarray(c, float) for c in covariates]
  w = _valid_weights(w, x, y, *covariates)
  with np.errstate(invalid="ignore", divide="ignore"):
    residual = _residualizer(covariates, w)
    ex, ey = residual(_centred_ranks(x, w)), residual(_centred_ranks(y, w))
    rho = _wpearson(ex, ey, w)
  bad = (w.sum(1) < len(covariates) + 3) | _zero(ex, w) | _zero(ey, w)
  return np.where(bad, np.nan, rho)


def weighted_rank_correlations(xs: np.ndarray, y: Sequence[float],
                               covariates: Sequence[Sequence[float]],
                               w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(m, R) ``weighted_spearman`` and ``weighted_partial_spearman`` of each row of ``xs``
  (m, n) with one y: the ranks of y and the covariates and the least-squares projection
  are shared by the rows without nan; a row with nan is computed on its own."""
  xs, y = np.atleast_2d(np.asarray(xs, float)), np.asarray(y, float)
  covariates = [np.asarray(c, float) for c in covariates]
  w = _valid_weights(w, y, *covariates)
  raw = np.empty((len(xs), len(w)))
  part = np.empty((len(xs), len(w)))
  ok = ~np.isnan(xs).any(1)
  for i in np.flatnonzero(~ok):
    raw[i] = weighted_spearman(xs[i], y, w)
    part[i] = weighted_partial_spearman(xs[i], y, covariates, w)
  if ok.any():
    xo = xs[ok]
    less = (xo[:, None, :] < xo[:, :, None]).astype(float)  # [m, k, l] = x_l < x_k
    equal = (xo[:, None, :] == xo[:, :, None]).astype(float)
    rx = np.einsum("rl,mkl->mrk", w, less) + (np.einsum("rl,mkl->mrk", w, equal) + 1) / 2
    total = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
      ex = rx - ((w * rx).sum(-1) / total)[..., None]
      ey = _centred_ranks(y, w)
      pearson = lambda a, b: (w * a * b).sum(-1) / np.sqrt((w * a * a).sum(-1) *
                                                           (w * b * b).sum(-1))
      const_x = np.stack([_constant(x, w) for x in xo])
      small = total < 3
      raw[ok] = np.where(small | const_x | _constant(y, w), np.nan, pearson(ex, ey))
      residual = _residualizer(covariates, w)
      px, py = residual(ex), residual(ey)
      bad = (total < len(covariates) + 3) | _zero(px, w) | _zero(py, w)
      part[ok] = np.where(bad, np.nan, pearson(px, py))
  return raw, part


def weighted_median(v: Sequence[float], w: np.ndarray) -> np.ndarray:
  """(R,) the median of the sample repeating v_k w[r, k] times (non-finite v dropped);
  the mean of the two middle values for an even count; nan for an empty sample."""
  v = np.asarray(v, float)
  w = np.atleast_2d(np.asarray(w, float)) * np.isfinite(v)
  order = np.argsort(np.where(np.isfinite(v), v, np.inf), kind="stable")
  vs, cum = v[order], np.cumsum(w[:, order], 1)
  total = cum[:, -1]
  lo = (cum > ((total - 1) // 2)[:, None]).argmax(1)
  hi = (cum > (total // 2)[:, None]).argmax(1)
  return np.where(total > 0, (vs[lo] + vs[hi]) / 2, np.nan)


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
