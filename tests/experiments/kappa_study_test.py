"""The pre-registered kappa study: the sweep, its resumption and the verdict rules."""
import json

import numpy as np
import pytest
from scipy import stats

from configs import kappa_study as kappa_config
from experiments import kappa_analysis, kappa_study
from ntkft.evals import cluster_stats as cs
from ntkft.spectral import predictors as predictors_lib
from tests import test_util

RUN_KEYS = {"task", "layers", "seed", "lam", "regime", "mode", "train_loss", "dev_metric",
            "lin_gap", "plateaued", "seconds", "predictors", "train_seconds", "diverged"}
SETS_21 = [(i,) for i in range(6)] + [(i, j) for i in range(6) for j in range(i + 1, 6)]


def test_full_design_matches_the_preregistration():
  """Amendment 2, items 3 and 10: 21 sets × λ ∈ {0, 10}, 1,008 + 63 runs, seed-major."""
  config = kappa_config.get_config()
  assert kappa_study.layer_sets(config) == SETS_21
  assert tuple(config.lams) == (0.0, 10.0) and tuple(config.regimes) == ("a", "b")
  plan = kappa_study.points(config)
  assert len({p["id"] for p in plan}) == len(plan)
  kernels = [p for p in plan if p["kind"] == "kernel"]
  runs = [p for p in plan if p["kind"] == "run"]
  assert [(p["task"], p["seed"]) for p in kernels] == [
      (t, s) for s in (0, 1, 2) for t in ("sst2", "mrpc", "rte", "cola")]
  nonlinear = [p for p in runs if p["mode"] == "nonlinear"]
  tangent = [p for p in runs if p["mode"] == "linearized"]
  assert len(nonlinear) == 4 * 21 * 3 * 2 * 2 == 1008
  assert len({(p["task"], p["layers"], p["seed"], p["regime"], p["lam"])
              for p in nonlinear}) == 1008
  assert len(tangent) == 63
  assert {(p["task"], p["regime"], p["lam"]) for p in tangent} == {("sst2", "a", 0.0)}
  assert sorted((p["layers"], p["seed"]) for p in tangent) == sorted(
      (s, seed) for s in SETS_21 for seed in (0, 1, 2))
  assert len(plan) == 12 + 1008 + 63
  # Seed-major, tasks in order within a seed, each (task, seed) one contiguous block
  # that opens with its kernel point.
  task_order = {t: i for i, t in enumerate(("sst2", "mrpc", "rte", "cola"))}
  keys = [(p["seed"], task_order[p["task"]]) for p in plan]
  assert keys == sorted(keys)
  for i, p in enumerate(plan):
    first = i == 0 or keys[i - 1] != keys[i]
    assert (p["kind"] == "kernel") == first, p["id"]
  assert sum(len(v) for v in kappa_study.planned_cells(config).values()) == 1008 + 63


def test_max_seconds_stops_before_starting_a_point(tmp_path, monkeypatch):
  """Under a clock that moves 10 s per point, max_seconds = 25 computes exactly the first
  three points (started at 0, 10, 20 s), starts no other, builds no other group, and still
  writes results.json."""
  config = kappa_config.get_config("runlocal")
  config.max_seconds, config.xla_cache = 25.0, False
  clock = [0.0]

  class Clock:
    @staticmethod
    def time():
      return clock[0]

  def computed(out):
    clock[0] += 10.0
    return out

  monkeypatch.setattr(kappa_study, "time", Clock)
  groups = []
  monkeypatch.setattr(kappa_study, "group_runs",
                      lambda config, task, seed: groups.append((task, seed)))
  monkeypatch.setattr(kappa_study, "kernel_point",
                      lambda config, group, seed: computed({"sets": {}}))
  monkeypatch.setattr(kappa_study, "run_point",
                      lambda config, point, group, kernel: computed({"seconds": 10.0}))
  monkeypatch.setattr(kappa_study, "collect",
                      lambda config, workdir, seconds: {"seconds": seconds, "verdicts": []})
  out = kappa_study.run(config, str(tmp_path))
  plan = [p["id"] for p in kappa_study.points(config)]
  assert sorted(f.stem for f in (tmp_path / "points").iterdir()) == sorted(plan[:3])
  assert out["seconds"] == 30.0 and groups == [("sst2", 0)]  # the next group is not built
  assert json.loads((tmp_path / "results.json").read_text()) == out


