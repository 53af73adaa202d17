"""The pre-registered task-arithmetic study: its plan, the verdict and bootstrap against closed
forms on synthetic records, the rule that merges wait for every run, and one `:runlocal` sweep
(a 1-layer random BERT, 2 tasks × 2 modes, 1 seed) with its resumption, also from the committed
points alone (run files, no run workdirs)."""
import itertools
import json
import shutil

import numpy as np
import pytest

from configs import task_arithmetic as ta_config
from experiments import common
from experiments import task_arithmetic as ta
from experiments import task_arithmetic_analysis as analysis
from ntkft.merge import cli as merge_cli
from tests import test_util

TASKS = ("sst2", "mrpc", "rte", "cola", "qnli", "stsb")


# -- The plan ------------------------------------------------------------------------------------

def test_full_design_matches_the_preregistration():
  config = ta_config.get_config()
  plan = ta.points(config)
  assert len({p["id"] for p in plan}) == len(plan)
  runs = [p for p in plan if p["kind"] == "run"]
  assert [(p["seed"], p["task"], p["mode"]) for p in runs] == [
      (s, t, m) for s in (0, 1, 2) for t in TASKS for m in ("nonlinear", "linearized")]
  assert plan[:36] == runs  # every run before any merge (§5)
  assert [(p["kind"], p["mode"], p["seed"]) for p in plan[36:46]] == [
      ("merge", "nonlinear", 0), ("xi", "nonlinear", 0), ("merge", "linearized", 0),
      ("xi", "linearized", 0), ("merge", "nonlinear", 1), ("merge", "linearized", 1),
      ("xi", "linearized", 1), ("merge", "nonlinear", 2), ("merge", "linearized", 2),
      ("xi", "linearized", 2)]
  assert [p["id"] for p in plan[46:]] == ["kernel_s0", "kernel_s1", "kernel_s2"]
  # Subsets: 15 pairs, 2 of each k = 3, 4, 5, all six; 60 task evaluations (§1).
  subsets = ta.subsets(config)
  by_k = {k: [s for s in subsets if len(s) == k] for k in range(2, 7)}
  assert by_k[2] == list(itertools.combinations(TASKS, 2)) and by_k[6] == [TASKS]
  for k in (3, 4, 5):
    assert len(set(by_k[k])) == 2
    assert all(s in list(itertools.combinations(TASKS, k)) for s in by_k[k])
  assert len(subsets) == 22 and sum(len(s) for s in subsets) == 60
  assert ta.subsets(config) == subsets  # drawn once, reproducibly
  ties = ta.ties_subsets(config)
  assert ties[0] == TASKS and len(ties) == 16
  assert len(ta.xi_pairs(config, "nonlinear")) == len(ta.xi_pairs(config, "linearized")) == 15
  # The runs' settings (§1 "training", "dev").
  c = ta.run_config(config, "stsb", "linearized", 2)
  assert (c.task, c.mode, c.seed, c.lam, c.loss) == ("stsb", "linearized", 2, 0.0, "auto")
  assert (c.data.n_train, c.data.n_eval, c.data.max_len, tuple(c.data.buckets),
          c.data.batch_size, c.data.kshot, c.data.stratified) == (1000, 256, 64, (32, 64), 32,
                                                                  "", False)
  assert (c.optim.name, c.optim.lr, c.optim.warmup_steps, c.optim.decay, c.optim.clip_norm,
          c.train.steps) == ("adam", 1e-3, 10, "linear", 1.0, 100)
  assert (c.peft.rank, c.peft.alpha, tuple(c.peft.targets), c.peft.layers, c.peft.head,
          c.model.name, c.model.pooling) == (8, 16.0, ("query", "value"), "all", True,
                                             "minilm-l6", "mean")
  assert (config.validation.n, config.validation.seed_base, tuple(config.alphas)) == (
      64, 22, (0.2, 0.4, 0.6, 0.8, 1.0))
  assert (config.verdict.num_boot, config.verdict.seed, config.verdict.max_excluded) == (
      10_000, 2022, 6)


def test_bad_settings_are_refused_up_front(tmp_path):
  config = ta_config.get_config("runlocal")
  config.negation.task = "rte"
  with pytest.raises(ValueError, match="negation.task='rte' is not in config.tasks"):
    ta.run(config, str(tmp_path))
  config = ta_config.get_config("runlocal")
  config.xi.linearized_seeds = (0, 5)
  with pytest.raises(ValueError, match=r"linearized_seeds has seeds \[5\]"):
    ta.run(config, str(tmp_path))


