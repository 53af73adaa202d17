"""experiments.selection_validation: the selector over K_S + K_head, arms, end to end."""
import itertools
import json

import numpy as np
import pytest

from configs import selection_validation as selection_validation_config
from experiments import layer_study, selection_validation


def _task_kernels(num_layers=6, n=10, seed=0):
  rng = np.random.default_rng(seed)
  kernels = {}
  for i in range(num_layers):
    a = rng.normal(size=(n, 4)) * rng.uniform(0.2, 3.0, size=4)   # rank 4, varied spectra
    kernels[f"layer_{i}"] = a @ a.T
  h = rng.normal(size=(n, n))
  kernels["head"] = 0.3 * h @ h.T
  targets = np.eye(2)[rng.integers(0, 2, n)]
  return {"kernels": kernels, "targets": targets, "fx0": 0.1 * rng.normal(size=(n, 2)),
          "param_counts": {**{f"layer_{i}": 8 for i in range(num_layers)}, "head": 3}}


def test_selector_kernels_sum_to_k_s_plus_head():
  tk = _task_kernels()
  shifted = selection_validation.selector_kernels(tk["kernels"], 6, 2, head=True)
  for i, j in itertools.combinations(range(6), 2):
    np.testing.assert_allclose(shifted[f"layer_{i}"] + shifted[f"layer_{j}"],
                               layer_study.set_kernel(tk["kernels"], (i, j), head=True))
  plain = selection_validation.selector_kernels(tk["kernels"], 6, 2, head=False)
  np.testing.assert_array_equal(plain["layer_3"], tk["kernels"]["layer_3"])


@pytest.mark.parametrize("criterion, key, best", [("min_kappa", "kappa", min),
                                                  ("max_lambda_min", "lambda_min", max),
                                                  ("max_alignment", "alignment", max)])
@pytest.mark.parametrize("search", ["exhaustive", "greedy"])
def test_selector_matches_brute_force(criterion, key, best, search):
  tk = _task_kernels()
  picked = selection_validation.select_layers(tk, 6, 2, True, criterion, search, 0.0, True)
  values = {s: layer_study.set_stats(tk, s, head=True)[key]
            for s in itertools.combinations(range(6), 2)}
  if search == "exhaustive":  # exact over K_S + K_head
    assert tuple(picked["layers"]) == best(values, key=values.get)
  assert picked["value"] == pytest.approx(values[tuple(picked["layers"])], rel=1e-9)
  assert picked["criterion"] == criterion and picked["bound_violations"] == 0
  assert set(picked["other_criteria"]) == {"min_kappa", "max_lambda_min",
                                          "max_alignment"} - {criterion}
  with pytest.raises(ValueError, match="criterion"):
    selection_validation.select_layers(tk, 6, 2, True, "nope", search, 0.0, True)


def test_arm_layers():
  arms = selection_validation.arm_layers((2, 3), 6, 2, num_random=3, seed=0, task="sst2")
  assert list(arms) == ["selector", "last2", "first2", "random1", "random2", "random3"]
  assert arms["selector"] == (2, 3) and arms["last2"] == (4, 5) and arms["first2"] == (0, 1)
  assert len(set(arms.values())) == 6  # random pairs distinct from each other and the rest
  assert all(len(s) == 2 and s[0] < s[1] for s in arms.values())
  assert arms == selection_validation.arm_layers((2, 3), 6, 2, 3, 0, "sst2")  # seeded
  assert any(selection_validation.arm_layers((2, 3), 6, 2, 3, s, "sst2") != arms
             for s in (1, 2, 3))
  # 3 layers, pairs: every pair is taken, so random arms reuse the taken ones.
  small = selection_validation.arm_layers((0, 2), 3, 2, num_random=2, seed=0, task="rte")
  assert {small["random1"], small["random2"]} <= {(0, 1), (1, 2), (0, 2)}


def test_runlocal_end_to_end_and_resume(tmp_path, tiny_layer_study_config, capsys):
  config = tiny_layer_study_config(selection_validation_config, 2)
  config.budget = 1
  config.seeds = (0, 1)
  config.num_random = 1
  work = tmp_path / "w"
  summary = selection_validation.run(config, str(work))
  results = json.loads((work / "results.json").read_text())
  assert set(results) >= {"tasks", "config", "wall_seconds", "machine"}
  out = results["tasks"]["sst2"]
  assert set(out["selector"]) >= {"criterion", "layers", "other_criteria"}
  assert list(out["arms"]) == ["selector", "last1", "first1", "random1"]
  z = np.load(work / "sst2" / "kernels.npz")
  kappas = {}
  for i in range(2):
    eigs = np.linalg.eigvalsh(z[f"block/layer_{i}"] + z["block/head"])
    kappas[i] = eigs[-1] / eigs[0]
  assert out["selector"]["layers"] == [min(kappas, key=kappas.get)]
  for arm in out["arms"].values():
    assert arm["seeds"] == [0, 1] and len(arm["dev_metric"]) == 2 == len(arm["train_loss"])
    assert arm["mean"] == pytest.approx(np.mean(arm["dev_metric"]))
    assert arm["std"] == pytest.approx(np.std(arm["dev_metric"], ddof=1))
    assert arm["kernel"]["kappa"] == pytest.approx(kappas[arm["layers"][0]], rel=1e-8)
  assert out["arms"]["last1"]["layers"] == [1] and out["arms"]["first1"]["layers"] == [0]
  # Coinciding arms share runs: 2 layer sets x 2 seeds were trained.
  assert sorted(p.name for p in (work / "sst2" / "runs").iterdir()) == [
      "L0_s0", "L0_s1", "L1_s0", "L1_s1"]
  assert (work / "selection_validation_arms.png").stat().st_size > 10_000
  assert "| arm | layers | kappa" in capsys.readouterr().out
  assert summary["tasks"]["sst2"]["arms"]["last1"]["mean"] == out["arms"]["last1"]["mean"]
  again = selection_validation.run(config, str(work))
  assert all(s == 0.0 for arm in again["tasks"]["sst2"]["arms"].values()
             for s in arm["run_seconds"])
  assert again["tasks"]["sst2"]["arms"] == {
      k: dict(v, run_seconds=[0.0, 0.0]) for k, v in out["arms"].items()}