def test_plateau_check():
  flat = [(s, 10.0 / s) for s in range(8, 97, 8)]
  assert not kappa_study.plateau(flat, 24, 0.05, 0.005)  # still falling as 1/s
  settled = [(s, 0.3 + 1e-4 * (96 - s)) for s in range(8, 97, 8)]
  assert kappa_study.plateau(settled, 24, 0.05, 0.005)
  assert not kappa_study.plateau([(8, 1.0)], 24, 0.05, 0.005)  # too short to tell


# --- The pre-registered analysis (experiments/kappa_analysis.py, Amendment 2). ---------------

TASKS = ("t1", "t2", "t3", "t4")
ALL_SETS = [(i,) for i in range(6)] + [(i, j) for i in range(6) for j in range(i + 1, 6)]
KERNELS = [predictors_lib.kernel_name(k, l, h) for k in predictors_lib.KINDS
           for l in predictors_lib.LAYOUTS for h in predictors_lib.HEADS]


def _synthetic(sign=1.0, confound=False, gaps=(0.5, 0.05), gap_noise=0.01, sets=ALL_SETS,
               tasks=TASKS, seeds=(0, 1, 2), n=128, seed=0):
  """(runs, planned) of the amended design: tasks × sets × seeds × regimes (a, b) × λ (0, 10),
  nonlinear, + the tangent cell (tasks[0], a, 0, linearized).

  Only regime (a) at λ = 10 carries a signal: train loss = sign·log κ_λ + noise and dev
  metric = −log κ_λ + noise, κ_λ of plain_flat_head (confound: both follow depth, and so does
  λmax, so κ_λ adds nothing beyond depth). lin_gap ≈ gaps[0] at λ = 0, gaps[1] at λ = 10.
  """
  rng = np.random.default_rng(seed)
  runs, planned = [], {}
  for task in tasks:
    if confound:
      lmax = {s: 300.0 * (1 + max(s)) ** 2 * np.exp(0.1 * rng.normal()) for s in sets}
    else:
      lmax = {s: 10 ** rng.uniform(2, 4) for s in sets}
    lmin = {s: 10 ** rng.uniform(-3, 0) for s in sets}
    for s in sets:
      for seed_ in seeds:
        pred = {"lambda_max": lmax[s] * (1 + 0.01 * rng.normal()), "lambda_min": lmin[s],
                "effective_rank": rng.uniform(1, 50), "alignment": rng.uniform(0, 1),
                "lambda_min_clamped": False}
        pred["kappa"] = pred["lambda_max"] / pred["lambda_min"]
        preds = {k: dict(pred) for k in KERNELS}
        cells = [(g, lam, "nonlinear") for g in ("a", "b") for lam in (0.0, 10.0)]
        if task == tasks[0]:
          cells.append(("a", 0.0, "linearized"))
        for regime, lam, mode in cells:
          follows = regime == "a" and lam == 10.0 and mode == "nonlinear"
          logk = np.log(kappa_analysis.kappa_lambda(pred, n, lam))
          if follows and confound:
            loss, dev = max(s) + 0.2 * rng.normal(), -max(s) + 0.2 * rng.normal()
          elif follows:
            loss, dev = sign * logk + 0.1 * rng.normal(), -logk + 0.1 * rng.normal()
          else:
            loss, dev = rng.normal(), rng.normal()
          gap = gaps[int(lam == 10.0)] * (1 + gap_noise * rng.normal())
          runs.append({"task": task, "layers": list(s), "seed": seed_, "lam": lam,
                       "regime": regime, "mode": mode, "depth": max(s), "size": len(s),
                       "n_kernel": n, "train_loss": loss, "dev_metric": dev, "lin_gap": gap,
                       "plateaued": True, "diverged": False, "predictors": preds})
          planned.setdefault((task, regime, lam, mode), []).append((s, seed_))
  return runs, planned


