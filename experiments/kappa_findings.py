"""The κ and selection studies' findings as markdown, from their stored results.json.

  python tools/render_kappa_findings.py     # README Findings §4-§5 from docs/results

Pure functions of the results dicts as loaded from JSON (inf and nan stored as
null), for the README (pasted in, so the rewrite is mechanical) and notebooks
03 and 05. Each table's caption names the results.json keys its numbers come
from; nothing here computes a statistic (the κ-vs-N and asymmetry summaries
take medians and ranges of stored values, and say so):

* :func:`status`: "study complete|incomplete: N of M points" and each
  hypothesis's verdict and reason;
* :func:`verdict_table`, :func:`hypothesis_sentences`, :func:`per_task_table`:
  H1-H4 (docs/preregistration.md §3-4, Amendment 2), every ρ with the partial ρ
  controlling depth and size beside it;
* :func:`rho_vs_lin_gap_table`, :func:`exploratory_table`, :func:`kernels_table`:
  the exploratory tables (uncorrected 95% CIs);
* :func:`selection_status`, :func:`selection_table`: the selection study (§6);
* :func:`render_kappa`, :func:`render_selection`: the sections put together.

No interim looks: until every point of the κ study exists, :func:`render_kappa`
shows :func:`status` only (no estimate, no exploratory table), and the
exploratory tables refuse.
"""
import math
from typing import Optional

import numpy as np

from experiments import kappa_analysis

KAPPA_SOURCE = "docs/results/kappa_study/results.json"
SELECTION_SOURCE = "docs/results/selection_study/results.json"
MINUS = "−"
_HYPOTHESES = {h["hypothesis"]: h for h in kappa_analysis.HYPOTHESES}
_KIND = {"plain": "plain", "sign": "sign (symmetric part)"}
_LAYOUT = {"flat": "flattened", "traced": "traced"}
_HEAD = {"head": "with head", "nohead": "without head"}
_OUTCOME = {"train_loss": "train loss", "dev_metric": "dev metric"}
_STAT = {"kappa": "κ (clamped, §2)", "kappa_lambda": "κ_λ", "lambda_min": "λmin",
         "lambda_max": "λmax", "effective_rank": "effective rank", "alignment": "alignment",
         "depth": "depth (no kernel)", "size": "size (no kernel)"}
_KAPPA_KEYS = ("points_done", "points_total", "complete", "config", "verdicts")
_SELECTION_KEYS = ("complete", "config", "arms", "comparisons", "criterion", "verdict")


# --- Formatting ---------------------------------------------------------------------------

def _finite(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_signed(v, decimals: int = 2) -> str:
  """+0.62 / −0.26 (typographic minus); "n/a" for null, nan or inf."""
  return f"{v:+.{decimals}f}".replace("-", MINUS) if _finite(v) else "n/a"


def fmt_ci(v, ci, decimals: int = 2) -> str:
  """"+0.62 [+0.31, +0.85]"; the bracket is left out where there is no interval."""
  if not ci or len(ci) != 2:
    return fmt_signed(v, decimals)
  return (f"{fmt_signed(v, decimals)} [{fmt_signed(ci[0], decimals)}, "
          f"{fmt_signed(ci[1], decimals)}]")


def fmt_num(v, digits: int = 3) -> str:
  """``digits`` significant digits; "n/a" for null, nan or inf."""
  return f"{v:.{digits}g}" if _finite(v) else "n/a"


def _cell(text) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list, rows: list) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def outcome_words(name: str) -> str:
  """``train_loss`` -> "train loss"."""
  return _OUTCOME.get(name, name)


def kernel_words(name: str) -> str:
  """``plain_flat_head`` -> "plain flattened kernel with head"."""
  parts = name.split("_")
  if len(parts) != 3:
    return name
  kind, layout, head = parts
  return f"{_KIND.get(kind, kind)} {_LAYOUT.get(layout, layout)} kernel {_HEAD.get(head, head)}"


def _require(results: dict, keys, what: str) -> None:
  if not isinstance(results, dict):
    raise ValueError(f"{what}: expected a results.json object, got {type(results).__name__}")
  missing = [k for k in keys if k not in results]
  if missing:
    raise ValueError(f"{what}: results.json lacks {', '.join(missing)}")


# --- The κ study: confirmatory ------------------------------------------------------------

def _hypothesis(v: dict) -> dict:
  """The ``kappa_analysis.HYPOTHESES`` entry of a verdict record."""
  h = _HYPOTHESES.get(v.get("id"))
  if h is None:
    raise ValueError(f"verdicts: unknown hypothesis id {v.get('id')!r} "
                     f"(known: {', '.join(_HYPOTHESES)})")
  return h


