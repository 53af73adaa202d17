"""The pre-registered analysis of the task-arithmetic study (preregistration §2-§4).

From the stored records of ``experiments.task_arithmetic`` (``runs``: one per run
point; ``merges``: one row per (method, mode, seed, subset, task)):

* :func:`chance_level` and :func:`learned`: the learned rule of §2 (a run learned
  its task if its dev metric beats chance on its own dev examples by the margin);
* :func:`projected_run_seconds`: §5's cost projection from the finished run points;
* :func:`confirmatory`: hypothesis H of §3, D = mean over the included (task, seed)
  cells of d = n(linearized) − n(nonlinear) in the all-task merges, its crossed
  bootstrap CI (:func:`crossed_bootstrap`, tasks × seeds, redrawn when a resample
  has no included cell) and :func:`verdict_rule`; beside it the same contrast on
  the absolute metric, on the single-task metrics, and D per task and per seed;
* :func:`exploratory`: §4's tables (per k, TIES, negation, ξ, kernel overlap vs ξ),
  each labelled exploratory.
"""
import itertools

import numpy as np

from experiments import common
from ntkft import data
from ntkft.evals import cluster_stats
from ntkft.evals import metrics as metrics_lib

CHANCE_METRICS = ("accuracy", "f1")  # beaten by a margin; others need min_correlation


def chance_level(task: str, labels: np.ndarray) -> float | None:
  """The chance score of the task's primary metric on these labels: the majority-class
  frequency (accuracy), the F1 of predicting every example positive (F1), None for
  Matthews and Pearson (the rule compares them with a fixed minimum)."""
  spec = data.get_task(task)
  labels = np.asarray(labels)
  if spec.primary_metric == "accuracy":
    return float(np.bincount(labels.astype(int)).max() / len(labels))
  if spec.primary_metric == "f1":
    return metrics_lib.f1(np.ones_like(labels), labels)
  return None


def learned(metric_name: str, value, chance, margin: float, min_correlation: float) -> bool:
  """§2's rule: accuracy/F1 ≥ chance + margin; Matthews/Pearson ≥ min_correlation."""
  if value is None:
    return False
  if metric_name in CHANCE_METRICS:
    return chance is not None and value >= chance + margin
  return value >= min_correlation


def projected_run_seconds(config, runs: list[dict]) -> float | None:
  """§5's projection of all run points' seconds from the finished ones: their measured
  seconds plus, per missing (task, mode, seed), the mean seconds of the finished points
  of its task and mode (else of its mode); None while a mode has no finished point.
  Failed points count with their seconds but are no model for missing ones."""
  done = {(r["task"], r["mode"], r["seed"]): r for r in runs}
  good = [r for r in runs if not r.get("failed")]
  mean = lambda rows: float(np.mean([r["seconds"] for r in rows])) if rows else None
  total = float(sum(r["seconds"] for r in runs))
  for t, m, s in itertools.product(config.tasks, config.modes, config.seeds):
    if (t, m, s) in done:
      continue
    guess = mean([r for r in good if (r["task"], r["mode"]) == (t, m)])
    if guess is None:
      guess = mean([r for r in good if r["mode"] == m])
    if guess is None:
      return None
    total += guess
  return total


def crossed_bootstrap(d: np.ndarray, num_boot: int, seed: int) -> np.ndarray:
  """(num_boot,) resampled means of the included cells of a (T, S) grid d (nan: excluded).

  Each resample draws T rows with replacement, then (independently) S columns with
  replacement, from ``np.random.default_rng(seed)`` (rows first, as
  ``ntkft.evals.cluster_stats.crossed_indices``); cell (t, s) then counts #t · #s times
  and the estimate is the weighted mean of d over the included cells. A resample with
  no included cell is drawn again.

  Raises:
    ValueError: no included cell.
  """
  d = np.asarray(d, float)
  included = np.isfinite(d)
  if not included.any():
    raise ValueError("crossed_bootstrap: no included cell")
  values = np.where(included, d, 0.0)
  num_t, num_s = d.shape
  rng = np.random.default_rng(seed)
  out = np.empty(num_boot)
  i = 0
  while i < num_boot:
    wt = np.bincount(rng.choice(num_t, num_t), minlength=num_t)
    ws = np.bincount(rng.choice(num_s, num_s), minlength=num_s)
    w = (wt[:, None] * ws[None, :]) * included
    total = w.sum()
    if total == 0:
      continue
    out[i] = float((w * values).sum() / total)
    i += 1
  return out


