"""The selection study: the criterion rule, reuse of the kappa points, the §6 verdict."""
import json
import pathlib
import shutil

import ml_collections
import numpy as np
import pytest

from configs import kappa_study as kappa_config
from configs import selection_study as selection_config
from experiments import kappa_study, selection_study
from tests import test_util
from tests.experiments.kappa_study_test import _synthetic

ARMS = ("selector", "first2", "last2", "random")


# --- The criterion (the pre-registered rule on the kappa results) and the verdict. -----------

def _kappa(runs, tasks=("sst2", "mrpc")):
  config = kappa_config.get_config()
  config.tasks = tasks
  return {"workdir": pathlib.Path("k"), "results": {"runs": runs},
          "stored_config": json.loads(config.to_json_best_effort()),
          "config": ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))}


def test_criterion_is_chosen_on_the_heldout_task_by_the_rule():
  runs, _ = _synthetic(tasks=("sst2", "mrpc"))
  # On sst2 only regime a at λ = 10 carries a signal: dev metric = −log κ_λ + noise, with
  # κ_λ ≈ increasing in λmax (λmin ≪ nλ). Its lin_gap ≈ 0.05 (λ = 0: 0.5); regime b's λ = 10
  # cell is made larger so that (a, 10) is the cell of smallest median lin_gap.
  for r in runs:
    if r["regime"] == "b":
      r["lin_gap"] *= 2
    if r["task"] == "mrpc":  # the other tasks do not enter the rule
      r["dev_metric"] = -r["dev_metric"]
  config = selection_config.get_config()
  out = selection_study.choose_criterion(config, _kappa(runs))
  assert (out["regime"], out["lam"], out["direction"]) == ("a", 10.0, "min")
  # All 8 kernels carry the same numbers here: ties go to the first kernel.
  assert (out["kernel"], out["stat"]) == ("plain_flat_head", "lambda_max")
  assert out["rho_on_heldout"] < -0.9 and out["final"] and not out["lacking"]
  # A missing sst2 run in any nonlinear cell leaves the criterion provisional.
  gone = [r for r in runs if not (r["task"] == "sst2" and r["regime"] == "b"
                                  and r["lam"] == 0.0 and r["seed"] == 2
                                  and r["layers"] == [1, 3])]
  out = selection_study.choose_criterion(config, _kappa(gone))
  assert not out["final"] and out["lacking"] == {"sst2/b/λ=0": 1}
  config.criterion_from_kappa = False
  assert selection_study.choose_criterion(config, None)["source"].startswith("config fallback")


def _comparisons(ci_last2, ci_random, rejected=(True, True)):
  rows = []
  for arm, ci, rej in (("last2", ci_last2, rejected[0]), ("first2", [-1.0, 1.0], False),
                       ("random", ci_random, rejected[1])):
    rows.append({"task": "pooled", "arm": arm, "n": 18, "mean_difference": float(np.mean(ci)),
                 "ci": ci, "holm_rejected": rej})
  return rows


def test_verdict_rule():
  verdict = lambda *a, complete=True, **kw: selection_study.verdict_of(
      _comparisons(*a, **kw), complete, ["rte seed 1: kappa point x not produced yet"])
  v = verdict([0.01, 0.05], [0.02, 0.04])
  assert v["verdict"] == "supported"
  assert v["estimate"] == pytest.approx({"last2": 0.03, "random": 0.03})
  assert v["ci"] == {"last2": [0.01, 0.05], "random": [0.02, 0.04]}
  assert verdict([0.01, 0.05], [-0.01, 0.04])["verdict"] == "undecided"  # §6 not met
  assert verdict([0.01, 0.05], [0.02, 0.04], rejected=(True, False))["verdict"] == "undecided"
  v = verdict([-0.05, -0.01], [0.02, 0.04])  # the selector worse than last-2
  assert v["verdict"] == "refuted" and "last2" in v["reason"]
  assert verdict([-0.05, 0.01], [-0.04, -0.02])["verdict"] == "refuted"
  v = verdict([0.01, 0.05], [0.02, 0.04], complete=False)
  assert v["verdict"] == "undecided" and v["reason"].startswith("incomplete: rte seed 1")
  assert v["estimate"] is None and v["ci"] is None