def describe(v: dict) -> str:
  """A hypothesis in words, e.g. "regime (a): ρ(κ_λ of the plain flattened kernel with
  head, train loss) at λ*, predicted > 0"."""
  h = _hypothesis(v)
  what = f"ρ(κ_λ of the {kernel_words(h['kernel'])}, {outcome_words(h['outcome'])})"
  at = f"{what} at λ* minus {what} at λ = 0" if h["lam"] == "star-0" else f"{what} at λ*"
  return f"regime ({h['regime']}): {at}, predicted {'>' if h['sign'] > 0 else '<'} 0"


def short_label(v: dict) -> str:
  """E.g. "H2: κ_λ plain_flat_head vs train loss, (a), λ* − λ=0, > 0" (plot labels)."""
  h = _hypothesis(v)
  at = "λ* − λ=0" if h["lam"] == "star-0" else "λ*"
  return (f"{v['id']}: κ_λ {h['kernel']} vs {outcome_words(h['outcome'])}, ({h['regime']}), "
          f"{at}, {'>' if h['sign'] > 0 else '<'} 0")


def status(kappa: dict) -> str:
  """"study complete|incomplete: N of M points", then per hypothesis "H1: verdict (reason)".

  Safe at any time: no estimate, only what the verdict records say.
  """
  _require(kappa, _KAPPA_KEYS, "kappa study")
  state = "complete" if kappa["complete"] else "incomplete"
  lines = [f"study {state}: {kappa['points_done']:,} of {kappa['points_total']:,} points"]
  lines += [f"{v['id']}: {v['verdict']} ({v['reason']})" for v in kappa["verdicts"]]
  return "\n".join(lines)


def _stars(lambda_star: Optional[dict]) -> str:
  if not lambda_star:
    return "n/a"
  return ", ".join(f"{t} {fmt_num(l)}" for t, l in lambda_star.items())


def verdict_table(kappa: dict) -> str:
  """Markdown: one row per hypothesis, from ``verdicts`` (estimate, ci, partial,
  partial_ci at the Holm level; holm_level; p; lambda_star; verdict; reason)."""
  _require(kappa, _KAPPA_KEYS, "kappa study")
  rows = [[v["id"], describe(v), fmt_ci(v["estimate"], v["ci"]),
           fmt_ci(v["partial"], v["partial_ci"]), fmt_num(v["holm_level"]), fmt_num(v["p"], 2),
           _stars(v["lambda_star"]), f"**{v['verdict']}**", v["reason"]]
          for v in kappa["verdicts"]]
  return _table(["id", "hypothesis", "ρ [Holm-level CI]",
                 "partial ρ, depth and size controlled [Holm-level CI]", "Holm level", "p",
                 "λ* per task", "verdict", "reason"], rows)


def hypothesis_sentence(v: dict) -> str:
  """One plain sentence: the hypothesis, its verdict, ρ and the partial ρ, the reason."""
  head = f"**{v['id']}** ({describe(v)}) is **{v['verdict']}**"
  if v["estimate"] is None:
    return f"{head}: {v['reason']}."
  return (f"{head}: ρ = {fmt_ci(v['estimate'], v['ci'])} and, controlling depth and size, "
          f"partial ρ = {fmt_ci(v['partial'], v['partial_ci'])} (CIs at Holm level "
          f"{fmt_num(v['holm_level'])}); {v['reason']}.")


def hypothesis_sentences(kappa: dict) -> list[str]:
  _require(kappa, _KAPPA_KEYS, "kappa study")
  return [hypothesis_sentence(v) for v in kappa["verdicts"]]


def per_task_table(kappa: dict) -> str:
  """Markdown: per hypothesis and task, ρ with the partial ρ beside it
  (``verdicts[].per_task``, ``per_task_partial``; descriptive, no CI)."""
  _require(kappa, _KAPPA_KEYS, "kappa study")
  tasks = list(kappa["config"]["tasks"])
  rows = []
  for v in kappa["verdicts"]:
    raw, part = v.get("per_task") or {}, v.get("per_task_partial") or {}
    rows.append([v["id"]] + [f"{fmt_signed(raw.get(t))} (partial {fmt_signed(part.get(t))})"
                             for t in tasks])
  return _table(["id"] + [f"{t}: ρ (partial ρ)" for t in tasks], rows)


# --- The κ study: exploratory -------------------------------------------------------------