def _config(num_boot=200, tasks=TASKS):
  config = kappa_config.get_config()
  config.tasks = tasks
  config.lams = (0.0, 10.0)
  config.num_boot = num_boot
  return config


def _verdicts(runs, planned, config=None):
  config = config or _config()
  return {v["id"]: v for v in kappa_analysis.verdicts(config, kappa_analysis.cell_table(runs),
                                                       planned)}


@pytest.fixture(scope="module")
def planted():
  runs, planned = _synthetic()
  return runs, planned, kappa_analysis.analyse(_config(), runs, planned, num_boot_exploratory=50)


def test_kappa_lambda_is_the_condition_number_of_the_pulled_operator():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 4))
  k = a @ a.T + 1e-3 * np.eye(6)  # PSD, well conditioned enough for eigvalsh
  eig = np.linalg.eigvalsh(k)
  pred = {"lambda_min": eig[0], "lambda_max": eig[-1]}
  n, lam = 6, 0.3
  assert kappa_analysis.kappa_lambda(pred, n, lam) == pytest.approx(
      np.linalg.cond(k + n * lam * np.eye(6)), rel=1e-9)
  assert kappa_analysis.kappa_lambda(pred, n, 0.0) == pytest.approx(eig[-1] / eig[0])
  assert kappa_analysis.kappa_lambda({"lambda_min": -1e-9, "lambda_max": 5.0}, 128, 0.0) == np.inf
  assert kappa_analysis.kappa_lambda({"lambda_min": -1e-9, "lambda_max": 5.0}, 128, 10.0) == \
      pytest.approx((5 + 1280) / (1280 - 1e-9))
  assert np.isnan(kappa_analysis.kappa_lambda({"lambda_min": None, "lambda_max": 5.0}, 8, 1.0))


def test_h1_and_h2_estimates_rederived_by_hand(planted):
  """A reviewer's check: the stored estimates from the run records with scipy alone."""
  runs, _, out = planted
  stored = {v["id"]: v for v in out["verdicts"]}

  def rows(task, lam):
    return [r for r in runs if r["task"] == task and r["regime"] == "a" and r["lam"] == lam
            and r["mode"] == "nonlinear"]

  def rho(task, lam):
    rs = rows(task, lam)
    x = [(r["predictors"]["plain_flat_head"]["lambda_max"] + r["n_kernel"] * lam)
         / (r["predictors"]["plain_flat_head"]["lambda_min"] + r["n_kernel"] * lam) for r in rs]
    return stats.spearmanr(x, [r["train_loss"] for r in rs]).statistic

  def partial_rho(task, lam):
    """§4 by definition: ranks of κ_λ and train loss each regressed on [1, rank(depth),
    size] by least squares, Pearson correlation of the residuals."""
    rs = rows(task, lam)
    x = [(r["predictors"]["plain_flat_head"]["lambda_max"] + r["n_kernel"] * lam)
         / (r["predictors"]["plain_flat_head"]["lambda_min"] + r["n_kernel"] * lam) for r in rs]
    z = np.column_stack([np.ones(len(rs)), stats.rankdata([max(r["layers"]) for r in rs]),
                         [len(r["layers"]) for r in rs]])
    res = [v - z @ np.linalg.lstsq(z, v, rcond=None)[0]
           for v in (stats.rankdata(x), stats.rankdata([r["train_loss"] for r in rs]))]
    return stats.pearsonr(*res).statistic

  h1, h2, h1_partial = [], [], []
  for task in TASKS:
    star = min((0.0, 10.0), key=lambda lam: np.median([r["lin_gap"] for r in rows(task, lam)]))
    assert stored["H1"]["lambda_star"][task] == star == 10.0
    h1.append(rho(task, star))
    h2.append(rho(task, star) - rho(task, 0.0))
    h1_partial.append(partial_rho(task, star))
  assert stored["H1"]["estimate"] == pytest.approx(np.mean(h1), abs=1e-12)
  assert stored["H2"]["estimate"] == pytest.approx(np.mean(h2), abs=1e-12)
  assert stored["H1"]["per_task"] == pytest.approx(dict(zip(TASKS, h1)), abs=1e-12)
  assert stored["H1"]["per_task_partial"] == pytest.approx(dict(zip(TASKS, h1_partial)),
                                                           abs=1e-10)
  assert stored["H1"]["partial"] == pytest.approx(np.mean(h1_partial), abs=1e-10)


