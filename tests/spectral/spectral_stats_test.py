"""Tests for ntkft.spectral.stats and plot: hand-computed diagonal cases."""
import json
import math
import warnings

import numpy as np
import pytest

from ntkft.spectral import (
  condition_number,
  eigvalsh,
  plot_spectrum,
  relative_asymmetry,
  spectrum_stats,
  spectrum_stats_from_eigs,
)


def _no_warnings(fn, *args, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    return fn(*args, **kwargs)


def test_eigvalsh_matches_numpy_ascending_float64():
  rng = np.random.RandomState(0)
  a = rng.normal(size=(7, 7)).astype(np.float32)
  k = a @ a.T
  eigs = eigvalsh(k)
  assert eigs.dtype == np.float64 and eigs.shape == (7,)
  assert np.all(np.diff(eigs) >= 0)
  np.testing.assert_allclose(eigs, np.linalg.eigvalsh(k.astype(np.float64)),
                             rtol=1e-10, atol=1e-10)


def test_identity_stats():
  n = 8
  stats = _no_warnings(spectrum_stats, 3.0 * np.eye(n))
  assert stats["n"] == n
  assert stats["lambda_min"] == pytest.approx(3.0)
  assert stats["lambda_max"] == pytest.approx(3.0)
  assert stats["condition_number"] == pytest.approx(1.0)
  assert stats["lambda_min_below_floor"] is False
  assert stats["trace"] == pytest.approx(3.0 * n)
  assert stats["effective_rank"] == pytest.approx(n)
  assert stats["participation_ratio"] == pytest.approx(n)
  assert stats["decay"]["alpha"] == pytest.approx(0.0, abs=1e-12)
  assert stats["decay"]["r2"] == pytest.approx(1.0)
  assert stats["symmetrized"] is False
  assert stats["relative_asymmetry"] == 0.0
  json.dumps(stats)  # JSON-serializable.


def test_diagonal_stats_hand_computed():
  eigs = np.array([4.0, 1.0, 2.0, 1.0])
  stats = _no_warnings(spectrum_stats, np.diag(eigs))
  assert stats["condition_number"] == pytest.approx(4.0)
  assert stats["trace"] == pytest.approx(8.0)
  p = np.array([0.5, 0.25, 0.125, 0.125])
  want_erank = math.exp(-np.sum(p * np.log(p)))  # = 2^(7/4)
  assert stats["effective_rank"] == pytest.approx(want_erank, rel=1e-12)
  assert stats["effective_rank"] == pytest.approx(2**1.75, rel=1e-12)
  assert stats["participation_ratio"] == pytest.approx(64.0 / 22.0, rel=1e-12)
  # A ridge shifts every eigenvalue: spectrum of K + 1 I.
  stats = _no_warnings(spectrum_stats, np.diag(eigs), ridge=1.0)
  assert stats["lambda_min"] == pytest.approx(2.0)
  assert stats["condition_number"] == pytest.approx(2.5)
  assert stats["trace"] == pytest.approx(12.0)
  assert stats["ridge"] == 1.0


def test_rank_one_effective_rank_one():
  v = np.arange(1.0, 6.0)
  with pytest.warns(UserWarning, match="singular at float precision"):
    stats = spectrum_stats(np.outer(v, v), rel_floor=1e-8)
  assert stats["effective_rank"] == pytest.approx(1.0, abs=1e-6)
  assert stats["participation_ratio"] == pytest.approx(1.0, abs=1e-6)
  assert stats["lambda_min_below_floor"] is True


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_power_law_decay_recovered(alpha):
  n = 40
  eigs = np.arange(1, n + 1, dtype=np.float64)**(-alpha)
  rng = np.random.RandomState(1)
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  k = (q * eigs) @ q.T
  stats = _no_warnings(spectrum_stats, k)
  decay = stats["decay"]
  assert decay["alpha"] == pytest.approx(alpha, rel=1e-8)
  assert decay["r2"] == pytest.approx(1.0, abs=1e-10)
  assert (decay["index_start"], decay["index_end"]) == (1, n // 2)
  assert stats["condition_number"] == pytest.approx(n**alpha, rel=1e-8)


def test_decay_fit_not_perfect_for_exponential_decay():
  eigs = np.exp(-0.5 * np.arange(30))
  decay = spectrum_stats_from_eigs(eigs, decay_fraction=1.0)["decay"]
  assert decay["num_points"] == 30
  assert decay["r2"] < 0.95


def test_nonpositive_lambda_min_gives_infinite_kappa_with_warning():
  eigs = np.array([2.0, 1.0, 0.0, -1e-15])
  with pytest.warns(UserWarning, match="lambda_min") as record:
    stats = spectrum_stats(np.diag(eigs), rel_floor=1e-10)
  assert "2.000e-10" in str(record[0].message)  # names the floor
  assert stats["lambda_min_below_floor"] is True
  assert stats["lambda_min"] == pytest.approx(-1e-15)
  # The one policy (spectral.condition_number): kappa = inf, JSON null.
  assert stats["condition_number"] is None
  assert condition_number(eigs) == math.inf == condition_number(np.diag([1.0, 0.0]).diagonal())
  # Positive eigenvalues only in the entropy: p = (2/3, 1/3).
  p = np.array([2.0, 1.0]) / 3.0
  assert stats["effective_rank"] == pytest.approx(
      math.exp(-np.sum(p * np.log(p))))
  assert stats["num_positive"] == 2
  json.dumps(stats)


def test_tiny_positive_lambda_min_below_floor_is_flagged_not_clamped():
  with pytest.warns(UserWarning, match="dominated by rounding"):
    stats = spectrum_stats(np.diag([1.0, 1e-14]))
  assert stats["condition_number"] == pytest.approx(1e14)
  assert stats["lambda_min_below_floor"] is True
  stats = _no_warnings(spectrum_stats, np.diag([1.0, 1e-6]))
  assert stats["condition_number"] == pytest.approx(1e6)
  assert stats["lambda_min_below_floor"] is False


def test_asymmetric_kernel_requires_symmetrize():
  rng = np.random.RandomState(2)
  jac = rng.normal(size=(5, 12))
  k = jac @ np.sign(jac).T  # the sign/Adam kernel.
  asym = np.linalg.norm(k - k.T) / np.linalg.norm(k)
  assert asym > 1e-3
  with pytest.raises(ValueError, match="not symmetric"):
    spectrum_stats(k)
  with pytest.raises(ValueError, match="not symmetric"):
    eigvalsh(k)
  stats = spectrum_stats(k, symmetrize=True, rel_floor=1e-3)
  assert stats["symmetrized"] is True
  assert stats["relative_asymmetry"] == pytest.approx(asym)
  assert relative_asymmetry(k) == pytest.approx(asym)
  sym_eigs = np.linalg.eigvalsh(0.5 * (k + k.T))
  assert stats["lambda_max"] == pytest.approx(sym_eigs[-1])
  assert stats["lambda_min"] == pytest.approx(sym_eigs[0])
  assert stats["trace"] == pytest.approx(np.trace(k))
  json.dumps(stats)


def test_rounding_level_asymmetry_is_accepted():
  rng = np.random.RandomState(3)
  a = rng.normal(size=(6, 6))
  k = a @ a.T
  k_noisy = k + 1e-9 * rng.normal(size=k.shape)
  stats = spectrum_stats(k_noisy)
  assert stats["lambda_max"] == pytest.approx(np.linalg.eigvalsh(k)[-1],
                                              rel=1e-8)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="square"):
    spectrum_stats(np.ones((2, 3)))
  with pytest.raises(ValueError, match="non-finite"):
    spectrum_stats(np.diag([1.0, np.nan]))
  with pytest.raises(ValueError, match="rel_floor"):
    spectrum_stats(np.eye(2), rel_floor=0.0)


def test_plot_spectrum_writes_png(tmp_path):
  path = tmp_path / "sub" / "spectrum.png"
  eigs = np.concatenate([np.arange(1, 21, dtype=np.float64)**-1.5, [0.0]])
  out = plot_spectrum(eigs, str(path), "test spectrum")
  assert out == str(path)
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  path2 = tmp_path / "overlay.png"
  plot_spectrum({"plain": eigs, "sign": 2 * eigs}, str(path2), "overlay")
  assert path2.read_bytes()[:4] == b"\x89PNG"
