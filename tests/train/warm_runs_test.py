"""WarmRuns: the studies' in-memory runs equal ntkft.train.loop's runs of the same config."""
import json

import numpy as np
import pytest

from configs import kappa_study as kappa_config
from experiments import kappa_study
from ntkft.train import loop
from ntkft.train.warm_runs import WarmRuns
from tests import test_util


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """The kappa study's runlocal settings on a tiny 3-layer BERT (fresh head)."""
  folder = tmp_path_factory.mktemp("warm")
  model = test_util.write_tiny_bert_checkpoint(folder / "bert", num_layers=3, hidden=16)
  config = kappa_config.get_config("runlocal")
  config.finetune.model.name = str(model)
  config.finetune.model.load_head = False
  config.finetune.train.steps = 6
  config.finetune.train.log_every = 2
  return config, WarmRuns(kappa_study.run_config(config, "sst2", (0,), 0)), folder


@pytest.mark.parametrize("layers,regime,lam,mode", [
    ((1,), "a", 10.0, "nonlinear"),   # SGD, η as an argument, the pull on
    ((0, 2), "b", 0.0, "nonlinear"),  # Adam with warmup/decay and clipping
    ((2,), "a", 0.0, "linearized"),   # the tangent model
])
def test_warm_run_equals_loop_run(study, layers, regime, lam, mode):
  config, group, folder = study
  c = kappa_study.run_config(config, "sst2", layers, 0, regime, lam, mode,
                             lr=0.5 if regime == "a" else None)
  got = group.run(c)
  want = loop.run(c, str(folder / f"loop_{kappa_study.label(layers)}_{regime}_{mode}"))
  assert got["steps"] == want["steps"] == 6 and not got["diverged"]
  assert got["num_trainable"] == want["num_trainable"]
  for key in ("train_loss", "param_distance", "dev_metric"):
    test_util.assert_close(np.float64(got[key]), np.float64(want[key]), rtol=1e-4,
                           err_msg=key)
  if mode == "nonlinear":
    test_util.assert_close(np.float64(got["lin_gap"]), np.float64(want["lin_gap"]), rtol=1e-3)
  else:
    assert got["lin_gap"] is None
  logged = [json.loads(line) for line in
            (folder / f"loop_{kappa_study.label(layers)}_{regime}_{mode}" / "metrics.jsonl")
            .read_text().splitlines()]
  want_curve = [(r["step"], r["loss"]) for r in logged if r["split"] == "train"]
  assert [s for s, _ in got["curve"]] == [s for s, _ in want_curve] == [2, 4, 6]
  test_util.assert_close(np.array([l for _, l in got["curve"]]),
                         np.array([l for _, l in want_curve]), rtol=1e-4)


def test_diverged_run_keeps_its_last_finite_state(study):
  config, group, _ = study
  c = kappa_study.run_config(config, "sst2", (2,), 0, "a", 0.0, "nonlinear", lr=1e8)
  out = group.run(c)
  assert out["diverged"] and out["steps"] == out["diverged_step"] < 6
  # Outcomes of the last state whose loss and parameters were finite (its full-pass
  # loss may still overflow); the curve holds only finite losses.
  assert np.isfinite(out["dev_metric"]) and not np.isnan(out["param_distance"])
  assert all(np.isfinite(l) for _, l in out["curve"])


def test_group_fields_and_layers_are_checked(study):
  config, group, _ = study
  with pytest.raises(ValueError, match="differs from its group in 'seed'"):
    group.run(kappa_study.run_config(config, "sst2", (1,), 1))
  with pytest.raises(ValueError, match="layer index 7 out of range"):
    group.split((7,))