def test_comparisons_pair_by_seed_and_skip_absent_units():
  config = selection_config.get_config()
  config.tasks, config.seeds, config.num_boot = ("mrpc", "rte"), (0, 1, 2), 50
  rng = np.random.default_rng(0)
  arms = [{"task": t, "seed": s, "arm": a, "dev_metric": float(rng.uniform())}
          for t in config.tasks for s in config.seeds for a in ARMS if (t, s) != ("rte", 1)]
  value = {(a["task"], a["seed"], a["arm"]): a["dev_metric"] for a in arms}
  out = {(c["task"], c["arm"]): c for c in selection_study.compare(config, arms)}
  assert set(out) == {(t, a) for t in ("mrpc", "rte", "pooled") for a in ARMS[1:]}
  units = [(t, s) for t in config.tasks for s in config.seeds if (t, s) != ("rte", 1)]
  for arm in ARMS[1:]:
    c = out[("pooled", arm)]
    assert c["n"] == 5 and c["mean_difference"] == pytest.approx(
        np.mean([value[(t, s, "selector")] - value[(t, s, arm)] for t, s in units]))
    assert out[("rte", arm)]["n"] == 2
    assert c["ci"][0] <= c["ci"][1] and c["holm_level"] in (0.05 / 3, 0.025, 0.05)


# --- End to end: runlocal, with a kappa runlocal workdir over the same task and pairs. --------
# Both studies fine-tune a random 6-layer BERT of width 16 (MiniLM's depth and programs, not its
# FLOPs) and share one compilation cache, so the selection study's seed-1 points read back the
# programs the kappa study compiled for seed 0.

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return test_util.tiny_bert_for_glue_runs(tmp_path_factory.mktemp("tiny"), num_layers=6)


def _runlocal(model_dir, kappa_workdir=None):
  """The selection study's runlocal config on the tiny BERT in ``model_dir``, reusing the
  kappa workdir ``kappa_workdir`` (None: the config's, i.e. none)."""
  config = selection_config.get_config("runlocal")
  config.finetune.model.name = str(model_dir)
  if kappa_workdir is not None:
    config.kappa_workdir = str(kappa_workdir)
  return config


def _kappa_runlocal(selection):
  """The kappa study's runlocal config on the selection runlocal's model, task, pairs,
  regime, λ and seed 0 (seed 1 is then new to the selection study)."""
  k = kappa_config.get_config("runlocal")
  k.finetune.model.name = selection.finetune.model.name
  k.tasks = selection.tasks
  k.layer_sets = selection.pairs
  k.regimes = (selection.regime,)
  k.lams = (selection.lam,)
  k.tangent.tasks = ()
  k.seeds = (0,)
  return k


@pytest.fixture(scope="module")
def studies(tmp_path_factory, model_dir, xla_cache):
  """(kappa workdir, its point files' mtimes, selection workdir, selection results)."""
  config = _runlocal(model_dir)
  kdir = tmp_path_factory.mktemp("kappa")
  kappa_study.run(_kappa_runlocal(config), str(kdir))
  mtimes = {p.name: p.stat().st_mtime_ns for p in (kdir / "points").iterdir()}
  config.kappa_workdir = str(kdir)
  sdir = tmp_path_factory.mktemp("selection")
  return kdir, mtimes, sdir, selection_study.run(config, str(sdir))


