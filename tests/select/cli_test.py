"""`python -m ntkft.select` end to end on the real MiniLM at runlocal scale (n=8)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import select_layers
from ntkft import peft, spectral
from ntkft.select import cli, selection
from tests.conftest import REPO


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  out = tmp_path_factory.mktemp("select")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "ntkft.select",
       "--config=configs/select_layers.py:runlocal", f"--workdir={out}",
       "--config.n=8", "--config.chunk_size=4", "--config.progress=False"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "--config.peft.layers=" in proc.stdout
  return out


def test_selection_json(workdir):
  summary = json.loads((workdir / "selection.json").read_text())
  layers = [f"layer_{i}" for i in range(6)]     # MiniLM-L6, LoRA q, v everywhere
  assert summary["criterion"] == "min_kappa" and summary["search"] == "greedy"
  assert summary["n"] == 8 and summary["block_by"] == "layer"
  assert len(summary["selected"]) == 2 and set(summary["selected"]) <= set(layers)
  assert summary["bound_checks"] > 0 and summary["bound_violations"] == 0
  assert summary["pruned"] + summary["exact_evaluations"] == 6 + 5
  assert sorted(summary["candidates"]) == layers
  for stats in summary["candidates"].values():    # 2 targets x (A, B) x 8 x 384
    assert stats["num_params"] == 2 * 2 * 8 * 384
    assert 0 < stats["lambda_min"] <= stats["lambda_max"]
  assert summary["num_params"] == 2 * 2 * 2 * 8 * 384
  assert len(summary["trace"]) == 2
  assert summary["trace"][0]["added"] == summary["selected"][0]
  assert sorted(summary["other_criteria"]) == ["max_alignment", "max_lambda_min"]
  for other in summary["other_criteria"].values():
    assert len(other["selected"]) == 2 and other["bound_violations"] == 0
  layer_ids = tuple(sorted(int(b.split("_")[1]) for b in summary["selected"]))
  assert summary["peft_fragment"] == {"layers": list(layer_ids)}
  assert summary["peft_flags"] == (
      f"--config.peft.layers='({','.join(map(str, layer_ids))})'")


def test_values_match_saved_kernels(workdir):
  summary = json.loads((workdir / "selection.json").read_text())
  saved = np.load(workdir / "block_kernels.npz")
  blocks = {name[len("block/"):]: saved[name] for name in saved.files
            if name.startswith("block/")}
  assert len(blocks) == 6 and all(k.shape == (8, 8) for k in blocks.values())
  for name, k_b in blocks.items():
    eigs = np.linalg.eigvalsh(k_b)
    np.testing.assert_allclose(summary["candidates"][name]["lambda_min"], eigs[0],
                               rtol=1e-9)
    np.testing.assert_allclose(summary["candidates"][name]["lambda_max"], eigs[-1],
                               rtol=1e-9)
  k_sel = sum(blocks[b] for b in summary["selected"])
  assert summary["value"] == pytest.approx(
      selection.criterion_value(k_sel, "min_kappa"), rel=1e-10)
  # Residual targets: alignment of the reported choice, recomputed.
  residual = saved["targets"] - saved["fx0"]
  np.testing.assert_array_equal(saved["targets"].argmax(1), saved["labels"])
  other = summary["other_criteria"]["max_alignment"]
  k_al = sum(blocks[b] for b in other["selected"])
  assert other["value"] == pytest.approx(
      spectral.kernel_target_alignment(k_al, residual), rel=1e-10)
  # The greedy choice is no better than the exhaustive optimum.
  best = selection.exhaustive_select(blocks, "min_kappa", 2)
  assert best.value <= summary["value"] * (1 + 1e-12)


def test_fragment_builds_the_selected_subset(workdir):
  """The peft fragment, pasted into the candidate config, trains exactly the selection."""
  summary = json.loads((workdir / "selection.json").read_text())
  config = select_layers.get_config("runlocal")
  candidate = dict(config.peft)
  candidate.update(summary["peft_fragment"])
  spec = peft.PeftSpec.from_config(candidate)
  adapters = peft.adapters_for(spec, num_layers=6)
  expected = {peft.module_path(int(b.split("_")[1]), t)
              for b in summary["selected"] for t in ("query", "value")}
  assert set(adapters) == expected


@pytest.mark.parametrize("field, value, match", [
    ("block_by", "leaf", "block_by"),
    ("criterion", "max_kappa", "criterion"),
    ("search", "beam", "search"),
    ("budget", 0, "budget"),
])
def test_bad_config(tmp_path, field, value, match):
  config = select_layers.get_config("runlocal")
  if field == "budget":
    config.param_budget = 0
  config[field] = value
  with pytest.raises(ValueError, match=match):
    cli.run(config, str(tmp_path))