def test_verdicts_follow_the_preregistered_rules(planted):
  runs, planned, out = planted
  v = {r["id"]: r for r in out["verdicts"]}
  assert [r["id"] for r in out["verdicts"]] == ["H1", "H2", "H3", "H4"]
  for r in out["verdicts"]:
    assert r["hypothesis"] == r["id"] and r["statistic"] == "kappa_lambda"
    assert {"estimate", "ci", "partial", "partial_ci", "p", "holm_level", "verdict", "reason",
            "lambda_star", "prediction"} <= set(r)
  assert v["H1"]["verdict"] == "supported" and v["H1"]["estimate"] > 0.9
  assert v["H2"]["verdict"] == "supported"
  assert v["H4"]["verdict"] == "supported" and v["H4"]["estimate"] < -0.9
  assert v["H3"]["verdict"] != "supported"  # regime (b): loss unrelated to κ_λ
  assert sorted(r["holm_level"] for r in out["verdicts"]) == pytest.approx(
      [0.0125, 0.05 / 3, 0.025, 0.05])
  flipped = _verdicts(*_synthetic(sign=-1.0))
  assert flipped["H1"]["verdict"] == "refuted" and "opposite" in flipped["H1"]["reason"]
  assert flipped["H2"]["verdict"] == "refuted"


def test_verdict_precedence():
  rule = lambda ci, pci, rejected=True, gate=(True, ""), sign=1: kappa_analysis.verdict_rule(
      sign, ci, pci, rejected, gate, 0.2)
  assert rule([0.3, 0.8], [0.1, 0.6])[0] == "supported"
  assert rule([-0.8, -0.3], [-0.6, -0.1], sign=-1)[0] == "supported"
  # Excludes 0 in the predicted direction but a strong effect is excluded: refuted first.
  assert rule([0.05, 0.15], [0.05, 0.15]) == (
      "refuted", "CI excludes predicted-direction effects of 0.2 or more")
  assert rule([-0.7, -0.3], [-0.7, -0.3])[0] == "refuted"
  assert rule([0.3, 0.7], [0.3, 0.7], sign=-1)[0] == "refuted"
  # The raw correlation holds, the partial does not: undecided, never refuted.
  assert rule([0.3, 0.8], [-0.4, 0.5]) == (
      "undecided", "the correlation holds but not controlling depth and size")
  assert rule([0.3, 0.8], [float("nan")] * 2)[0] == "undecided"
  assert rule([0.3, 0.8], [0.1, 0.6], rejected=False)[0] == "undecided"  # Holm stopped
  assert rule([-0.1, 0.6], [0.1, 0.6])[0] == "undecided"
  # A failed gate prevents every verdict, "refuted" included (§4's proviso, kept).
  assert rule([-0.7, -0.3], [-0.7, -0.3], gate=(False, "lin_gap")) == ("undecided", "lin_gap")
  assert rule([float("nan")] * 2, [0.1, 0.2])[0] == "undecided"


def test_raw_correlation_without_the_partial_is_undecided():
  v = _verdicts(*_synthetic(confound=True))["H1"]
  assert v["estimate"] > 0.5 and v["ci"][0] > 0 and v["holm_rejected"]
  assert abs(v["partial"]) < 0.3 and v["partial_ci"][0] < 0 < v["partial_ci"][1]
  assert v["verdict"] == "undecided" and "controlling depth and size" in v["reason"]


