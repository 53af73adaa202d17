"""Rank correlations, two-way cluster bootstrap and Holm: known cases."""
import numpy as np
import pytest

from ntkft.evals import cluster_stats as cs


def test_spearman_matches_scipy_and_is_nan_when_undefined():
  x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
  assert cs.spearman(x, y) == pytest.approx(0.8)
  assert np.isnan(cs.spearman([1, 1, 1], [1, 2, 3]))
  assert np.isnan(cs.spearman([1, 2], [1, 2]))


def test_partial_spearman_removes_a_common_cause():
  rng = np.random.default_rng(0)
  z = rng.normal(size=400)
  x, y = z + 0.3 * rng.normal(size=400), z + 0.3 * rng.normal(size=400)
  assert cs.spearman(x, y) > 0.8
  assert abs(cs.partial_spearman(x, y, [z])) < 0.15
  # Without a covariate it is the Pearson correlation of the ranks = Spearman ρ.
  assert cs.partial_spearman(x, y, []) == pytest.approx(cs.spearman(x, y))


def test_two_way_bootstrap_resamples_both_units_with_multiplicity():
  keys = {"t1": [(a, b) for a in range(4) for b in range(3)],
          "t2": [(a, b) for a in range(2) for b in range(5) if (a, b) != (1, 4)]}
  sizes = cs.two_way_bootstrap(lambda s: len(s["t1"]), keys, 50, seed=1)
  assert np.all(sizes == 12)  # full grid: 4 drawn a-units x 3 drawn b-units
  sizes2 = cs.two_way_bootstrap(lambda s: len(s["t2"]), keys, 200, seed=1)
  assert sizes2.max() == 10 and sizes2.min() < 10  # the missing cell is never invented
  # The estimate varies across resamples and is reproducible by seed.
  est = lambda s: np.mean([a + 10 * b for a, b in s["t1"]])
  v1, v2 = (cs.two_way_bootstrap(est, keys, 100, seed=3) for _ in range(2))
  assert np.array_equal(v1, v2) and v1.std() > 0


def test_bootstrap_p_and_percentile_ci():
  assert cs.bootstrap_p(np.ones(100)) == 0.0
  assert cs.bootstrap_p(np.r_[np.ones(90), -np.ones(10)]) == pytest.approx(0.2)
  v = np.arange(1001.0)
  assert cs.percentile_ci(v, 0.9) == pytest.approx([50.0, 950.0])


def test_holm_step_down():
  out = cs.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}, alpha=0.05)
  # Sorted: d 0.005 <= 0.0125, a 0.01 <= 0.0167, c 0.03 > 0.025 -> stop; b not rejected.
  assert [out[k]["rejected"] for k in "dacb"] == [True, True, False, False]
  assert [out[k]["level"] for k in "dacb"] == pytest.approx([0.0125, 0.05 / 3, 0.025, 0.05])
  assert not cs.holm({"a": float("nan")})["a"]["rejected"]


def test_crossed_bootstrap_applies_one_draw_to_every_group():
  grid = [(a, b) for a in range(5) for b in range(3)]
  keys = {"t1": grid, "t2": grid, "t3": grid[:-1]}
  seen = []
  cs.crossed_bootstrap(lambda s: seen.append(s) or 0.0, keys, 30, seed=2)
  assert all(s["t1"] == s["t2"] for s in seen)  # the same units in every group
  assert all(s["t3"] == [c for c in s["t1"] if c != (4, 2)] for s in seen)
  two_way = []
  cs.two_way_bootstrap(lambda s: two_way.append(s) or 0.0, keys, 30, seed=2)
  assert any(s["t1"] != s["t2"] for s in two_way)
  # With one group it is the two-way bootstrap, draw for draw.
  est = lambda s: np.mean([a + 10 * b for a, b in s["t1"]])
  one = {"t1": grid[1:]}
  assert np.array_equal(cs.crossed_bootstrap(est, one, 50, seed=4),
                        cs.two_way_bootstrap(est, one, 50, seed=4))


