"""experiments.common: Spearman + bootstrap, task lists, figures."""
import math

import numpy as np
import pytest
import scipy.stats

from experiments import common


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 5, size=17).astype(float)      # many ties
  y = x + rng.normal(size=17)
  y[3] = y[4]
  out = common.spearman_ci(x, y, num_boot=200, seed=0)
  ref = scipy.stats.spearmanr(x, y)
  assert out["n"] == 17
  np.testing.assert_allclose(out["rho"], ref.statistic, rtol=1e-12)
  np.testing.assert_allclose(out["p_value"], ref.pvalue, rtol=1e-6)


def test_spearman_known_cases():
  up = common.spearman_ci([1, 2, 3, 10, 20], [0.1, 0.5, 0.6, 0.9, 7.0], num_boot=300)
  assert up["rho"] == pytest.approx(1.0)
  # Every resample of a monotone relation that is not constant has rho = 1.
  assert up["ci95"] == pytest.approx([1.0, 1.0]) and 0 < up["num_boot_valid"] <= 300
  down = common.spearman_ci([1, 2, 3, 4], [4, 3, 2, 1], num_boot=0)
  assert down["rho"] == pytest.approx(-1.0) and math.isnan(down["ci95"][0])
  # inf ranks as the largest value (kappa of a singular kernel); None/nan pairs are dropped.
  inf = common.spearman_ci([1.0, math.inf, 2.0, None, 3.0], [1, 9, 2, 5, 3], num_boot=0)
  assert inf["n"] == 4 and inf["rho"] == pytest.approx(1.0)
  # Undefined: fewer than 3 pairs, or a constant variable.
  assert math.isnan(common.spearman_ci([1, 2], [2, 1])["rho"])
  const = common.spearman_ci([1, 1, 1, 1], [1, 2, 3, 4], num_boot=50)
  assert math.isnan(const["rho"]) and const["num_boot_valid"] == 0
  with pytest.raises(ValueError, match="equal length"):
    common.spearman_ci([1, 2, 3], [1, 2])


def test_spearman_bootstrap_is_seeded_and_brackets_rho():
  rng = np.random.default_rng(5)
  x = rng.normal(size=30)
  y = 0.5 * x + rng.normal(size=30)
  a = common.spearman_ci(x, y, num_boot=1000, seed=3)
  b = common.spearman_ci(x, y, num_boot=1000, seed=3)
  c = common.spearman_ci(x, y, num_boot=1000, seed=4)
  assert a == b and a["ci95"] != c["ci95"]
  lo, hi = a["ci95"]
  assert -1 <= lo < a["rho"] < hi <= 1 and a["num_boot_valid"] == 1000
  # The percentile interval is the quantiles of resampled rho, computed here directly.
  idx = np.random.default_rng(3).integers(0, 30, size=(1000, 30))
  boot = [scipy.stats.spearmanr(x[i], y[i]).statistic for i in idx]
  np.testing.assert_allclose([lo, hi], np.quantile(boot, [0.025, 0.975]), rtol=1e-10)


def test_parse_tasks():
  assert common.parse_tasks("sst2+RTE") == ("sst2", "rte")
  assert common.parse_tasks(("mrpc",)) == ("mrpc",)
  with pytest.raises(ValueError, match="duplicates"):
    common.parse_tasks("sst2+sst2")


def test_draw_figures_calls_each_plot_with_its_path_in_order(tmp_path):
  calls = []

  def plot(width):
    def draw(results, path):
      calls.append((results["tag"], path))
      fig = common.figure(width, 2.0)
      fig.add_subplot(1, 1, 1).plot([1, 2, 3], [3, 1, 2])
      fig.savefig(path)
    return draw

  outdir = tmp_path / "new" / "figures"                      # created on the way
  paths = common.draw_figures({"tag": 7}, outdir, {"b.png": plot(3.0), "a.png": plot(5.0)})
  assert paths == [str(outdir / "b.png"), str(outdir / "a.png")]
  assert calls == [(7, outdir / "b.png"), (7, outdir / "a.png")]
  assert all((outdir / name).stat().st_size > 1000 for name in ("a.png", "b.png"))


def test_figure_has_the_asked_size_at_100_dpi():
  fig = common.figure(4.2, 3.8)
  assert fig.dpi == 100
  np.testing.assert_allclose(fig.get_size_inches(), [4.2, 3.8])
  assert fig.canvas.get_width_height() == (420, 380)