def test_plateau_gates_h4_only():
  runs, planned = _synthetic()
  for r in runs:
    r["plateaued"] = False
  v = _verdicts(runs, planned)
  assert v["H4"]["verdict"] == "undecided" and "plateau" in v["H4"]["reason"]
  assert v["H1"]["verdict"] == v["H2"]["verdict"] == "supported"
  assert "plateau" not in v["H3"]["reason"]


def test_lin_gap_gate_and_its_proviso_on_refuted():
  v = _verdicts(*_synthetic(sign=-1.0, gaps=(0.5, 0.3)))
  for h in ("H1", "H2", "H4"):  # flipped H1 would be refuted; a failed gate makes it undecided
    assert v[h]["verdict"] == "undecided" and "lin_gap" in v[h]["reason"]
    assert v[h]["estimate"] is not None
  assert "lin_gap" not in v["H3"]["reason"]  # regime (b) is not lin_gap-gated


def test_incomplete_only_where_a_hypothesis_lacks_its_own_runs():
  runs, planned = _synthetic()
  drop = lambda rs, **kw: [r for r in rs if any(r[k] != v for k, v in kw.items())]
  # A run of regime (b) at λ = 0 missing: H3 (its λ* needs that cell) only.
  v = _verdicts(drop(runs, task="t3", regime="b", lam=0.0, seed=2, layers=[1, 4]), planned)
  assert v["H3"]["verdict"] == "undecided" and v["H3"]["reason"].startswith("incomplete")
  assert v["H3"]["estimate"] is None and v["H3"]["ci"] is None
  assert "t3/b/λ=0/nonlinear" in v["H3"]["reason"] and "seeds [2]" in v["H3"]["reason"]
  assert v["H1"]["verdict"] == v["H2"]["verdict"] == v["H4"]["verdict"] == "supported"
  # A whole seed of regime (a) at λ = 0 missing: H1, H2, H4.
  v = _verdicts(drop(runs, task="t2", regime="a", lam=0.0, seed=1), planned)
  assert all(v[h]["reason"].startswith("incomplete") for h in ("H1", "H2", "H4"))
  assert v["H3"]["estimate"] is not None
  # Points outside the family's cells (the tangent runs) missing, a run diverged: complete.
  runs2 = drop(runs, mode="linearized", seed=0)
  runs2[0]["diverged"] = True
  del runs2[1]["diverged"]  # records before the flag existed
  v = _verdicts(runs2, planned)
  assert not any(v[h]["reason"].startswith("incomplete") for h in v)


def _slow_estimate(h, cells, partial):
  """The estimate by definition on a {task: [(layers, seed), ...]} sample (repeats kept)."""

  def rho(rs, lam):
    x = [kappa_analysis.kappa_lambda(r["predictors"][h["kernel"]], r["n_kernel"], lam)
         for r in rs]
    y = [r[h["outcome"]] for r in rs]
    if partial:
      return cs.partial_spearman(x, y, [[max(r["layers"]) for r in rs],
                                        [len(r["layers"]) for r in rs]])
    return cs.spearman(x, y)

  def estimate(sample):
    per_task = []
    for task, keys in sample.items():
      rows = {lam: [cells[(task, h["regime"], lam, "nonlinear")][k] for k in keys]
              for lam in (0.0, 10.0)}
      gaps = [kappa_analysis.median_finite([r["lin_gap"] for r in rows[lam]])
              for lam in (0.0, 10.0)]
      star = (0.0, 10.0)[int(np.argmin(gaps))]
      per_task.append(rho(rows[star], star)
                      - (rho(rows[0.0], 0.0) if h["lam"] == "star-0" else 0.0))
    return float(np.nanmean(per_task))

  return estimate


