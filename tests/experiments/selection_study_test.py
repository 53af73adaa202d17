"""The selection study: the pre-registered criterion rule and the runlocal sweep."""
import json

from configs import selection_study as selection_config
from experiments import selection_study
from tests.experiments.kappa_study_test import _synthetic_runs


def test_criterion_is_chosen_on_the_heldout_task_by_the_rule(tmp_path):
  runs = _synthetic_runs(tasks=("sst2", "mrpc"))
  # On sst2, dev metric = −κ in regime a at λ = 10 (the cell of smallest lin_gap).
  (tmp_path / "k.json").write_text(json.dumps({"runs": runs}))
  config = selection_config.get_config()
  config.kappa_results = str(tmp_path / "k.json")
  out = selection_study.choose_criterion(config)
  assert (out["regime"], out["lam"], out["direction"]) == ("a", 10.0, "min")
  assert out["stat"] in ("kappa", "lambda_max") and out["rho_on_heldout"] < -0.9
  config.kappa_results = ""
  assert selection_study.choose_criterion(config)["source"].startswith("config fallback")


def test_runlocal_writes_arms_paired_by_seed(tmp_path):
  config = selection_config.get_config("runlocal")
  results = selection_study.run(config, str(tmp_path))
  stored = json.loads((tmp_path / "results.json").read_text())
  arms = stored["arms"]
  assert {(a["seed"], a["arm"]) for a in arms} == {
      (s, arm) for s in (0, 1) for arm in ("selector", "last2", "first2", "random")}
  assert all(a["layers"] and 0 <= a["dev_metric"] <= 1 for a in arms)
  assert {c["arm"] for c in stored["comparisons"]} == {"last2", "first2", "random"}
  assert results["criterion"]["source"].startswith("config fallback")
