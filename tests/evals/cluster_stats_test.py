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