def test_crossed_bootstrap_matches_the_slow_definition():
  """The vectorized resamples (λ* re-chosen in each) equal cluster_stats.crossed_bootstrap
  of the estimate written out by definition."""
  tasks, sets = ("t1", "t2"), ALL_SETS[::2]
  runs, planned = _synthetic(gaps=(0.2, 0.2), gap_noise=0.3, sets=sets, tasks=tasks)
  cells = kappa_analysis.cell_table(runs)
  config = _config(tasks=tasks)
  keys = {t: sorted(cells[(t, "a", 0.0, "nonlinear")]) for t in tasks}
  for h in kappa_analysis.HYPOTHESES[:2]:  # H1 (at λ*) and H2 (λ* minus 0)
    fast = kappa_analysis.confirmatory_samples(config, h, cells, planned, 40, seed=5)
    assert {float(s) for s in fast["boot_lambda_star"]["t1"]} == {0.0, 10.0}
    for partial, name in ((False, "boot"), (True, "boot_partial")):
      slow = cs.crossed_bootstrap(_slow_estimate(h, cells, partial), keys, 40, seed=5)
      np.testing.assert_allclose(fast[name], slow, atol=1e-10)
      assert fast["partial" if partial else "estimate"] == pytest.approx(
          _slow_estimate(h, cells, partial)(keys), abs=1e-12)


def test_cells_and_exploratory_tables(planted):
  runs, planned, _ = planted
  runs = [dict(r) for r in runs]
  hit = [r for r in runs if r["task"] == "t2" and r["regime"] == "b" and r["lam"] == 10.0]
  hit[0]["diverged"], hit[1]["plateaued"] = True, False
  out = kappa_analysis.analyse(_config(num_boot=20), runs, planned, num_boot_exploratory=50)
  cells = {(c["task"], c["regime"], c["lam"], c["mode"]): c for c in out["cells"]}
  c = cells[("t2", "b", 10.0, "nonlinear")]
  assert c["n"] == c["n_planned"] == 63 and c["n_diverged"] == 1
  assert c["plateaued"] == pytest.approx(62 / 63)
  assert cells[("t1", "a", 0.0, "linearized")]["n"] == 63
  assert [k for k, c in cells.items() if c["lambda_star"]] == [
      (t, g, 10.0, "nonlinear") for t in TASKS for g in ("a", "b")]
  table = {(e["task"], e["regime"], e["lam"], e["mode"]): e["rho"] for e in out["exploratory"]}
  assert len(table) == 4 * 4 + 1
  rho = table[("t1", "a", 10.0, "nonlinear")]
  assert len(rho) == 2 * (2 + 8 * 6)
  e = rho["plain_flat_head.kappa_lambda:train_loss"]
  rows = [r for r in runs if r["task"] == "t1" and r["regime"] == "a" and r["lam"] == 10.0
          and r["mode"] == "nonlinear"]
  x = [kappa_analysis.kappa_lambda(r["predictors"]["plain_flat_head"], 128, 10.0) for r in rows]
  assert e["rho"] == pytest.approx(stats.spearmanr(x, [r["train_loss"] for r in rows])[0])
  assert 0 < e["ci"][0] <= e["rho"] <= e["ci"][1] and "partial_ci" in e
  assert set(rho["depth:dev_metric"]) == {"rho", "ci"}
  assert "sign_traced_nohead.kappa:dev_metric" in rho
  # The figure's data: every nonlinear cell (linearized runs have no lin_gap) × the
  # family's 2 kernels × 2 outcomes, its median lin_gap beside the table's ρ of κ_λ.
  figure = out["rho_vs_lin_gap"]
  assert len(figure) == 4 * 4 * 2 * 2
  assert {(f["kernel"], f["outcome"]) for f in figure} == {
      (k, o) for k in ("plain_flat_head", "sign_flat_head") for o in ("train_loss", "dev_metric")}
  assert all(f["lambda_star"] == (f["lam"] == 10.0) for f in figure)
  [f] = [f for f in figure if (f["task"], f["regime"], f["lam"], f["kernel"], f["outcome"])
         == ("t1", "a", 10.0, "plain_flat_head", "train_loss")]
  assert f["median_lin_gap"] == pytest.approx(np.median([r["lin_gap"] for r in rows]))
  assert (f["rho"], f["ci"], f["partial"], f["partial_ci"]) == (
      e["rho"], e["ci"], e["partial"], e["partial_ci"])