# -- The analysis on synthetic records -----------------------------------------------------------

def test_chance_level_and_the_learned_rule():
  assert analysis.chance_level("sst2", np.array([0, 0, 0, 1])) == 0.75
  # All positive on MRPC labels 1 1 0 0: precision 1/2, recall 1 -> F1 2/3.
  assert analysis.chance_level("mrpc", np.array([1, 1, 0, 0])) == pytest.approx(2 / 3)
  assert analysis.chance_level("cola", np.array([0, 1])) is None
  assert analysis.chance_level("stsb", np.array([0.5, 4.0])) is None
  rule = lambda name, value, chance: analysis.learned(name, value, chance, 0.02, 0.1)
  assert rule("accuracy", 0.78, 0.75) and not rule("accuracy", 0.76, 0.75)
  assert rule("f1", 0.70, 2 / 3) and not rule("f1", 0.68, 2 / 3)
  assert rule("matthews", 0.1, None) and not rule("pearson", 0.09, None)
  assert not rule("accuracy", None, 0.5)


def _exact_conditional_mean(d):
  """E[resampled mean | the resample has an included cell], by enumerating every draw."""
  num_t, num_s = d.shape
  included = np.isfinite(d)
  total, count = 0.0, 0
  for rows in itertools.product(range(num_t), repeat=num_t):
    for cols in itertools.product(range(num_s), repeat=num_s):
      cells = [d[i, j] for i in rows for j in cols if included[i, j]]
      if cells:
        total += np.mean(cells)
        count += 1
  return total / count


def test_crossed_bootstrap_against_closed_forms():
  boot = analysis.crossed_bootstrap(np.full((6, 3), 0.07), 500, 0)
  np.testing.assert_allclose(boot, 0.07, rtol=1e-12)
  # Two tasks, one seed, d = 0 and 1: the mean of two draws is 0, 1/2, 1 w.p. 1/4, 1/2, 1/4.
  boot = analysis.crossed_bootstrap(np.array([[0.0], [1.0]]), 20_000, 1)
  freq = [np.mean(boot == v) for v in (0.0, 0.5, 1.0)]
  np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.015)
  # One included cell: every resample that keeps it (the others are redrawn) is its value.
  one = np.full((3, 2), np.nan)
  one[1, 0] = -0.3
  np.testing.assert_allclose(analysis.crossed_bootstrap(one, 300, 2), -0.3)
  # The mean over resamples is the exact conditional expectation (3 tasks × 2 seeds).
  d = np.array([[0.1, -0.2], [0.4, np.nan], [0.0, 0.9]])
  boot = analysis.crossed_bootstrap(d, 40_000, 3)
  assert np.mean(boot) == pytest.approx(_exact_conditional_mean(d),
                                        abs=4 * np.std(boot) / np.sqrt(len(boot)))
  with pytest.raises(ValueError, match="no included cell"):
    analysis.crossed_bootstrap(np.full((2, 2), np.nan), 10, 0)


def test_verdict_precedence():
  rule = lambda ci, incomplete="": analysis.verdict_rule(ci, incomplete, 0.02)[0]
  assert rule([0.001, 0.2]) == "supported"
  assert rule([-0.05, 0.015]) == "refuted" and rule([-0.3, -0.1]) == "refuted"
  assert rule([-0.01, 0.03]) == "undecided"
  assert rule([0.1, 0.2], incomplete="a run missing") == "undecided"
  assert analysis.verdict_rule(None, "a run missing", 0.02)[1] == "incomplete: a run missing"


def _records(shift, rng, seeds=(0, 1, 2)):
  """Synthetic run records (every run learned) and all-task merge rows with
  n(lin) − n(nonlin) = shift + noise per (task, seed); returns (runs, rows, planted d)."""
  runs, rows, planted = [], [], {}
  for t in TASKS:
    for s in seeds:
      base = rng.uniform(0.6, 0.9)
      planted[(t, s)] = shift + 0.01 * rng.normal()
      for mode, n in (("nonlinear", base), ("linearized", base + planted[(t, s)])):
        runs.append({"task": t, "mode": mode, "seed": s, "dev_metric": 0.8, "learned": True})
        rows.append({"method": "addition", "k": 6, "mode": mode, "seed": s, "task": t,
                     "subset": list(TASKS), "dev_metric": 0.8 * n, "normalized": n})
  return runs, rows, planted