def _exploratory(kappa: dict, key: str) -> list:
  _require(kappa, _KAPPA_KEYS + ("cells", "kernels", key), "kappa study")
  if not kappa["complete"] or not isinstance(kappa[key], list):
    raise ValueError(f"kappa study: {key} is exploratory and exists only once every point "
                     f"does ({kappa['points_done']:,} of {kappa['points_total']:,})")
  return kappa[key]


def _rho_text(entry: Optional[dict]) -> str:
  """"ρ [CI]; partial ρ [CI]" of one exploratory entry (no partial for depth, size)."""
  if entry is None:
    return "n/a"
  text = fmt_ci(entry["rho"], entry["ci"])
  if "partial" in entry:
    text += f"; partial {fmt_ci(entry['partial'], entry['partial_ci'])}"
  return text


def rho_vs_lin_gap_table(kappa: dict) -> str:
  """Markdown: per nonlinear cell, median lin_gap and ρ, partial ρ of κ_λ per kernel ×
  outcome with uncorrected 95% CIs (``rho_vs_lin_gap``, the figure's data)."""
  rows = _exploratory(kappa, "rho_vs_lin_gap")
  series = list(dict.fromkeys((r["kernel"], r["outcome"]) for r in rows))
  cells = {}
  for r in rows:
    cells.setdefault((r["task"], r["regime"], r["lam"]), {})[(r["kernel"], r["outcome"])] = r
  out = []
  for (task, regime, lam), by_series in cells.items():
    first = next(iter(by_series.values()))  # the cell's fields are on every row
    out.append([task, regime, fmt_num(lam), fmt_num(first["median_lin_gap"]),
                "yes" if first["lambda_star"] else ""]
               + [_rho_text(by_series.get(s)) for s in series])
  return _table(["task", "regime", "λ", "median lin_gap", "λ*"]
                + [f"κ_λ {k} vs {outcome_words(o)}: ρ; partial ρ" for k, o in series], out)


def exploratory_table(kappa: dict, regime: str, kernel: str, outcome: str) -> str:
  """Markdown: at λ* of each task in ``regime``, ρ [CI] and partial ρ [CI] of every
  statistic of ``kernel`` (and of depth, size) against ``outcome`` (``exploratory``,
  the cells ``cells[].lambda_star`` marks)."""
  table = _exploratory(kappa, "exploratory")
  stars = {c["task"]: c["lam"] for c in kappa["cells"]
           if c["regime"] == regime and c["mode"] == "nonlinear" and c["lambda_star"]}
  entries = {e["task"]: e["rho"] for e in table if e["regime"] == regime
             and e["mode"] == "nonlinear" and stars.get(e["task"]) == e["lam"]}
  tasks = [t for t in kappa["config"]["tasks"] if t in entries]
  names = [f"{kernel}.{s}" for s in kappa_analysis.EXPLORATORY_STATS] + ["depth", "size"]
  rows = [[_STAT.get(name.split(".")[-1], name)]
          + [_rho_text(entries[t].get(f"{name}:{outcome}")) for t in tasks] for name in names]
  return _table([f"{kernel_words(kernel)} vs {outcome_words(outcome)}"]
                + [f"{t} (λ* = {fmt_num(stars[t])})" for t in tasks], rows)


def _median_range(values) -> str:
  v = [x for x in values if _finite(x)]
  if not v:
    return "n/a"
  return f"{fmt_num(float(np.median(v)))} [{fmt_num(min(v))}, {fmt_num(max(v))}]"


def kernels_table(kappa: dict) -> str:
  """Markdown: per task, κ of the plain flattened kernel with head on the first N
  examples, and the sign kernel's relative asymmetry ‖K − Kᵀ‖/‖K‖: median [min, max]
  over layer sets × seeds of ``kernels[].kappa_vs_n``, ``sign_asymmetry``."""
  _exploratory(kappa, "exploratory")
  kernels = kappa["kernels"]
  ns = sorted({n for k in kernels for c in k["kappa_vs_n"].values() for n in c["n"]})
  rows = []
  for task in kappa["config"]["tasks"]:
    mine = [k for k in kernels if k["task"] == task]
    by_n = {n: [kap for k in mine for c in k["kappa_vs_n"].values()
                for m, kap in zip(c["n"], c["kappa"]) if m == n] for n in ns}
    rows.append([task] + [_median_range(by_n[n]) for n in ns]
                + [_median_range([a for k in mine for a in k["sign_asymmetry"].values()])])
  return _table(["task"] + [f"κ at N = {n}" for n in ns] + ["sign kernel asymmetry"], rows)