def verdict_rule(ci, incomplete: str, refute_below: float) -> tuple[str, str]:
  """§3's verdict, in order: undecided (incomplete); supported if L > 0; refuted if
  U < refute_below; undecided otherwise. Returns (verdict, reason)."""
  if incomplete:
    return "undecided", f"incomplete: {incomplete}"
  lo, hi = ci
  if lo > 0:
    return "supported", "the CI lies above 0: linearized LoRA merges better"
  if hi < refute_below:
    return "refuted", (f"the CI excludes an advantage of linearized LoRA of {refute_below} "
                       "normalized points or more")
  return "undecided", f"the CI contains 0 and reaches {refute_below} or more"


def _grid(rows_by_cell, tasks, seeds, field):
  """(T, S) lin − nonlin of ``field``; nan where a side is missing or None."""
  d = np.full((len(tasks), len(seeds)), np.nan)
  for i, t in enumerate(tasks):
    for j, s in enumerate(seeds):
      lin, non = rows_by_cell.get((t, "linearized", s)), rows_by_cell.get((t, "nonlinear", s))
      if lin is not None and non is not None and None not in (lin[field], non[field]):
        d[i, j] = lin[field] - non[field]
  return d


def confirmatory(config, runs: list[dict], merges: list[dict]) -> dict:
  """Hypothesis H (§3) from the run records and the merge rows; see the module docstring."""
  tasks, seeds = list(config.tasks), list(config.seeds)
  by_run = {(r["task"], r["mode"], r["seed"]): r for r in runs}
  ok = {k: r for k, r in by_run.items() if r.get("dev_metric") is not None}
  k_all = {(m["task"], m["mode"], m["seed"]): m for m in merges
           if m["method"] == "addition" and m["k"] == len(tasks)}
  missing_runs = sorted(f"{t}/{m}/s{s}" for t in tasks for m in ("nonlinear", "linearized")
                        for s in seeds if (t, m, s) not in ok)
  missing_merges = sorted({f"{m}/s{s}" for t in tasks for m in ("nonlinear", "linearized")
                           for s in seeds if (t, m, s) not in k_all})
  included, excluded = {}, []
  for t in tasks:
    for s in seeds:
      learned_both = all(ok.get((t, m, s), {}).get("learned") for m in ("nonlinear", "linearized"))
      included[(t, s)] = learned_both
      if not learned_both:
        excluded.append(f"{t}/s{s}")
  reasons = []
  if missing_runs:
    reasons.append(f"{len(missing_runs)} run(s) missing or failed: {missing_runs}")
  if missing_merges:
    reasons.append(f"all-task merges missing for {missing_merges}")
  if len(excluded) > config.verdict.max_excluded:
    reasons.append(f"{len(excluded)} of {len(tasks) * len(seeds)} cells excluded by the learned "
                   f"rule (at most {config.verdict.max_excluded} allowed)")
  normalized = _grid(k_all, tasks, seeds, "normalized")
  lacking = [f"{t}/s{s}" for i, t in enumerate(tasks) for j, s in enumerate(seeds)
             if included[(t, s)] and not np.isfinite(normalized[i, j])]
  if lacking and not missing_merges:  # a merge whose metric is null counts as missing
    reasons.append(f"included cells without a normalized all-task merge metric: {lacking}")
  out = {"hypothesis": "H", "prediction": "D > 0 (linearized LoRA merges better at k = all)",
         "statistic": "mean normalized dev metric, linearized − nonlinear, all-task merge",
         "excluded_cells": excluded, "n_cells": int(sum(included.values())),
         "estimate": None, "ci": None}
  if not reasons and not any(included.values()):
    reasons.append("no included cell")
  if reasons:  # no interim looks: nothing about merges is estimated while incomplete
    out["verdict"], out["reason"] = verdict_rule(None, "; ".join(reasons), 0.0)
    return out
  mask = np.array([[included[(t, s)] for s in seeds] for t in tasks])
  d = np.where(mask, normalized, np.nan)
  v = config.verdict
  boot = crossed_bootstrap(d, v.num_boot, v.seed)
  ci = cluster_stats.percentile_ci(boot, v.level)
  out["estimate"], out["ci"] = float(np.nanmean(d)), ci
  out["verdict"], out["reason"] = verdict_rule(ci, "", v.refute_below)
  absolute = np.where(mask, _grid(k_all, tasks, seeds, "dev_metric"), np.nan)
  single = np.where(mask, _grid(ok, tasks, seeds, "dev_metric"), np.nan)
  out["beside"] = {
      "absolute_estimate": float(np.nanmean(absolute)),
      "single_task_estimate": float(np.nanmean(single)),
      "per_task": {t: _nanmean(d[i]) for i, t in enumerate(tasks)},
      "per_seed": {str(s): _nanmean(d[:, j]) for j, s in enumerate(seeds)},
      "d": {f"{t}/s{s}": (None if np.isnan(d[i, j]) else float(d[i, j]))
            for i, t in enumerate(tasks) for j, s in enumerate(seeds)}}
  return out