def test_confirmatory_follows_the_preregistered_rules():
  config = ta_config.get_config()
  config.verdict.num_boot = 500
  runs, rows, planted = _records(0.05, np.random.default_rng(0))
  v = analysis.confirmatory(config, runs, rows)
  assert v["verdict"] == "supported" and v["n_cells"] == 18 and not v["excluded_cells"]
  assert v["estimate"] == pytest.approx(np.mean(list(planted.values())), abs=1e-12)
  assert v["ci"][0] <= v["estimate"] <= v["ci"][1]
  assert v["beside"]["per_task"]["rte"] == pytest.approx(
      np.mean([planted[("rte", s)] for s in (0, 1, 2)]), abs=1e-12)
  assert analysis.confirmatory(config, *_records(-0.05, np.random.default_rng(1))[:2])[
      "verdict"] == "refuted"
  # Six excluded cells: the estimate is the mean over the other twelve.
  drop = {(t, s) for t in ("sst2", "mrpc") for s in (0, 1, 2)}
  for r in runs:
    if (r["task"], r["seed"]) in drop and r["mode"] == "linearized":
      r["learned"] = False
  v = analysis.confirmatory(config, runs, rows)
  assert len(v["excluded_cells"]) == 6 and v["n_cells"] == 12
  assert v["estimate"] == pytest.approx(
      np.mean([d for k, d in planted.items() if k not in drop]), abs=1e-12)
  # A seventh excluded cell, a missing run or a missing all-task merge: incomplete, no estimate.
  runs[-1]["learned"] = False
  v = analysis.confirmatory(config, runs, rows)
  assert v["verdict"] == "undecided" and "7 of 18 cells excluded" in v["reason"]
  assert v["estimate"] is None and v["ci"] is None
  runs, rows, _ = _records(0.05, np.random.default_rng(2))
  v = analysis.confirmatory(config, runs[1:], rows)
  assert v["reason"].startswith("incomplete") and "sst2/nonlinear/s0" in v["reason"]
  v = analysis.confirmatory(config, runs, [r for r in rows if r["seed"] != 2 or
                                           r["mode"] != "linearized" or r["task"] != "qnli"])
  assert "all-task merges missing for ['linearized/s2']" in v["reason"]


# -- The sweep -----------------------------------------------------------------------------------

def test_merges_wait_for_every_run_and_max_seconds_stops(tmp_path, monkeypatch):
  """Under a clock that moves 10 s per computed point, max_seconds = 25 computes the first
  three run points and no merge; once every run exists the merge, ξ and kernel points follow
  in plan order, one group load per (mode, seed)."""
  config = ta_config.get_config()
  config.max_seconds, config.xla_cache = 25.0, False
  clock, computed, loads = [0.0], [], []

  class Clock:
    @staticmethod
    def time():
      return clock[0]

  def compute(point_id):
    computed.append(point_id)
    clock[0] += 10.0
    return {"seconds": 10.0}

  monkeypatch.setattr(ta, "time", Clock)
  monkeypatch.setattr(ta, "run_point", lambda config, p, workdir: compute(p["id"]))
  monkeypatch.setattr(ta, "load_group", lambda config, w, mode, seed: loads.append((mode, seed)))
  monkeypatch.setattr(ta, "merge_point", lambda config, group: compute("merge"))
  monkeypatch.setattr(ta, "xi_point", lambda config, group, mode: compute("xi"))
  monkeypatch.setattr(ta, "kernel_point", lambda config, w, seed: compute(f"kernel_s{seed}"))
  monkeypatch.setattr(ta, "collect", lambda config, workdir, seconds: {
      "runs": [], "run_seconds": 0.0, "run_seconds_projected": None,
      "verdict": {"estimate": None, "ci": None, "verdict": "undecided", "reason": "test"}})
  plan = ta.points(config)
  ta.run(config, str(tmp_path))
  assert computed == [p["id"] for p in plan[:3]] and not loads
  assert sorted(f.stem for f in (tmp_path / "points").iterdir()) == sorted(computed)
  # §5's stop after seed 0's 12 run points: no merge starts, whatever the clock says.
  config.max_seconds, config.max_run_points = 0.0, 12
  computed.clear()
  ta.run(config, str(tmp_path))
  assert computed == [p["id"] for p in plan[3:12]] and not loads
  config.max_run_points = 0
  computed.clear()
  ta.run(config, str(tmp_path))
  assert computed == [p["id"] for p in plan[12:36]] + [
      p["kind"] if p["kind"] != "kernel" else p["id"] for p in plan[36:]]
  assert loads == [(m, s) for s in (0, 1, 2) for m in ("nonlinear", "linearized")]
  assert json.loads((tmp_path / "results.json").read_text())["verdict"]["reason"] == "test"