def test_crossed_bootstrap_variance_in_closed_form():
  """Cell value u_a (a-units only): the estimate is the mean over drawn a of u_a, whose
  bootstrap variance is σ²/A (σ² the population variance). Two groups with u and −u:
  the crossed mean over groups is 0 in every resample; the two-way one is not."""
  u = np.array([0.0, 1.0, 3.0, 4.0, 7.0])
  keys = {"t1": [(a, b) for a in range(5) for b in range(2)]}
  keys["t2"] = keys["t1"]
  group_mean = lambda s, g, sign: np.mean([sign * u[a] for a, _ in s[g]])
  v = cs.crossed_bootstrap(lambda s: group_mean(s, "t1", 1), keys, 4000, seed=0)
  assert v.var() == pytest.approx(u.var() / len(u), rel=0.08)
  both = lambda s: (group_mean(s, "t1", 1) + group_mean(s, "t2", -1)) / 2
  assert np.all(cs.crossed_bootstrap(both, keys, 200, seed=0) == 0)
  assert cs.two_way_bootstrap(both, keys, 200, seed=0).var() > 0.1


def test_crossed_weights_are_the_multiplicities_of_the_resamples():
  keys = {"t1": [(a, b) for a in range(4) for b in range(3)]}
  seen = []
  cs.crossed_bootstrap(lambda s: seen.append(s["t1"]) or 0.0, keys, 25, seed=7)
  w = cs.crossed_weights(4, 3, 25, seed=7)
  for row, cells in zip(w, seen):
    assert [int(row[a * 3 + b]) for a, b in keys["t1"]] == [cells.count(c) for c in keys["t1"]]
  assert w.sum(1).tolist() == [12.0] * 25


def test_weighted_statistics_equal_those_of_the_expanded_sample():
  rng = np.random.default_rng(0)
  for trial in range(40):
    n = int(rng.integers(3, 15))
    x, y = rng.normal(size=n).round(trial % 2), rng.normal(size=n)
    x[0] = np.inf if trial % 5 == 0 else x[0]  # +inf ranks largest
    y[1] = np.nan if trial % 7 == 0 else y[1]  # nan dropped
    depth = rng.integers(0, 4, n).astype(float)
    size = depth + 1 if trial % 4 == 0 else rng.integers(1, 3, n).astype(float)  # collinear
    w = rng.integers(0, 3, (4, n)).astype(float)
    got = (cs.weighted_spearman(x, y, w), cs.weighted_partial_spearman(x, y, [depth, size], w),
           cs.weighted_median(y, w))
    for r in range(4):
      k = np.repeat(np.arange(n), w[r].astype(int))
      k = k[~np.isnan(y[k])]
      want = (cs.spearman(x[k], y[k]), cs.partial_spearman(x[k], y[k], [depth[k], size[k]]),
              np.median(y[k]) if len(k) else np.nan)
      np.testing.assert_allclose([g[r] for g in got], want, atol=1e-12)


def test_weighted_rank_correlations_of_many_predictors_match_one_at_a_time():
  rng = np.random.default_rng(1)
  n = 12
  xs = rng.normal(size=(5, n)).round(1)
  xs[1, 3], xs[2] = np.nan, 4.0  # a missing value; a constant predictor
  xs[3, 0] = np.inf
  y, depth, size = rng.normal(size=n), rng.integers(0, 4, n), rng.integers(1, 3, n)
  w = rng.integers(0, 3, (6, n)).astype(float)
  raw, part = cs.weighted_rank_correlations(xs, y, [depth, size], w)
  for i, x in enumerate(xs):
    np.testing.assert_allclose(raw[i], cs.weighted_spearman(x, y, w), atol=1e-12)
    np.testing.assert_allclose(part[i], cs.weighted_partial_spearman(x, y, [depth, size], w),
                               atol=1e-12)
  assert np.isnan(raw[2]).all() and np.isfinite(raw[0]).any()