def test_runlocal_reuses_kappa_points_and_computes_only_new_seeds(studies, model_dir):
  kdir, mtimes, sdir, results = studies
  stored = json.loads((sdir / "results.json").read_text())
  assert stored["complete"] and not stored["missing"]
  assert stored["criterion"]["source"].startswith("config fallback")
  arms = {(a["seed"], a["arm"]): a for a in stored["arms"]}
  assert set(arms) == {(s, arm) for s in (0, 1) for arm in ARMS}
  for (seed, _), a in arms.items():
    assert a["source"] == ("kappa_study" if seed == 0 else "selection_study")
    home = kdir if seed == 0 else sdir
    outs = [json.loads((home / "points" / f"{pid}.json").read_text()) for pid in a["points"]]
    assert a["dev_metric"] == float(np.mean([o["dev_metric"] for o in outs]))
    assert 0 <= a["dev_metric"] <= 1
  # Seed 0 is read from the kappa workdir, untouched; only seed 1 is computed here, and
  # its kernel point is a kappa-study kernel point.
  assert {p.name: p.stat().st_mtime_ns for p in (kdir / "points").iterdir()} == mtimes
  own = sorted(p.name for p in (sdir / "points").iterdir())
  assert own and all("_s1" in name for name in own) and "kernel_mrpc_s1.json" in own
  k1 = json.loads((sdir / "points" / "kernel_mrpc_s1.json").read_text())
  k0 = json.loads((kdir / "points" / "kernel_mrpc_s0.json").read_text())
  assert set(k1) == set(k0) and set(k1["sets"]) == set(k0["sets"]) == {"L0-1", "L2-3", "L4-5"}
  assert results["points_computed"] == len(own)
  assert {c["arm"] for c in stored["comparisons"]} == {"last2", "first2", "random"}
  assert stored["verdict"]["verdict"] in ("supported", "refuted", "undecided")
  assert set(stored["verdict"]["estimate"]) == {"last2", "random"}
  # Resumable: a rerun computes nothing and gives the same arms.
  again = selection_study.run(_runlocal(model_dir, kdir), str(sdir))
  assert again["points_computed"] == 0 and again["arms"] == stored["arms"]


def test_missing_kappa_point_is_not_computed_and_leaves_the_study_incomplete(studies, model_dir,
                                                                            tmp_path):
  kdir, _, sdir, _ = studies
  kcopy, scopy = tmp_path / "kappa", tmp_path / "selection"
  shutil.copytree(kdir / "points", kcopy / "points")
  shutil.copy(kdir / "results.json", kcopy / "results.json")
  shutil.copytree(sdir / "points", scopy / "points")
  gone = kappa_study.run_id("mrpc", (4, 5), 0, "b", 0.0, "nonlinear")
  (kcopy / "points" / f"{gone}.json").unlink()
  out = selection_study.run(_runlocal(model_dir, kcopy), str(scopy))
  assert out["points_computed"] == 0 and not (kcopy / "points" / f"{gone}.json").exists()
  assert not (scopy / "points" / f"{gone}.json").exists()
  assert not out["complete"] and out["missing"] == [
      f"mrpc seed 0: kappa point {gone} not produced yet"]
  assert {a["seed"] for a in out["arms"]} == {1}
  assert out["verdict"]["verdict"] == "undecided"
  assert out["verdict"]["reason"].startswith("incomplete: mrpc seed 0")


def test_refuses_settings_that_differ_from_the_kappa_study(studies, model_dir, tmp_path):
  kdir = studies[0]
  config = _runlocal(model_dir, kdir)
  config.finetune.train.steps = 5
  with pytest.raises(ValueError, match=r"differ from the kappa study's .* in finetune:"):
    selection_study.run(config, str(tmp_path))
  config = _runlocal(model_dir, kdir)
  config.pairs = ((0, 1), (1, 2), (4, 5))
  with pytest.raises(ValueError, match=r"pairs \[\(1, 2\)\] are not layer sets"):
    selection_study.run(config, str(tmp_path))
  config = _runlocal(model_dir, kdir)
  config.lam = 10.0
  with pytest.raises(ValueError, match="is not a cell of the kappa study"):
    selection_study.run(config, str(tmp_path))
  config.criterion_from_kappa = True  # the kappa runlocal has no sst2 runs
  with pytest.raises(ValueError, match="no sst2 runs"):
    selection_study.run(config, str(tmp_path))
  config = _runlocal(model_dir)  # no kappa workdir: own kernel points
  config.layer_sets = ((0, 1), (4, 5))
  with pytest.raises(ValueError, match=r"pairs \[\(2, 3\)\] are not among layer_sets"):
    selection_study.run(config, str(tmp_path))
  assert not list((tmp_path / "points").iterdir())