def test_projected_run_seconds_by_hand():
  """Missing points take the mean of their task and mode, else of their mode; failed points
  count with their seconds but are no model."""
  config = ta_config.get_config()
  config.tasks, config.seeds = ("sst2", "rte"), (0, 1)
  runs = [{"task": "sst2", "mode": "nonlinear", "seed": 0, "seconds": 100.0},
          {"task": "sst2", "mode": "linearized", "seed": 0, "seconds": 160.0},
          {"task": "rte", "mode": "nonlinear", "seed": 0, "seconds": 140.0},
          {"task": "rte", "mode": "linearized", "seed": 0, "seconds": 5.0, "failed": "nan"}]
  # Missing at seed 1: sst2 nl 100, sst2 lin 160, rte nl 140, rte lin (mode mean) 160.
  assert analysis.projected_run_seconds(config, runs) == pytest.approx(405.0 + 560.0)
  assert analysis.projected_run_seconds(config, runs[:1] + runs[2:3]) is None  # no linearized model
  assert analysis.projected_run_seconds(config, []) is None


def test_first_difference_names_the_key():
  assert ta.first_difference({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1, "c": [1, 2]}}) is None
  assert ta.first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c: 2 vs 3"
  assert ta.first_difference({"a": 1}, {"a": 1, "z": 0}) == "z: '(absent)' vs 0"


def test_points_of_another_run_config_are_refused(tmp_path):
  """After a §5 step reduction, seed 0's 100-step point (or its run folder) is not reused."""
  config = ta_config.get_config()
  old = ta.config_json(ta.run_config(config, "sst2", "nonlinear", 0))
  (tmp_path / "points").mkdir()
  (tmp_path / "points" / "run_sst2_nonlinear_s0.json").write_text(
      json.dumps({"config": old, "seconds": 1.0}))
  config.finetune.train.steps = 80
  with pytest.raises(ValueError, match=r"run_sst2_nonlinear_s0.json was computed under another "
                     r"run config \(train.steps: 100 vs 80"):
    ta.run(config, str(tmp_path))
  run_dir = tmp_path / "runs" / "run_sst2_nonlinear_s0"
  run_dir.mkdir(parents=True)
  (run_dir / "config.json").write_text(json.dumps(old))
  point = ta.points(config)[0]
  with pytest.raises(ValueError, match=r"holds a run of another config \(train.steps: 100 vs 80"):
    ta.run_point(config, point, tmp_path)


def test_a_missing_data_file_is_refused_before_any_point(tmp_path):
  config = ta_config.get_config("runlocal")
  (tmp_path / "data" / "glue" / "SST-2").mkdir(parents=True)
  config.finetune.data.root = str(tmp_path / "data")
  with pytest.raises(ValueError, match=r"sst2 train: file .*train.tsv not found"):
    ta.run(config, str(tmp_path / "w"))
  assert not list((tmp_path / "w" / "points").iterdir())


def test_an_included_cell_without_a_merge_metric_is_incomplete():
  config = ta_config.get_config()
  config.verdict.num_boot = 50
  runs, rows, _ = _records(0.05, np.random.default_rng(3))
  row = next(r for r in rows if (r["task"], r["seed"], r["mode"]) == ("cola", 1, "linearized"))
  row["normalized"] = None
  v = analysis.confirmatory(config, runs, rows)
  assert v["verdict"] == "undecided" and v["estimate"] is None
  assert "without a normalized all-task merge metric: ['cola/s1']" in v["reason"]


RUN_KEYS = {"task", "mode", "seed", "dev_metric", "seconds", "chance", "learned"}


