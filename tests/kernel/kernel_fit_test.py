"""`python -m ntkft.kernel_fit` at runlocal scale on the real MiniLM and SST-2 16-shot split."""
import json

import pytest

from configs import kernel_fit as kernel_fit_config
from ntkft import kernel_fit
from ntkft.kernel import classifiers


def test_runlocal_writes_each_solvers_dev_metric(tmp_path):
  config = kernel_fit_config.get_config("runlocal")
  config.data.n_eval = 24
  kernel_fit.run(config, str(tmp_path))
  summary = json.loads((tmp_path / "kernel_fit.json").read_text())
  assert summary["n_train"] == 32 and summary["n_eval"] == 24  # 16 per class, 2 classes
  assert summary["num_params"] == 2 * 2 * 2 * 8 * 384 + 384 * 2 + 2  # LoRA q, v x 2 layers + head
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
