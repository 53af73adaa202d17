"""End to end: `experiments.lambda_sweep` at runlocal scale on a tiny random BERT."""
import json

import numpy as np
import pytest

from configs import lambda_sweep as lambda_sweep_config
from experiments import lambda_sweep
from tests.test_util import write_tiny_bert_checkpoint


@pytest.mark.slow  # ~35 s unloaded (XLA compiles of BERT's jvp-of-jvp), ~70 s on a busy 2-core box
def test_runlocal_writes_results_and_figures(tmp_path, glue_dir, capsys):
  config = lambda_sweep_config.get_config("runlocal")
  config.model.name = str(write_tiny_bert_checkpoint(tmp_path / "tiny_bert", num_layers=1))
  config.peft.layers = (0,)
  config.lams = (0.0, 0.1, 1.0)
  config.n_train = config.n_eval = 4
  config.steps, config.record_every = 4, 2
  summary = lambda_sweep.run(config, str(tmp_path / "w"))
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  for key in ("task", "lr", "gauss_newton_lmax_over_n", "per_lambda", "table",
              "total_violations", "config"):
    assert key in results, key
  assert [r["lam"] for r in results["table"]] == [0.0, 0.1, 1.0]
  assert results["table"][0]["bound"] is None  # inf at λ = 0 is written as null
  for out, row in zip(results["per_lambda"], results["table"]):
    assert [r["step"] for r in out["records"]] == [0, 2, 4]
    assert out["closed_form_exact"] and out["gd_stable"]  # lr_relative = 0.5 of 2/L
    for m in ("nonlinear", "linearized"):
      assert len(out["per_step"][m]["objective"]) == 5
      assert set(out["checks"][m]) >= {"num_objective_increases", "num_bound_violations"}
    first = out["records"][0]
    assert first["dist_nonlinear"] == 0.0 and first["f_gap_train"] == 0.0
    # float32: the tangent-model run tracks the closed-form kernel trajectory.
    scale = np.sqrt(2 * out["risk0"])
    assert row["cf_gap_train"] < 1e-4 * max(scale, 1.0), row
    assert row["violations"] == out["num_violations"]
  bounded = results["table"][2]
  assert np.isclose(bounded["bound"], np.sqrt(2 * results["per_lambda"][2]["risk0"]))
  for name in ("distances.png", "gaps_vs_lambda.png"):
    assert (tmp_path / "w" / name).stat().st_size > 5000
  printed = capsys.readouterr().out
  assert "dist_nonlinear" in printed and "violations" in printed
  assert summary["total_violations"] == results["total_violations"]


def test_config_defaults_and_bad_optimizer(tmp_path):
  config = lambda_sweep_config.get_config()
  assert config.task == "sst2" and config.optimizer == "sgd" and config.lams[0] == 0.0
  assert lambda_sweep_config.get_config("task=rte,runlocal").task == "rte"
  config.optimizer = "adam"
  with pytest.raises(ValueError, match="sgd"):
    lambda_sweep.run(config, str(tmp_path))