def test_runlocal_writes_results_and_resumes(tmp_path):
  config = ta_config.get_config("runlocal")
  config.finetune.model.name = str(test_util.tiny_bert_for_glue_runs(tmp_path, num_layers=1))
  work = tmp_path / "w"
  results = ta.run(config, str(work))
  # 4 runs, a merge and a ξ point per mode, one kernel point.
  assert results["complete"] and results["points_done"] == results["points_total"] == 9
  assert not results["skipped"]
  stored = json.loads((work / "results.json").read_text())
  assert [(r["task"], r["mode"]) for r in stored["runs"]] == [
      ("sst2", "nonlinear"), ("sst2", "linearized"), ("stsb", "nonlinear"),
      ("stsb", "linearized")]
  for r in stored["runs"]:
    assert RUN_KEYS <= set(r) and r["seconds"] > 0 and r["dev_metric"] is not None
  assert 0.5 <= stored["runs"][0]["chance"] <= 1 and stored["runs"][2]["chance"] is None
  rows = stored["merges"]
  assert {(m["method"], m["mode"], m["task"]) for m in rows} == {
      (method, mode, task) for method in ("addition", "ties")
      for mode in ("nonlinear", "linearized") for task in ("sst2", "stsb")}
  # The nonlinear task-addition rows are what `python -m ntkft.merge` gives at that α.
  for r in rows:
    assert r["k"] == 2 and r["alpha"] in (config.alphas if r["method"] == "addition"
                                          else config.ties.alphas)
  nonlinear = [r for r in rows if r["method"] == "addition" and r["mode"] == "nonlinear"]
  dirs = [str(work / "runs" / ta.run_id(t, "nonlinear", 0)) for t in ("sst2", "stsb")]
  with common.compilation_cache(work / "xla_cache"):  # the sweep's programs, read back
    check = merge_cli.merge(dirs, str(nonlinear[0]["alpha"]))
  assert {t["task"]: t["dev_metric"] for t in check["tasks"]} == {
      r["task"]: r["dev_metric"] for r in nonlinear}
  assert [n["task"] for n in stored["negation"]] == ["sst2", "sst2"]
  assert len(stored["xi"]) == 2
  for x in stored["xi"]:
    xi = np.array(x["xi"])
    assert x["tasks"] == ["sst2", "stsb"] and xi.shape == (4, 4) and xi[0, 0] == 0
    assert np.all((0 <= xi) & (xi <= 2))
  (kernel,) = stored["kernels"]
  assert set(kernel["energy"]) == {"sst2", "stsb"} and set(kernel["overlap"]) == {"sst2+stsb"}
  assert kernel["energy"]["sst2"]["sst2"] >= 0.9 - 1e-9 and kernel["seconds"] > 0
  (linear,) = stored["linear_checks"]
  assert set(linear["max_abs_diff"]) == {"sst2", "stsb"}
  v = stored["verdict"]
  assert {"estimate", "ci", "verdict", "reason", "excluded_cells"} <= set(v)
  assert v["verdict"] in ("supported", "refuted", "undecided")
  assert stored["exploratory"]["label"].startswith("exploratory")
  # Interrupted before one ξ point: collect_only computes nothing; a rerun computes only it.
  points = work / "points"
  victim = points / f"{ta.xi_id('nonlinear', 0)}.json"
  victim.unlink()
  before = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  only = config.copy_and_resolve_references()
  only.collect_only = True
  partial = ta.run(only, str(work))
  assert not victim.exists() and partial["points_done"] == 8 and not partial["complete"]
  assert {p.name: p.stat().st_mtime_ns for p in points.iterdir()} == before
  again = ta.run(config, str(work))
  after = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  assert victim.exists() and {k for k in after if after[k] != before.get(k)} == {victim.name}
  assert again["complete"] and again["xi"] == stored["xi"]
  # A fresh clone: only the committed points, i.e. each run point's JSON and run file, with
  # neither W/runs/ (git-ignored checkpoints) nor the merge, ξ and kernel points. These are
  # recomputed from the run files alone, without training, and equal the first ones bit for bit.
  run_ids = [p["id"] for p in ta.points(config) if p["kind"] == "run"]
  assert all(ta.run_file(work, i).is_file() for i in run_ids)
  shutil.rmtree(work / "runs")
  for p in ta.points(config):
    if p["kind"] != "run":
      (points / f"{p['id']}.json").unlink()
  (work / "results.json").unlink()
  fresh = ta.run(config, str(work))
  assert fresh["complete"] and not (work / "runs").exists()  # nothing was trained again
  fresh = json.loads((work / "results.json").read_text())
  for key in ("runs", "merges", "negation", "xi", "linear_checks"):
    assert fresh[key] == stored[key], key
  timeless = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  assert timeless(fresh["kernels"]) == timeless(stored["kernels"])
