"""experiments.layer_study: K_S statistics, layer sets, run configs."""
import math

import numpy as np
import pytest

from configs import spectrum_correlation as spectrum_correlation_config
from experiments import layer_study
from ntkft import peft, records

# ------------------------------------------------------------- K_S statistics


def _psd(rng, n, rank=None):
  a = rng.normal(size=(n, rank or n))
  return a @ a.T


def test_kernel_stats_against_eigh():
  rng = np.random.default_rng(0)
  k = _psd(rng, 12)
  y = np.eye(2)[rng.integers(0, 2, 12)]
  fx0 = 0.1 * rng.normal(size=(12, 2))
  out = layer_study.kernel_stats(k, y, fx0)
  eigs = np.linalg.eigh(k)[0]
  p = eigs / eigs.sum()
  r = y - fx0
  np.testing.assert_allclose(out["lambda_min"], eigs[0], rtol=1e-10)
  np.testing.assert_allclose(out["lambda_max"], eigs[-1], rtol=1e-12)
  np.testing.assert_allclose(out["kappa"], eigs[-1] / eigs[0], rtol=1e-10)
  np.testing.assert_allclose(out["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-12)
  np.testing.assert_allclose(out["trace"], np.trace(k), rtol=1e-12)
  np.testing.assert_allclose(out["alignment"], np.trace(r.T @ k @ r)
                             / (np.linalg.norm(k) * np.sum(r * r)), rtol=1e-12)
  # Closed forms: c·I has kappa 1 and effective rank n; rank one has effective rank 1.
  eye = layer_study.kernel_stats(3.0 * np.eye(7))
  assert eye["kappa"] == pytest.approx(1.0) and eye["effective_rank"] == pytest.approx(7.0)
  assert "alignment" not in eye
  v = rng.normal(size=(6, 1))
  rank_one = layer_study.kernel_stats(v @ v.T)
  assert rank_one["effective_rank"] == pytest.approx(1.0, abs=1e-6)
  assert rank_one["kappa"] == math.inf or rank_one["kappa"] > 1e12  # singular


def test_set_kernel_and_set_stats():
  rng = np.random.default_rng(1)
  kernels = {f"layer_{i}": _psd(rng, 8, 5) for i in range(3)}  # rank 5 each
  kernels["head"] = _psd(rng, 8)
  y = np.eye(2)[rng.integers(0, 2, 8)]
  tk = {"kernels": kernels, "targets": y, "fx0": np.zeros((8, 2)),
        "param_counts": {"layer_0": 10, "layer_1": 20, "layer_2": 40, "head": 5}}
  k_s = layer_study.set_kernel(kernels, (0, 2), head=True)
  np.testing.assert_allclose(k_s, kernels["layer_0"] + kernels["layer_2"] + kernels["head"])
  row = layer_study.set_stats(tk, (0, 2), head=True)
  eigs = np.linalg.eigvalsh(k_s)
  np.testing.assert_allclose(row["kappa"], eigs[-1] / eigs[0], rtol=1e-9)
  np.testing.assert_allclose(row["lambda_min"], eigs[0], rtol=1e-9)
  layers_only = np.linalg.eigvalsh(kernels["layer_0"] + kernels["layer_2"])  # rank 8
  np.testing.assert_allclose(row["kappa_layers_only"], layers_only[-1] / layers_only[0],
                             rtol=1e-9)
  assert row["num_params"] == 55
  assert layer_study.set_stats(tk, (1,), head=False)["num_params"] == 20
  with pytest.raises(ValueError, match="layer_5"):
    layer_study.set_kernel(kernels, (5,), head=True)


# ----------------------------------------------------- configs and helpers


def test_finetune_config_applies_overrides():
  f = spectrum_correlation_config.finetune_settings(runlocal=False)
  config = layer_study.finetune_config(f, "rte", (4, 5), seed=2)
  assert config.task == "rte" and config.seed == 2 and config.mode == "nonlinear"
  assert config.data.kshot == "512-13" and config.data.eval_split == "test"
  assert config.train.steps == f.train.steps and config.optim.lr == f.optim.lr
  assert peft.PeftSpec.from_config(config.peft).layers == (4, 5)
  assert peft.PeftSpec.from_config(
      layer_study.finetune_config(f, "rte", (3,), 0).peft).layers == (3,)
  f.data.no_such_field = 1
  with pytest.raises(ValueError, match="no_such_field"):
    layer_study.finetune_config(f, "rte", (4,), 0)


def test_layer_sets_and_json():
  assert layer_study.singles_and_adjacent_pairs(3) == [(0,), (1,), (2,), (0, 1), (1, 2)]
  assert layer_study.check_layer_sets([(2, 1), (0,)], 3) == [(1, 2), (0,)]
  for bad in ([(3,)], [()], [(1, 1)], [(0,), (0,)]):
    with pytest.raises(ValueError):
      layer_study.check_layer_sets(bad, 3)
  assert records.jsonable({"a": [math.inf, np.float32(1.5), np.int64(3)], "b": math.nan}) == {
      "a": [None, 1.5, 3], "b": None}


def test_config_arguments():
  c = spectrum_correlation_config.get_config()
  assert c.tasks == ("sst2", "mrpc", "qnli") and c.layer_sets == ()
  assert spectrum_correlation_config.get_config("tasks=sst2+rte").tasks == ("sst2", "rte")
  local = spectrum_correlation_config.get_config("runlocal,task=mrpc")
  assert local.tasks == ("mrpc",) and local.finetune.train.steps < c.finetune.train.steps