def render_kappa(kappa: Optional[dict], source: str = KAPPA_SOURCE) -> str:
  """The κ study's findings: status only until every point exists; then the verdict
  table, one sentence per hypothesis, per-task ρ and the exploratory tables."""
  if kappa is None:
    return f"**κ study: not started** (no `{source}`)."
  _require(kappa, _KAPPA_KEYS, "kappa study")
  first, *per_h = status(kappa).splitlines()
  made = f"(`{source}`; rendered by `python tools/render_kappa_findings.py`)"
  if not kappa["complete"]:
    return "\n".join([f"**κ study: {first}** {made}. Estimates appear when every run of a "
                      "hypothesis's cells exists, the exploratory tables when every point "
                      "does (no interim looks).", ""] + [f"* {line}" for line in per_h])
  family = {h["regime"]: h["kernel"] for h in kappa_analysis.HYPOTHESES}
  parts = [f"**κ study: {first}** {made}.", "",
           "Verdicts (`verdicts`: `estimate`, `ci`, `partial`, `partial_ci` at the Holm "
           "level, `holm_level`, `p`, `lambda_star`, `verdict`, `reason`):", "",
           verdict_table(kappa), ""]
  parts += [f"* {s}" for s in hypothesis_sentences(kappa)]
  parts += ["", "Per task (`verdicts[].per_task`, `per_task_partial`):", "",
            per_task_table(kappa), "",
            "**Exploratory** (not pre-registered; uncorrected 95% CIs from the crossed "
            "bootstrap within each cell).", "",
            "ρ against median lin_gap per cell (`rho_vs_lin_gap`; figure "
            "`docs/figures/kappa_study_rho_vs_lin_gap.png`):", "",
            rho_vs_lin_gap_table(kappa), ""]
  for regime in sorted(family):
    for outcome in kappa_analysis.OUTCOMES:
      parts += [f"Regime ({regime}) at λ* (`exploratory`):", "",
                exploratory_table(kappa, regime, family[regime], outcome), ""]
  parts += ["κ vs N and the sign kernel's asymmetry (`kernels`):", "", kernels_table(kappa)]
  return "\n".join(parts)


# --- The selection study (§6) -------------------------------------------------------------

def selection_status(selection: dict) -> str:
  """"study complete|incomplete: N of M (task, seed) units", the criterion, the verdict."""
  _require(selection, _SELECTION_KEYS, "selection study")
  cfg = selection["config"]
  planned = len(cfg["tasks"]) * len(cfg["seeds"])
  done = len({(a["task"], a["seed"]) for a in selection["arms"]})
  state = "complete" if selection["complete"] else "incomplete"
  c, v = selection["criterion"], selection["verdict"]
  return "\n".join([
      f"study {state}: {done} of {planned} (task, seed) units",
      f"criterion: {c['direction']} {_STAT.get(c['stat'], c['stat'])} of the "
      f"{kernel_words(c['kernel'])}, regime ({c['regime']}), λ = {fmt_num(c['lam'])} "
      f"({'final' if c.get('final') else 'provisional'}; {c.get('source', 'source not recorded')})",
      f"§6: {v['verdict']} ({v['reason']})"])


def selection_table(selection: dict) -> str:
  """Markdown: selector − arm dev metric per task and pooled (``comparisons``: n,
  mean_difference with the Holm-level CI, p, holm_level, holm_rejected)."""
  _require(selection, _SELECTION_KEYS, "selection study")
  rows = [[c["task"], f"selector − {c['arm']}", c["n"], fmt_ci(c["mean_difference"], c["ci"], 3),
           fmt_num(c["p"], 2), fmt_num(c["holm_level"]), "yes" if c["holm_rejected"] else "no"]
          for c in selection["comparisons"]]
  return _table(["task", "difference", "paired units", "dev metric difference [Holm-level CI]",
                 "p",
                 "Holm level", "Holm rejects"], rows)


def render_selection(selection: Optional[dict], source: str = SELECTION_SOURCE) -> str:
  """The selection study's findings: status, and the comparisons once complete."""
  if selection is None:
    return (f"**Selection study: not started** (no `{source}`; it starts when every SST-2 "
            "run of the κ study exists).")
  first, *rest = selection_status(selection).splitlines()
  parts = [f"**Selection study: {first}** (`{source}`).", ""] + [f"* {line}" for line in rest]
  if selection["complete"]:
    parts += ["", "Comparisons (`comparisons`; `verdict` from the pooled rows):", "",
              selection_table(selection)]
  return "\n".join(parts)
