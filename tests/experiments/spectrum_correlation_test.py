"""End to end: experiments.spectrum_correlation on a tiny random BERT and real k-shot data."""
import json

import numpy as np
import pytest
import scipy.stats

from configs import spectrum_correlation as spectrum_correlation_config
from experiments import common, layer_study, spectrum_correlation

LAYER_SETS = ((0,), (2,), (1, 2))


def test_runlocal_writes_results_figure_and_resumes(tmp_path, tiny_layer_study_config, capsys):
  config = tiny_layer_study_config(spectrum_correlation_config, 3, log_every=1)
  config.layer_sets = LAYER_SETS
  config.num_boot = 100
  work = tmp_path / "w"
  summary = spectrum_correlation.run(config, str(work))
  results = json.loads((work / "results.json").read_text())
  assert set(results) >= {"tasks", "config", "wall_seconds", "machine", "layer_sets"}
  out = results["tasks"]["sst2"]
  rows = out["rows"]
  assert [tuple(r["layers"]) for r in rows] == list(LAYER_SETS)
  for key in ("layers", "kappa", "lambda_min", "lambda_max", "effective_rank", "alignment",
              "train_loss", "dev_metric", "dev_metric_name", "num_params",
              "kappa_layers_only"):
    assert all(key in r for r in rows), key
  assert all(r["dev_metric_name"] == "accuracy" and 0 <= r["dev_metric"] <= 1 for r in rows)
  # K_S is the NTK of exactly the fine-tuned set: same parameter count as each run,
  # and kappa is that of the cached blocks' sum (layers + head).
  z = np.load(work / "sst2" / "kernels.npz")
  assert sorted(k for k in z.files if k.startswith("block/")) == [
      "block/head", "block/layer_0", "block/layer_1", "block/layer_2"]
  for r in rows:
    run_summary = json.loads((work / "sst2" / "runs" / f"L{common.layer_label(r['layers'])}"
                              / "summary.json").read_text())
    assert run_summary["num_trainable"] == r["num_params"]
    assert not (work / "sst2" / "runs" / f"L{common.layer_label(r['layers'])}"
                / "ckpt").exists()
    k_s = z["block/head"] + sum(z[f"block/layer_{i}"] for i in r["layers"])
    eigs = np.linalg.eigvalsh(k_s)
    np.testing.assert_allclose(r["kappa"], eigs[-1] / eigs[0], rtol=1e-8)
  # Singles hold one LoRA block + the head, the pair two blocks + the head.
  head = json.loads(str(z["param_counts"]))["head"]
  assert rows[0]["num_params"] == rows[1]["num_params"]
  assert rows[2]["num_params"] == 2 * rows[0]["num_params"] - head
  for p in layer_study.PREDICTORS:
    for o in layer_study.OUTCOMES:
      s = out["spearman"][f"{p}_vs_{o}"]
      assert s["n"] == len(LAYER_SETS) and len(s["ci95"]) == 2
      xs, ys = [r[p] for r in rows], [r[o] for r in rows]
      if len(set(xs)) > 1 and len(set(ys)) > 1:
        ref = scipy.stats.spearmanr(xs, ys).statistic
        assert s["rho"] == pytest.approx(ref)
  assert (work / "spectrum_correlation_scatter.png").stat().st_size > 10_000
  printed = capsys.readouterr().out
  assert "| layers | num_params | kappa" in printed and "ρ vs train_loss" in printed
  assert summary["tasks"]["sst2"]["rows"][0]["train_loss"] == rows[0]["train_loss"]

  # A rerun skips every finished run and reuses the kernels.
  again = spectrum_correlation.run(config, str(work))
  assert all(r["skipped"] for r in again["tasks"]["sst2"]["rows"])
  assert again["tasks"]["sst2"]["kernel"]["seconds"] == 0.0
  assert [r["dev_metric"] for r in again["tasks"]["sst2"]["rows"]] == [
      r["dev_metric"] for r in rows]


def test_plot_scatter_from_loaded_json_with_nulls(tmp_path):
  row = {"layers": [0], "kappa": None, "train_loss": 0.5, "dev_metric": 0.7,
         "dev_metric_name": "f1"}
  rows = [row, dict(row, layers=[1], kappa=10.0), dict(row, layers=[0, 1], kappa=30.0,
                                                       train_loss=0.4)]
  s = {"rho": None, "ci95": [None, None], "n": 2}
  results = {"tasks": {"mrpc": {"rows": rows, "spearman": {
      f"kappa_vs_{o}": s for o in layer_study.OUTCOMES}}}}
  spectrum_correlation.plot_scatter(results, tmp_path / "s.png")
  assert (tmp_path / "s.png").stat().st_size > 5000


def test_bad_layer_set(tmp_path):
  config = spectrum_correlation_config.get_config("runlocal")
  config.layer_sets = ((6,),)  # MiniLM has layers 0..5
  with pytest.raises(ValueError, match="layer set"):
    spectrum_correlation.run(config, str(tmp_path))
