"""The pre-registered kappa study: the sweep, its resumption and the verdict rules."""
import json

import numpy as np
import pytest

from configs import kappa_study as kappa_config
from experiments import kappa_analysis, kappa_study

RUN_KEYS = {"task", "layers", "seed", "lam", "regime", "train_loss", "dev_metric", "lin_gap",
            "predictors", "plateaued", "curve"}


def test_full_design_matches_the_preregistration():
  config = kappa_config.get_config()
  plan = kappa_study.points(config)
  kinds = [p["kind"] for p in plan]
  assert kinds.count("kernel") == 4 * 11 * 3
  runs = [p for p in plan if p["kind"] == "run"]
  assert sum(p["mode"] == "nonlinear" for p in runs) == 792
  assert sum(p["mode"] == "linearized" for p in runs) == 33
  assert len({p["id"] for p in plan}) == len(plan)
  # Seed-major: every seed-0 point comes before any seed-1 point.
  seeds = [p["seed"] for p in plan]
  assert seeds == sorted(seeds)


def test_plateau_check():
  flat = [(s, 10.0 / s) for s in range(8, 97, 8)]
  assert not kappa_study.plateau(flat, 24, 0.05, 0.005)  # still falling as 1/s
  settled = [(s, 0.3 + 1e-4 * (96 - s)) for s in range(8, 97, 8)]
  assert kappa_study.plateau(settled, 24, 0.05, 0.005)
  assert not kappa_study.plateau([(8, 1.0)], 24, 0.05, 0.005)  # too short to tell


def _synthetic_runs(tasks=("t1", "t2", "t3", "t4"), sign=1.0, seed=0):
  """κ unrelated to depth; train loss follows κ (sign) at λ = 10 only; dev follows −κ."""
  rng = np.random.default_rng(seed)
  sets = [(i,) for i in range(6)] + [(i, i + 1) for i in range(5)]
  runs = []
  for task in tasks:
    kappa = {s: rng.uniform(1, 100) for s in sets}
    for s in sets:
      for seed_ in range(3):
        k = kappa[s] * (1 + 0.01 * rng.normal())
        for regime in ("a", "b"):
          for lam in (0.0, 10.0):
            follows = regime == "a" and lam == 10.0
            loss = sign * k + 2 * rng.normal() if follows else rng.normal()
            pred = {n: {"kappa": k, "lambda_min": 1.0, "lambda_max": k,
                        "effective_rank": 1.0, "alignment": 0.1}
                    for n in ("plain_flat_head", "sign_flat_head")}
            runs.append({"task": task, "layers": list(s), "seed": seed_, "lam": lam,
                         "regime": regime, "mode": "nonlinear", "depth": max(s),
                         "size": len(s), "train_loss": loss,
                         "dev_metric": -k if follows else rng.normal(),
                         "lin_gap": 0.05 if lam == 10.0 else 0.5, "plateaued": True,
                         "predictors": pred})
  return runs


@pytest.fixture(scope="module")
def small_config():
  config = kappa_config.get_config()
  config.num_boot = 200
  return config


def test_verdicts_follow_the_preregistered_rules(small_config):
  out = {v["hypothesis"]: v for v in kappa_analysis.verdicts(
      small_config, kappa_analysis.cell_table(_synthetic_runs()), complete=True)}
  assert out["H1"]["lambda_star"] == {t: 10.0 for t in ("t1", "t2", "t3", "t4")}
  assert out["H1"]["verdict"] == "supported" and out["H1"]["estimate"] > 0.9
  assert out["H2"]["verdict"] == "supported"
  assert out["H4"]["verdict"] == "supported"
  assert out["H3"]["verdict"] in ("refuted", "undecided")  # regime b: loss unrelated to κ
  flipped = {v["hypothesis"]: v for v in kappa_analysis.verdicts(
      small_config, kappa_analysis.cell_table(_synthetic_runs(sign=-1.0)), complete=True)}
  assert flipped["H1"]["verdict"] == "refuted"


def test_gates_make_verdicts_undecided():
  small_config = kappa_config.get_config()
  small_config.num_boot = 20
  runs = _synthetic_runs()
  for r in runs:
    r["plateaued"] = False
  out = kappa_analysis.verdicts(small_config, kappa_analysis.cell_table(runs), complete=True)
  assert all(v["verdict"] == "undecided" and "plateau" in v["reason"] for v in out)
  incomplete = kappa_analysis.verdicts(small_config, kappa_analysis.cell_table(runs), False)
  assert all(v["estimate"] is None and v["verdict"] == "undecided" for v in incomplete)


def test_runlocal_writes_results_and_resumes(tmp_path):
  config = kappa_config.get_config("runlocal")
  results = kappa_study.run(config, str(tmp_path))
  assert results["complete"] and results["points_done"] == results["points_total"] == 20
  stored = json.loads((tmp_path / "results.json").read_text())
  assert len(stored["runs"]) == 16
  for r in stored["runs"]:
    assert RUN_KEYS <= set(r)
    assert set(r["predictors"]) == {f"{k}_{l}_{h}" for k in ("plain", "sign")
                                    for l in ("flat", "traced") for h in ("head", "nohead")}
    assert r["lin_gap"] is not None and r["lin_gap"] >= 0
  assert [v["hypothesis"] for v in stored["verdicts"]] == ["H1", "H2", "H3", "H4"]
  for v in stored["verdicts"]:
    assert {"hypothesis", "prediction", "estimate", "ci", "verdict"} <= set(v)
    assert v["verdict"] in ("supported", "refuted", "undecided")
  # Interrupted after all but one point: a rerun computes only that point.
  points = tmp_path / "points"
  victim = points / f"{kappa_study.run_id('sst2', (5,), 1, 'b', 10.0, 'nonlinear')}.json"
  victim.unlink()
  before = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  again = kappa_study.run(config, str(tmp_path))
  after = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  assert victim.exists() and {k for k in after if after[k] != before.get(k)} == {victim.name}
  assert again["complete"]
