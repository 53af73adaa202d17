"""The κ and selection studies' findings as text (experiments/kappa_findings.py and
tools/render_kappa_findings.py) and figures (experiments/kappa_figures.py, through
experiments.figures) on synthetic results.json files.

The κ results come from ``kappa_analysis.analyse`` on a small synthetic design,
stored as collect stores them (``records.jsonable``: nan/inf -> null), so the
renderer reads the real shape. The checks: every number rendered is a stored
number (parsed back from the text, to its printed precision), every ρ has its
partial beside it, and nothing about predictor-outcome relations is shown before
every point exists.
"""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import kappa_study as kappa_config
from experiments import figures, kappa_analysis, kappa_figures, kappa_findings
from ntkft import records
from tests.conftest import REPO

TASKS = ("t1", "t2")
SETS = [(i,) for i in range(6)] + [(0, 1), (2, 3), (4, 5)]
SEEDS = (0, 1)
N = 128
NUMBER = re.compile(r"[+−-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _runs():
  """(runs, planned): TASKS × SETS × SEEDS × regimes (a, b) × λ (0, 10), nonlinear; the
  outcomes follow log κ_λ of the plain kernel with noise; lin_gap ≈ 0.5 at λ = 0, 0.05 at 10."""
  rng = np.random.default_rng(0)
  runs, planned = [], {}
  for task in TASKS:
    for s in SETS:
      lmin, lmax = 10 ** rng.uniform(-3, 0), 10 ** rng.uniform(2, 4)
      for seed in SEEDS:
        pred = {"lambda_min": lmin, "lambda_max": lmax * (1 + 0.01 * seed),
                "kappa": lmax / lmin, "effective_rank": rng.uniform(1, 50),
                "alignment": rng.uniform(0, 1)}
        preds = {"plain_flat_head": pred, "sign_flat_head": dict(pred)}
        for regime in ("a", "b"):
          for lam in (0.0, 10.0):
            logk = np.log(kappa_analysis.kappa_lambda(pred, N, lam))
            runs.append({"task": task, "layers": list(s), "seed": seed, "lam": lam,
                         "regime": regime, "mode": "nonlinear", "n_kernel": N,
                         "train_loss": logk + 0.3 * rng.normal(),
                         "dev_metric": -logk + 0.3 * rng.normal(),
                         "lin_gap": (0.5 if lam == 0 else 0.05) * (1 + 0.1 * rng.normal()),
                         "plateaued": True, "diverged": False, "predictors": preds})
            planned.setdefault((task, regime, lam, "nonlinear"), []).append((s, seed))
  return runs, planned


def _kernels():
  """κ vs N and asymmetry per (task, seed); per task, κ at N = 16 is {10, 30, 20, 40}
  (median 25), at N = 32 {100, 200} (inf stored as null is dropped), asymmetry
  {0.01, 0.03, 0.02, 0.05} (median 0.025)."""
  return [{"task": t, "seed": s, "seconds": 1.0,
           "kappa_vs_n": {"L0": {"n": [16, 32], "kappa": [10.0 * (1 + s), 100.0 * (1 + s)]},
                          "L1": {"n": [16, 32], "kappa": [30.0 + 10 * s, float("inf")]}},
           "sign_asymmetry": {"L0": 0.01 * (1 + s), "L1": 0.03 + 0.02 * s}}
          for s in SEEDS for t in TASKS]


def _kappa_results(complete: bool) -> dict:
  """A results.json of the synthetic study; incomplete: t2's regime-(b) runs at λ = 10
  of seed 1 are missing (H3 incomplete, H1, H2, H4 computed) and, as in collect, the
  exploratory tables are not computed."""
  runs, planned = _runs()
  config = kappa_config.get_config()
  config.tasks, config.seeds, config.num_boot = TASKS, SEEDS, 50
  kept = runs if complete else [r for r in runs if not (
      r["task"] == "t2" and r["regime"] == "b" and r["lam"] == 10.0 and r["seed"] == 1)]
  out = kappa_analysis.analyse(config, kept, planned, num_boot_exploratory=30,
                               exploratory_tables=complete)
  total = len(runs) + len(TASKS) * len(SEEDS)
  return records.jsonable({
      "experiment": "kappa_study", "config": config.to_dict(),
      "points_done": total - (len(runs) - len(kept)), "points_total": total,
      "complete": complete, "kernels": _kernels(), "runs": kept, **out})


@pytest.fixture(scope="module")
def complete():
  return _kappa_results(True)


@pytest.fixture(scope="module")
def incomplete():
  return _kappa_results(False)


def _numbers(text: str) -> list[float]:
  return [float(t.replace("−", "-")) for t in NUMBER.findall(text)]


def _rows(table: str) -> list[list[str]]:
  """The body cells of a markdown table (header and rule dropped)."""
  lines = table.strip().splitlines()
  assert re.fullmatch(r"\|(---\|)+", lines[1]), lines[1]
  return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_verdict_table_numbers_are_the_stored_ones(complete):
  rows = _rows(kappa_findings.verdict_table(complete))
  assert [r[0] for r in rows] == ["H1", "H2", "H3", "H4"]
  for row, v in zip(rows, complete["verdicts"]):
    assert v["estimate"] is not None
    np.testing.assert_allclose(_numbers(row[2]), [v["estimate"], *v["ci"]], atol=0.005)
    np.testing.assert_allclose(_numbers(row[3]), [v["partial"], *v["partial_ci"]], atol=0.005)
    np.testing.assert_allclose(_numbers(row[4]), [v["holm_level"]], rtol=5e-3)
    assert row[6] == ", ".join(f"{t} {v['lambda_star'][t]:g}" for t in TASKS)
    assert row[7] == f"**{v['verdict']}**" and row[8] == v["reason"]
  assert sorted(float(r[4]) for r in rows) == pytest.approx([0.0125, 0.05 / 3, 0.025, 0.05],
                                                            abs=5e-5)  # printed to 4 places


def test_one_sentence_per_hypothesis_with_the_partial_beside_rho(complete):
  sentences = kappa_findings.hypothesis_sentences(complete)
  assert len(sentences) == 4
  for s, v in zip(sentences, complete["verdicts"]):
    assert s.startswith(f"**{v['id']}** (") and f"is **{v['verdict']}**" in s
    assert s.endswith(".") and "\n" not in s
    _, rho, partial = s.split("ρ = ")   # "... ρ = <raw> ... partial ρ = <partial> ..."
    assert rho.rstrip().endswith("partial")
    np.testing.assert_allclose(_numbers(rho)[:3], [v["estimate"], *v["ci"]], atol=0.005)
    np.testing.assert_allclose(_numbers(partial)[:3], [v["partial"], *v["partial_ci"]],
                               atol=0.005)
  assert "minus" in sentences[1] and "λ = 0" in sentences[1]   # H2: ρ(λ*) − ρ(0)
  assert "sign (symmetric part)" in sentences[2]                # H3: the sign kernel
  assert "predicted < 0" in sentences[3] and "dev metric" in sentences[3]


def test_per_task_table_puts_the_partial_beside_every_rho(complete):
  rows = _rows(kappa_findings.per_task_table(complete))
  for row, v in zip(rows, complete["verdicts"]):
    for cell, task in zip(row[1:], TASKS):
      assert "(partial " in cell
      np.testing.assert_allclose(_numbers(cell), [v["per_task"][task],
                                                  v["per_task_partial"][task]], atol=0.005)


def test_exploratory_tables(complete):
  rows = _rows(kappa_findings.rho_vs_lin_gap_table(complete))
  assert len(rows) == len(TASKS) * 2 * 2    # every nonlinear cell
  stored = {(r["task"], r["regime"], r["lam"], r["kernel"], r["outcome"]): r
            for r in complete["rho_vs_lin_gap"]}
  for row in rows:
    task, regime, lam = row[0], row[1], float(row[2])
    first = stored[(task, regime, lam, "plain_flat_head", "train_loss")]
    assert float(row[3]) == pytest.approx(first["median_lin_gap"], rel=5e-3)  # 3 digits
    assert (row[4] == "yes") == first["lambda_star"] == (lam == 10.0)
    for cell, (kernel, outcome) in zip(row[5:], [(k, o) for k in ("plain_flat_head",
                                                                  "sign_flat_head")
                                                 for o in ("train_loss", "dev_metric")]):
      e = stored[(task, regime, lam, kernel, outcome)]
      np.testing.assert_allclose(_numbers(cell), [e["rho"], *e["ci"], e["partial"],
                                                  *e["partial_ci"]], atol=0.005)
  table = kappa_findings.exploratory_table(complete, "a", "plain_flat_head", "dev_metric")
  header = table.splitlines()[0]
  assert "t1 (λ* = 10)" in header and "t2 (λ* = 10)" in header
  rows = _rows(table)
  assert [r[0] for r in rows] == ["κ (clamped, §2)", "κ_λ", "λmin", "λmax", "effective rank",
                                  "alignment", "depth (no kernel)", "size (no kernel)"]
  entry = {e["task"]: e["rho"] for e in complete["exploratory"]
           if (e["regime"], e["lam"], e["mode"]) == ("a", 10.0, "nonlinear")}
  e = entry["t2"]["plain_flat_head.kappa_lambda:dev_metric"]
  np.testing.assert_allclose(_numbers(rows[1][2]), [e["rho"], *e["ci"], e["partial"],
                                                     *e["partial_ci"]], atol=0.005)
  assert "partial" not in rows[6][1]    # depth is a covariate: ρ only
  rows = _rows(kappa_findings.kernels_table(complete))
  assert rows == [[t, "25 [10, 40]", "150 [100, 200]", "0.025 [0.01, 0.05]"] for t in TASKS]


def test_render_kappa_complete(complete):
  text = kappa_findings.render_kappa(complete)
  assert text.startswith(f"**κ study: study complete: {complete['points_total']:,} of "
                         f"{complete['points_total']:,} points**")
  for part in (kappa_findings.verdict_table(complete), kappa_findings.per_task_table(complete),
               kappa_findings.rho_vs_lin_gap_table(complete),
               kappa_findings.kernels_table(complete),
               *kappa_findings.hypothesis_sentences(complete)):
    assert part in text
  assert "**Exploratory**" in text and "uncorrected 95% CIs" in text
  assert kappa_findings.render_kappa(None, "x.json") == "**κ study: not started** (no `x.json`)."


def test_incomplete_study_shows_status_only(incomplete):
  v = {r["id"]: r for r in incomplete["verdicts"]}
  assert v["H3"]["reason"].startswith("incomplete") and v["H1"]["estimate"] is not None
  done, total = incomplete["points_done"], incomplete["points_total"]
  status = kappa_findings.status(incomplete).splitlines()
  assert status[0] == f"study incomplete: {done:,} of {total:,} points" and done < total
  assert status[1:] == [f"{h}: {v[h]['verdict']} ({v[h]['reason']})" for h in v]
  text = kappa_findings.render_kappa(incomplete)
  assert f"study incomplete: {done:,} of {total:,} points" in text
  assert "ρ =" not in text and "Exploratory" not in text
  # H1's estimate exists but is not shown: the only numbers are the point counts and
  # those of the reasons and of the hypotheses' definitions (λ = 0).
  allowed = set(_numbers(status[0])) | {0.0, 1.0, 2.0, 3.0, 4.0} | {   # H1-H4, λ = 0
      x for r in incomplete["verdicts"] for x in _numbers(r["reason"])}
  assert set(_numbers(text.split("\n", 1)[1])) <= allowed
  for fn in (kappa_findings.rho_vs_lin_gap_table, kappa_findings.kernels_table,
             lambda k: kappa_findings.exploratory_table(k, "a", "plain_flat_head",
                                                        "train_loss")):
    with pytest.raises(ValueError, match="exploratory and exists only once every point"):
      fn(incomplete)


def _selection(complete: bool) -> dict:
  """A selection results.json: tasks mrpc, rte × seeds 0-2; incomplete: 4 of 6 units."""
  units = [(t, s) for t in ("mrpc", "rte") for s in (0, 1, 2)][:6 if complete else 4]
  arms = [{"task": t, "seed": s, "arm": a, "dev_metric": 0.7} for t, s in units
          for a in ("selector", "last2", "first2", "random")]
  comparisons = [{"task": t, "arm": a, "n": 3, "mean_difference": 0.0123 * (i + 1),
                  "ci": [-0.0051, 0.0302 * (i + 1)], "p": 0.21, "holm_level": 0.05 / (3 - i),
                  "holm_rejected": False}
                 for t in ("mrpc", "rte", "pooled") for i, a in enumerate(("last2", "first2",
                                                                           "random"))]
  verdict = ({"verdict": "undecided", "reason": "a pooled Holm-level CI includes 0"} if complete
             else {"verdict": "undecided", "reason": "incomplete: rte seed 1: kappa point "
                   "kernel_rte_s1 not produced yet (+1 more)"})
  return {"config": {"tasks": ["mrpc", "rte"], "seeds": [0, 1, 2]}, "complete": complete,
          "arms": arms, "comparisons": comparisons if complete else [],
          "criterion": {"kernel": "plain_flat_head", "stat": "kappa", "direction": "min",
                        "regime": "b", "lam": 0.0, "final": True, "source": "test"},
          "verdict": verdict}


def test_selection_status_and_table():
  sel = _selection(False)
  status = kappa_findings.selection_status(sel).splitlines()
  assert status[0] == "study incomplete: 4 of 6 (task, seed) units"
  assert status[1].startswith("criterion: min κ (clamped, §2) of the plain flattened kernel "
                              "with head, regime (b), λ = 0 (final")
  assert status[2] == f"§6: undecided ({sel['verdict']['reason']})"
  text = kappa_findings.render_selection(sel)
  assert "study incomplete: 4 of 6 (task, seed) units" in text and "Comparisons" not in text
  sel = _selection(True)
  rows = _rows(kappa_findings.selection_table(sel))
  assert len(rows) == 9
  for row, c in zip(rows, sel["comparisons"]):
    assert row[:3] == [c["task"], f"selector − {c['arm']}", "3"]
    np.testing.assert_allclose(_numbers(row[3]), [c["mean_difference"], *c["ci"]], atol=5e-4)
  assert "Comparisons" in kappa_findings.render_selection(sel)
  assert "not started" in kappa_findings.render_selection(None)


def test_bad_input_is_a_one_line_error(complete):
  with pytest.raises(ValueError, match="kappa study: results.json lacks points_done"):
    kappa_findings.status({"verdicts": []})
  bad = {**complete, "verdicts": [{**complete["verdicts"][0], "id": "H9"}]}
  with pytest.raises(ValueError, match="unknown hypothesis id 'H9'"):
    kappa_findings.verdict_table(bad)
  with pytest.raises(ValueError, match="selection study: results.json lacks"):
    kappa_findings.selection_status({"complete": True})


def test_render_tool(complete, tmp_path):
  path = tmp_path / "results.json"
  path.write_text(json.dumps(complete))
  out = tmp_path / "findings.md"
  tool = str(REPO / "tools" / "render_kappa_findings.py")
  proc = subprocess.run([sys.executable, tool, f"--kappa={path}",
                         f"--selection={tmp_path / 'none.json'}", f"--out={out}"],
                        capture_output=True, text=True, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  text = out.read_text()
  assert kappa_findings.verdict_table(complete) in text
  assert f"(`{path}`; rendered by `python tools/render_kappa_findings.py`)" in text
  assert "**Selection study: not started**" in text
  proc = subprocess.run([sys.executable, tool, f"--kappa={tmp_path / 'missing.json'}"],
                        capture_output=True, text=True, cwd=tmp_path)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      f"render_kappa_findings: no results at {tmp_path / 'missing.json'}")


PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_only_once_a_study_is_complete(complete, incomplete, tmp_path, capsys):
  assert kappa_figures.plot_kappa_study(incomplete, tmp_path / "early") == []
  assert kappa_figures.plot_selection_study(_selection(False), tmp_path / "early") == []
  assert not (tmp_path / "early").exists()
  printed = capsys.readouterr().out
  assert (f"no figures until every point exists ({incomplete['points_done']} of "
          f"{incomplete['points_total']} points)") in printed
  paths = (kappa_figures.plot_kappa_study(complete, tmp_path / "k")
           + kappa_figures.plot_selection_study(_selection(True), tmp_path / "s"))
  assert [pathlib.Path(p).name for p in paths] == [
      "kappa_study_verdicts.png", "kappa_study_rho_vs_lin_gap.png", "kappa_study_kappa_vs_n.png",
      "selection_study_arms.png"]
  for p in paths:
    data = pathlib.Path(p).read_bytes()
    assert data[:8] == PNG and len(data) > 5000, p


def test_make_figures_draws_the_complete_study_and_skips_the_incomplete(complete, incomplete,
                                                                         tmp_path, capsys):
  for name, results in (("kappa_study", incomplete), ("selection_study", _selection(True))):
    (tmp_path / "results" / name).mkdir(parents=True)
    (tmp_path / "results" / name / "results.json").write_text(json.dumps(results))
  written = figures.regenerate(tmp_path / "results", tmp_path / "out",
                               ["kappa_study", "selection_study"])
  assert list(written) == ["selection_study"]
  assert "skip kappa_study: its results give no figures yet" in capsys.readouterr().out
  (tmp_path / "results" / "kappa_study" / "results.json").write_text(json.dumps(complete))
  written = figures.regenerate(tmp_path / "results", tmp_path / "out", ["kappa_study"])
  assert [pathlib.Path(p).name for p in written["kappa_study"]] == [
      "kappa_study_verdicts.png", "kappa_study_rho_vs_lin_gap.png", "kappa_study_kappa_vs_n.png"]
  index = (tmp_path / "out" / "index.md").read_text()
  assert "notebooks/03_kappa_vs_outcomes.ipynb" in index
  assert "](kappa_study_rho_vs_lin_gap.png)" in index