def _nanmean(x) -> float | None:
  x = np.asarray(x, float)
  return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _mean_of(rows, field):
  return _nanmean([np.nan if r[field] is None else r[field] for r in rows])


def exploratory(config, merges: list[dict], negations: list[dict], xis: list[dict],
                kernels: list[dict]) -> dict:
  """§4's tables (every entry exploratory): per k and mode the mean absolute and normalized
  dev metric (and per subset), TIES likewise, negation per mode, mean ξ per pair and mode,
  and Spearman's ρ of the kernel overlap (mean over seeds) with the pair's mean ξ."""
  out = {"label": "exploratory (preregistration §4): not part of the verdict"}
  for method in ("addition", "ties"):
    table = []
    rows = [m for m in merges if m["method"] == method]
    for (k, mode), group in itertools.groupby(
        sorted(rows, key=lambda m: (m["k"], m["mode"])), lambda m: (m["k"], m["mode"])):
      group = list(group)
      subsets = {}
      for m in group:
        subsets.setdefault("+".join(m["subset"]), []).append(m)
      table.append({"k": k, "mode": mode, "n": len(group),
                    "absolute": _mean_of(group, "dev_metric"),
                    "normalized": _mean_of(group, "normalized"),
                    "per_subset": {s: {"absolute": _mean_of(g, "dev_metric"),
                                       "normalized": _mean_of(g, "normalized")}
                                   for s, g in subsets.items()}})
    out[method] = table
  out["negation"] = [
      {"mode": mode, "n_seeds": len(g), "target": _mean_of(g, "dev_target"),
       "target_single": _mean_of(g, "dev_target_single"),
       "control_normalized": _mean_of(g, "control_normalized")}
      for mode in config.modes for g in [[n for n in negations if n["mode"] == mode]] if g]
  pairs = {}
  for x in xis:
    pairs.setdefault((x["mode"], "+".join(x["tasks"])), []).append(x["mean_xi"])
  out["xi"] = [{"mode": mode, "pair": pair, "mean_xi": float(np.mean(v)), "n_seeds": len(v)}
               for (mode, pair), v in sorted(pairs.items())]
  overlap = {}
  for k in kernels:
    for pair, o in k["overlap"].items():
      overlap.setdefault(pair, []).append(o)
  out["localization"] = []
  for mode in config.modes:
    keys = sorted(p for (m, p) in pairs if m == mode and p in overlap)
    if len(keys) >= 3:
      x = [float(np.mean(overlap[p])) for p in keys]
      y = [float(np.mean(pairs[(mode, p)])) for p in keys]
      e = config.exploratory
      out["localization"].append({"mode": mode, "pairs": keys, "overlap": x, "mean_xi": y,
                                  **common.spearman_ci(x, y, e.num_boot, e.seed)})
  return out
