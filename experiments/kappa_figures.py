"""Figures of the κ study and the selection study, from their stored results.json.

  python -m experiments.figures --only=kappa_study,selection_study   # (make figures)

Drawn only once a study is complete: an incomplete study gives no figure (no
interim looks at predictor-outcome relations), and the callers
(``experiments.figures``, notebooks 03 and 05) say so. Every plotted number is
one of results.json, named in each function's docstring.

* :func:`plot_kappa_study` -> kappa_study_verdicts.png (H1-H4: ρ and partial ρ
  with their Holm-level CIs), kappa_study_rho_vs_lin_gap.png (ρ against median
  lin_gap per cell), kappa_study_kappa_vs_n.png (κ against the number of examples);
* :func:`plot_selection_study` -> selection_study_arms.png (dev metric per arm and
  seed; selector − arm differences with their Holm-level CIs).
"""
import pathlib

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import kappa_analysis, kappa_findings

VERDICT_COLORS = {"supported": "C2", "refuted": "C3", "undecided": "C7"}
REGIME_MARKERS = {"a": "o", "b": "^"}
ARMS = ("selector", "last2", "first2", "random")


def _num(v) -> float:
  """JSON null (stored inf/nan) -> nan."""
  return float("nan") if v is None else float(v)


def _interval(ax, at: float, est, ci, vertical: bool, **style) -> None:
  """A marker at ``est`` and a line over ``ci`` (either may be missing) at position ``at``."""
  lo, hi = (_num(c) for c in (ci or (None, None)))
  line = {k: v for k, v in style.items() if k in ("color", "alpha")}
  if np.isfinite(lo) and np.isfinite(hi):
    xy = ([at, at], [lo, hi]) if vertical else ([lo, hi], [at, at])
    ax.plot(*xy, "-", linewidth=1.2, **line)
  if np.isfinite(_num(est)):
    xy = ([at], [_num(est)]) if vertical else ([_num(est)], [at])
    ax.plot(*xy, linestyle="none", **style)


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


# --- The κ study --------------------------------------------------------------------------

def plot_kappa_study(results: dict, outdir) -> list[str]:
  """The κ study's figures into ``outdir``; [] (and a printed line) until it is complete."""
  if not results.get("complete"):
    print(f"kappa_study: no figures until every point exists "
          f"({results.get('points_done')} of {results.get('points_total')} points)")
    return []
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  config = results["config"]
  paths = [outdir / f"kappa_study_{n}.png" for n in ("verdicts", "rho_vs_lin_gap", "kappa_vs_n")]
  plot_verdicts(results["verdicts"], config["min_effect"], paths[0])
  plot_rho_vs_lin_gap(results["rho_vs_lin_gap"], config["tasks"], config["lin_gap_max"],
                      paths[1])
  plot_kappa_vs_n(results["kernels"], config["tasks"], paths[2])
  return [str(p) for p in paths]


def plot_verdicts(verdicts: list, min_effect: float, path) -> None:
  """H1-H4 top to bottom: ρ (filled) and the partial ρ controlling depth and size
  (open) with their Holm-level CIs (``verdicts[]``: estimate, ci, partial,
  partial_ci), coloured by verdict; dotted lines at ±``min_effect``."""
  fig = _new_figure(8.0, 1.4 + 0.7 * len(verdicts))
  ax = fig.add_subplot(1, 1, 1)
  for i, v in enumerate(verdicts):
    y, color = len(verdicts) - 1 - i, VERDICT_COLORS.get(v["verdict"], "k")
    _interval(ax, y + 0.12, v["estimate"], v["ci"], False, color=color, marker="o",
              markersize=7)
    _interval(ax, y - 0.12, v["partial"], v["partial_ci"], False, color=color, marker="s",
              markersize=6, markerfacecolor="white")
    ax.text(1.02, y, v["verdict"], color=color, fontsize=9, va="center",
            transform=ax.get_yaxis_transform())
  ax.axvline(0.0, color="k", linewidth=0.8)
  for x in (-min_effect, min_effect):
    ax.axvline(x, color="k", linewidth=0.8, linestyle=":")
  ax.set_yticks(range(len(verdicts)))
  ax.set_yticklabels([kappa_findings.short_label(v) for v in reversed(verdicts)], fontsize=7)
  ax.set_xlim(-1.05, 1.05)
  ax.set_ylim(-0.6, len(verdicts) - 0.4)
  ax.set_xlabel("Spearman ρ (filled) and partial ρ controlling depth and size (open), "
                "Holm-level CIs")
  fig.tight_layout()
  fig.savefig(path)