def test_no_predictor_outcome_tables_before_every_point_exists(planted):
  """exploratory_tables=False (the sweep's interim collect): the same verdicts and cells,
  no predictor-outcome table."""
  runs, planned, out = planted
  gated = kappa_analysis.analyse(_config(), runs, planned, num_boot_exploratory=50,
                                 exploratory_tables=False)
  assert gated["exploratory"] == gated["rho_vs_lin_gap"] == "computed when every point exists"
  assert gated["verdicts"] == out["verdicts"] and gated["cells"] == out["cells"]


def test_runlocal_writes_results_and_resumes(tmp_path, xla_cache):
  """The runlocal sweep on a random 6-layer BERT of width 16: MiniLM's depth (the sets use
  layers 4 and 5) and programs, without its FLOPs. Its programs go to the process's
  ``xla_cache`` (instead of the workdir's cache), which selection_study_test's studies
  read back when they run in the same process (and the other way round)."""
  config = kappa_config.get_config("runlocal")
  config.finetune.model.name = str(test_util.tiny_bert_for_glue_runs(tmp_path / "tiny",
                                                                     num_layers=6))
  work = tmp_path / "w"
  results = kappa_study.run(config, str(work))
  # 2 seeds × (1 kernel + 2 sets × (2 regimes × 2 λ + 1 tangent)).
  assert results["complete"] and results["points_done"] == results["points_total"] == 22
  stored = json.loads((work / "results.json").read_text())
  assert len(stored["runs"]) == 20
  assert sum(r["mode"] == "linearized" for r in stored["runs"]) == 4
  for r in stored["runs"]:
    assert RUN_KEYS <= set(r)
    assert set(r["predictors"]) == {f"{k}_{l}_{h}" for k in ("plain", "sign")
                                    for l in ("flat", "traced") for h in ("head", "nohead")}
    if r["mode"] == "linearized":
      assert r["lin_gap"] is None and (r["regime"], r["lam"]) == ("a", 0.0)
    else:
      assert r["lin_gap"] is not None and r["lin_gap"] >= 0
    assert r["seconds"] >= r["train_seconds"] > 0 and r["diverged"] in (True, False)
  assert [(k["task"], k["seed"]) for k in stored["kernels"]] == [("sst2", 0), ("sst2", 1)]
  for k in stored["kernels"]:
    assert set(k["kappa_vs_n"]) == set(k["sign_asymmetry"]) == {"L5", "L4-5"}
    assert k["kappa_vs_n"]["L5"]["n"] == [16]
  assert [v["id"] for v in stored["verdicts"]] == ["H1", "H2", "H3", "H4"]
  for v in stored["verdicts"]:
    assert {"id", "prediction", "estimate", "ci", "verdict"} <= set(v)
    assert v["verdict"] in ("supported", "refuted", "undecided")
  # Interrupted after all but one point: collect_only rebuilds results.json and computes
  # nothing; a rerun then computes only that point.
  points = work / "points"
  victim = points / f"{kappa_study.run_id('sst2', (5,), 1, 'b', 10.0, 'nonlinear')}.json"
  victim.unlink()
  before = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  only = config.copy_and_resolve_references()
  only.collect_only = True
  partial = kappa_study.run(only, str(work))
  assert not victim.exists() and {p.name: p.stat().st_mtime_ns for p in points.iterdir()} == before
  assert partial["points_done"] == 21 and not partial["complete"] and len(partial["runs"]) == 19
  assert partial["exploratory"] == partial["rho_vs_lin_gap"] == "computed when every point exists"
  assert isinstance(stored["exploratory"], list) and isinstance(stored["rho_vs_lin_gap"], list)
  assert json.loads((work / "results.json").read_text())["points_done"] == 21
  again = kappa_study.run(config, str(work))
  after = {p.name: p.stat().st_mtime_ns for p in points.iterdir()}
  assert victim.exists() and {k for k in after if after[k] != before.get(k)} == {victim.name}
  assert again["complete"] and len(again["runs"]) == 20
