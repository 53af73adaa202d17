"""`python -m ntkft.kernel_fit` at runlocal scale (SST-2 16-shot split) on a random BERT."""
import json

import pytest

from configs import kernel_fit as kernel_fit_config
from ntkft import kernel_fit
from ntkft.kernel import classifiers
from tests import test_util


def test_runlocal_writes_each_solvers_dev_metric(tmp_path):
  """The runlocal fit on a random 6-layer BERT of width 16 (MiniLM's depth: LoRA on its
  layers 4 and 5), not MiniLM's FLOPs."""
  config = kernel_fit_config.get_config("runlocal")
  width = 16  # the hidden size of tiny_bert_for_glue_runs
  config.model.name = str(test_util.tiny_bert_for_glue_runs(tmp_path / "tiny", num_layers=6))
  config.data.n_eval = 24
  kernel_fit.run(config, str(tmp_path / "w"))
  summary = json.loads((tmp_path / "w" / "kernel_fit.json").read_text())
  assert summary["n_train"] == 32 and summary["n_eval"] == 24  # 16 per class, 2 classes
  # LoRA r=8 (A and B) on query and value of 2 layers, + the head (width x 2 classes + bias)
  assert summary["num_params"] == 2 * 2 * 2 * 8 * width + width * 2 + 2
  assert list(summary["results"]) == ["plain", "sign"]  # the stored files' keys, in order
  for kind in ("plain", "sign"):
    assert set(summary["results"][kind]) == set(classifiers.SOLVERS)
    for result in summary["results"][kind].values():
      # 24 examples: every accuracy is a multiple of 1/24
      assert 0.0 <= result["dev_metric"] <= 1.0
      assert abs(result["dev_metric"] * 24 - round(result["dev_metric"] * 24)) < 1e-9
    assert summary["kernel_scale"][kind] > 0


def test_unknown_solver_fails_before_loading_anything(tmp_path):
  config = kernel_fit_config.get_config("runlocal")
  config.solvers = ("ridge", "boosting")
  with pytest.raises(ValueError, match=r"config.solvers: unknown \['boosting'\]"):
    kernel_fit.run(config, str(tmp_path))