def plot_rho_vs_lin_gap(rows: list, tasks, lin_gap_max: float, path) -> None:
  """One panel per kernel × outcome: per nonlinear cell, ρ of κ_λ (filled) and the
  partial ρ (open, shifted right) with uncorrected 95% CIs against the cell's median
  lin_gap (``rho_vs_lin_gap``); colour: task, marker: regime, large: λ*; dashed: the
  lin_gap gate."""
  kernels, outcomes = kappa_analysis.RHO_VS_LIN_GAP_KERNELS, kappa_analysis.OUTCOMES
  fig = _new_figure(5.5 * len(outcomes), 4.2 * len(kernels))
  color = {t: f"C{i}" for i, t in enumerate(tasks)}
  for i, kernel in enumerate(kernels):
    for j, outcome in enumerate(outcomes):
      ax = fig.add_subplot(len(kernels), len(outcomes), i * len(outcomes) + j + 1)
      mine = [r for r in rows if (r["kernel"], r["outcome"]) == (kernel, outcome)]
      gaps = np.array([_num(r["median_lin_gap"]) for r in mine])
      log_x = gaps.size > 0 and bool(np.all(gaps > 0))
      for r, gap in zip(mine, gaps):
        style = dict(color=color.get(r["task"], "k"), marker=REGIME_MARKERS.get(r["regime"], "s"),
                     markersize=9 if r["lambda_star"] else 5)
        _interval(ax, gap, r["rho"], r["ci"], True, **style)
        _interval(ax, gap * 1.06 if log_x else gap + 0.005, r["partial"], r["partial_ci"], True,
                  markerfacecolor="white", **style)
      ax.axhline(0.0, color="k", linewidth=0.8)
      ax.axvline(lin_gap_max, color="k", linewidth=0.8, linestyle="--")
      if log_x:
        ax.set_xscale("log")
      ax.set_ylim(-1.05, 1.05)
      ax.set_xlabel("median lin_gap of the cell")
      ax.set_ylabel(f"ρ(κ_λ, {kappa_findings.outcome_words(outcome)})")
      ax.set_title(f"κ_λ of the {kappa_findings.kernel_words(kernel)}", fontsize=9)
      if i == j == 0:
        handles = [ax.plot([], [], "o", color=c, label=t)[0] for t, c in color.items()]
        handles += [ax.plot([], [], m, color="k", markerfacecolor="white",
                            label=f"regime ({g})")[0] for g, m in REGIME_MARKERS.items()]
        ax.legend(handles=handles, fontsize=7, loc="lower left")
  fig.tight_layout()
  fig.savefig(path)


def _depth(label: str) -> int:
  """``L2-4`` -> 4 (the deepest layer of the set)."""
  return max(int(i) for i in label[1:].split("-"))


def plot_kappa_vs_n(kernels: list, tasks, path) -> None:
  """One panel per task: κ of the plain flattened kernel with head on the first N
  examples (``kernels[].kappa_vs_n``), one line per layer set × seed, coloured by depth."""
  fig = _new_figure(4.2 * max(1, len(tasks)), 3.8)
  cmap = matplotlib.colormaps["viridis"]
  for t, task in enumerate(tasks):
    ax = fig.add_subplot(1, max(1, len(tasks)), t + 1)
    for k in kernels:
      if k["task"] != task:
        continue
      for label, curve in k["kappa_vs_n"].items():
        ax.plot(curve["n"], [_num(v) for v in curve["kappa"]], "-o", linewidth=0.8,
                markersize=2, alpha=0.6, color=cmap(_depth(label) / 5))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("N (examples)")
    ax.set_ylabel("κ (plain flattened kernel with head)")
    ax.set_title(f"{task}: colour = deepest layer (0 dark, 5 light)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


# --- The selection study ------------------------------------------------------------------

def plot_selection_study(results: dict, outdir) -> list[str]:
  """The selection study's figure into ``outdir``; [] (and a printed line) until complete."""
  if not results.get("complete"):
    print("selection_study: no figures until every arm exists "
          f"({results.get('verdict', {}).get('reason', 'incomplete')})")
    return []
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  path = outdir / "selection_study_arms.png"
  plot_arms(results["arms"], results["comparisons"], results["config"]["tasks"], path)
  return [str(path)]


def plot_arms(arms: list, comparisons: list, tasks, path) -> None:
  """Per task, the dev metric of each arm per seed (dots) and its mean (bar)
  (``arms[]``); last panel, selector − arm per task and pooled with the Holm-level CIs
  (``comparisons[]``: mean_difference, ci)."""
  fig = _new_figure(3.6 * (len(tasks) + 1), 3.8)
  for t, task in enumerate(tasks):
    ax = fig.add_subplot(1, len(tasks) + 1, t + 1)
    for x, arm in enumerate(ARMS):
      values = [_num(a["dev_metric"]) for a in arms if (a["task"], a["arm"]) == (task, arm)]
      if values:
        ax.bar(x, np.nanmean(values), color="C3" if arm == "selector" else "C7", alpha=0.6)
        ax.plot(np.full(len(values), x), values, "k.", markersize=4)
    ax.set_xticks(range(len(ARMS)))
    ax.set_xticklabels(ARMS, fontsize=8)
    finite = [_num(a["dev_metric"]) for a in arms if a["task"] == task]
    finite = [v for v in finite if np.isfinite(v)]
    if finite:
      ax.set_ylim(max(0.0, min(finite) - 0.05), max(finite) + 0.02)
    ax.set_ylabel("dev metric")
    ax.set_title(task, fontsize=9)
  ax = fig.add_subplot(1, len(tasks) + 1, len(tasks) + 1)
  for y, c in enumerate(reversed(comparisons)):
    _interval(ax, y, c["mean_difference"], c["ci"], False, color="C3" if c["task"] == "pooled"
              else "C0", marker="o", markersize=5)
  ax.axvline(0.0, color="k", linewidth=0.8)
  ax.set_yticks(range(len(comparisons)))
  ax.set_yticklabels([f"{c['task']}: − {c['arm']}" for c in reversed(comparisons)], fontsize=7)
  ax.set_xlabel("selector − arm, dev metric (Holm-level CI)")
  fig.tight_layout()
  fig.savefig(path)
