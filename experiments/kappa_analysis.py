"""The pre-registered analysis of the kappa study (docs/preregistration.md §3-4, Amendment 2).

``analyse(config, runs, planned)`` -> ``{"verdicts", "cells", "exploratory",
"rho_vs_lin_gap"}``:

* ``verdicts``: one per hypothesis H1-H4 (the family): ``id`` (= ``hypothesis``),
  ``prediction``, ``statistic`` ("kappa_lambda"), ``estimate`` (mean over tasks
  of the within-task Spearman ρ over layer sets × seeds at λ*; H2: of
  ρ(λ*) − ρ(0)), ``per_task``, ``ci`` (crossed cluster bootstrap, at the
  hypothesis's Holm level), ``partial`` and ``partial_ci`` (controlling depth
  and size), ``per_task_partial``, ``p``, ``holm_level``, ``holm_rejected``,
  ``lambda_star``, ``verdict`` ∈ supported / refuted / undecided and ``reason``.
* ``cells``: per (task, regime, λ, mode): runs finished / planned, diverged
  runs, median lin_gap, fraction of plateaued runs, whether it is λ* of its
  task × regime.
* ``exploratory`` (not pre-registered, uncorrected 95% CIs from the crossed
  bootstrap within the cell): per cell, ρ and partial ρ (controlling depth and
  size) of κ, κ_λ, λmin, λmax, effective rank and alignment of each kernel, and
  ρ of depth and size, against both outcomes.
* ``rho_vs_lin_gap`` (exploratory, the data of the figure "ρ against median
  lin_gap per cell"): per nonlinear cell, its median lin_gap beside the
  exploratory ρ and partial ρ of κ_λ of the family's kernels (plain and sign,
  flattened with head) against both outcomes.

``exploratory`` and ``rho_vs_lin_gap`` relate predictors to outcomes: the
sweep's ``collect`` asks for them only once every point exists (no interim
looks); before that both hold the string ``NOT_YET``.

**Predictor (Amendment 2.2).** κ_λ = (λmax(K) + nλ) / (λmin(K) + nλ), the
condition number of the pulled tangent loss's Hessian JᵀJ/n + λI on the row
space of J, from the unclamped λmin, λmax stored per kernel, with n the run's
kernel examples (``n_kernel``) and λ its pull. κ_0 = λmax/λmin. A non-positive
denominator (an indefinite or singular operator) gives κ_λ = +inf, which ranks
as the largest value (as the clamped κ of §2 ranks a singular kernel as the most
ill-conditioned); a missing eigenvalue gives nan, dropped from the ranks.

**λ\\*.** Of a task × regime: among its nonlinear cells (λ ∈ ``config.lams``),
the λ of smallest median lin_gap (non-finite gaps dropped; ties to the smaller
λ; a cell without a finite gap never wins over one with).

**Bootstrap (Amendment 2.5).** The layer sets and seeds are crossed with the
tasks: resample r draws the layer sets (a) and the seeds (b) once, with
replacement (``cluster_stats.crossed_indices``), and every cell of every task
enters with multiplicity #a·#b. Each resample recomputes everything: λ* per task
from the resampled lin_gaps, then the ρ. Implemented with weight rows
(``cluster_stats.crossed_weights``, row 0 = the data: all ones) and the
weighted rank statistics of ``cluster_stats``, which equal ``spearman`` /
``partial_spearman`` / ``median`` of the expanded sample; a test checks it
against ``cluster_stats.crossed_bootstrap`` applied to the slow definition.

**Verdicts (§4, Amendment 2.6).** With s the predicted sign, [lo, hi] the
Holm-level CI of the estimate and [plo, phi] that of the partial ρ:

1. undecided, "incomplete", if one of the hypothesis's own cells (its regime,
   every λ of ``config.lams``, every task of ``config.tasks``, nonlinear) lacks
   a planned (layers, seed) run (Amendment 2.8; diverged runs are finished);
   no estimate is computed;
2. undecided if a gate fails: lin_gap (H1, H2, H4: median lin_gap at λ* ≤
   ``config.lin_gap_max`` in ≥ 3/4 of the tasks) or plateau (H4 only, Amendment
   2.1: at least half of the runs plateaued in each of its cells (every task at
   λ*)). The gates come first because §4 makes "refuted" conditional on them
   ("provided the lin_gap and plateau conditions hold") and Amendment 2.6 keeps
   that proviso: where linearization fails the theory makes no prediction to
   refute;
3. refuted if max(s·lo, s·hi) < ``config.min_effect``: the CI excludes 0 in
   the opposite direction, or excludes every predicted-direction effect ≥ 0.2,
   even when it excludes 0;
4. supported if Holm rejects and min(s·lo, s·hi) > 0 and min(s·plo, s·phi) > 0;
5. undecided otherwise (the raw CI holds but the partial does not: undecided,
   never refuted).
"""
import numpy as np

from ntkft.evals import cluster_stats as cs
from ntkft.spectral import predictors as predictors_lib

OUTCOMES = ("train_loss", "dev_metric")
STATISTIC = "kappa_lambda"
# Exploratory statistics of every kernel (κ: the §2 predictor with its clamp).
EXPLORATORY_STATS = ("kappa", "kappa_lambda", "lambda_min", "lambda_max", "effective_rank",
                     "alignment")
# The kernels of the ρ-vs-lin_gap figure: those of the family (H1, H2, H4: plain; H3: sign).
RHO_VS_LIN_GAP_KERNELS = ("plain_flat_head", "sign_flat_head")
# What the predictor-outcome tables hold until every point exists (no interim looks).
NOT_YET = "computed when every point exists"

# The family (preregistration §3, Amendment 2.2). lam: "star" (λ*), or "star-0" (ρ at λ*
# minus ρ at λ = 0 on the (layers, seed) cells present at both, Amendment 1).
HYPOTHESES = (
    dict(hypothesis="H1", regime="a", lam="star", kernel="plain_flat_head", outcome="train_loss",
         sign=+1, lin_gate=True, plateau_gate=False),
    dict(hypothesis="H2", regime="a", lam="star-0", kernel="plain_flat_head",
         outcome="train_loss", sign=+1, lin_gate=True, plateau_gate=False),
    dict(hypothesis="H3", regime="b", lam="star", kernel="sign_flat_head", outcome="train_loss",
         sign=+1, lin_gate=False, plateau_gate=False),
    dict(hypothesis="H4", regime="a", lam="star", kernel="plain_flat_head", outcome="dev_metric",
         sign=-1, lin_gate=True, plateau_gate=True),
)


def median_finite(values) -> float:
  """The median of the finite values (None, nan, ±inf dropped); nan if none."""
  v = [float(x) for x in values if x is not None and np.isfinite(x)]
  return float(np.median(v)) if v else float("nan")


def kappa_lambda(pred: dict, n: int, lam: float) -> float:
  """κ_λ = (λmax + nλ) / (λmin + nλ) of one kernel's predictors (unclamped λmin, λmax).

  +inf if λmin + nλ ≤ 0; nan if an eigenvalue is missing. At λ = 0 it is λmax/λmin.
  """
  lmin, lmax = pred.get("lambda_min"), pred.get("lambda_max")
  if lmin is None or lmax is None or not (np.isfinite(lmin) and np.isfinite(lmax)):
    return float("nan")
  den = float(lmin) + n * float(lam)
  return float("inf") if den <= 0 else (float(lmax) + n * float(lam)) / den


def _cell_key(task, regime, lam, mode) -> tuple:
  return (task, regime, float(lam), mode)


def _run_key(layers, seed) -> tuple:
  return (tuple(int(i) for i in layers), int(seed))


def cell_table(runs) -> dict:
  """{(task, regime, lam, mode): {(layers, seed): run}}."""
  cells = {}
  for r in runs:
    key = _cell_key(r["task"], r["regime"], r["lam"], r["mode"])
    cells.setdefault(key, {})[_run_key(r["layers"], r["seed"])] = r
  return cells


def _planned_table(planned) -> dict:
  return {_cell_key(*k): [_run_key(*rk) for rk in v] for k, v in planned.items()}


def _argmin_lam(medians: np.ndarray) -> np.ndarray:
  """(L, R) medians -> (R,) index of the smallest; nan never wins, ties to the first."""
  return np.argmin(np.where(np.isnan(medians), np.inf, medians), axis=0)


def lam_star(cells, task, regime, lams) -> float:
  """λ* of (task, regime): the λ in ``lams`` of smallest median lin_gap (nonlinear cells)."""
  lams = sorted(float(l) for l in lams)
  med = np.array([[median_finite([r.get("lin_gap") for r in
                                  cells.get((task, regime, lam, "nonlinear"), {}).values()])]
                  for lam in lams])
  return lams[int(_argmin_lam(med)[0])]


def _float(v) -> float:
  return float("nan") if v is None else float(v)


def _predictor(run, kernel, stat, lam) -> float:
  pred = (run.get("predictors") or {}).get(kernel)
  if pred is None:
    return float("nan")
  if stat == STATISTIC:
    return kappa_lambda(pred, int(run["n_kernel"]), lam)
  return _float(pred.get(stat))


class _Grid:
  """The units of a crossed design: layer sets × seeds, flattened set-major."""

  def __init__(self, sets, seeds):
    self.sets, self.seeds = sorted(sets), sorted(seeds)
    self.index = {(s, d): i * len(self.seeds) + j for i, s in enumerate(self.sets)
                  for j, d in enumerate(self.seeds)}
    self.depth = np.array([max(s) for s in self.sets for _ in self.seeds], float)
    self.size = np.array([len(s) for s in self.sets for _ in self.seeds], float)

  def values(self, rows: dict, fn) -> np.ndarray:
    """fn(run) at each grid cell; nan where there is no run."""
    out = np.full(len(self.index), np.nan)
    for k, r in rows.items():
      if k in self.index:
        out[self.index[k]] = fn(r)
    return out

  def present(self, rows: dict) -> np.ndarray:
    out = np.zeros(len(self.index))
    for k in rows:
      if k in self.index:
        out[self.index[k]] = 1.0
    return out

  def weights(self, num_boot: int, seed: int) -> np.ndarray:
    """(1 + num_boot, n): row 0 the data (all ones), then the crossed resamples."""
    boot = cs.crossed_weights(len(self.sets), len(self.seeds), num_boot, seed)
    return np.vstack([np.ones((1, len(self.index))), boot])


def _rho(grid, x, y, w, partial) -> np.ndarray:
  if partial:
    return cs.weighted_partial_spearman(x, y, [grid.depth, grid.size], w)
  return cs.weighted_spearman(x, y, w)


def _nanmean_rows(per_task: list) -> np.ndarray:
  v = np.stack(per_task)  # (tasks, R)
  count = np.isfinite(v).sum(0)
  with np.errstate(invalid="ignore"):
    return np.where(count > 0, np.nansum(v, 0) / np.maximum(count, 1), np.nan)


def _hypothesis_cells(config, h) -> list[tuple]:
  return [_cell_key(t, h["regime"], lam, "nonlinear") for t in config.tasks
          for lam in sorted(config.lams)]


def _describe(key) -> str:
  task, regime, lam, mode = key
  return f"{task}/{regime}/λ={lam:g}/{mode}"


def incomplete(config, h, cells, planned) -> str:
  """'' if every planned (layers, seed) run of every cell of ``h`` has a record, else why."""
  if h["lam"] == "star-0" and 0.0 not in [float(l) for l in config.lams]:
    return "incomplete: no λ = 0 in config.lams"
  for key in _hypothesis_cells(config, h):
    want = planned.get(key)
    if not want:
      return f"incomplete: no planned runs for {_describe(key)}"
    have = cells.get(key, {})
    missing = [k for k in want if k not in have]
    if missing:
      seeds = sorted({s for _, s in missing})
      return (f"incomplete: {_describe(key)} lacks {len(missing)} of {len(want)} planned runs "
              f"(seeds {seeds})")
  return ""


def confirmatory_samples(config, h, cells, planned, num_boot: int, seed: int) -> dict:
  """The estimate of ``h`` on the data and on ``num_boot`` crossed resamples.

  Returns {"estimate", "partial", "per_task", "per_task_partial", "lambda_star" (on the
  data), "boot", "boot_partial" ((num_boot,) arrays), "boot_lambda_star" ({task:
  (num_boot,)})}.
  """
  keys = _hypothesis_cells(config, h)
  units = [k for key in keys for k in planned.get(key, ())] + \
      [k for key in keys for k in cells.get(key, {})]
  grid = _Grid({s for s, _ in units}, {d for _, d in units})
  w = grid.weights(num_boot, seed)
  lams = sorted(float(l) for l in config.lams)
  per = {False: [], True: []}
  per_task, per_task_partial, stars, boot_stars = {}, {}, {}, {}
  for task in config.tasks:
    rows = {lam: cells.get(_cell_key(task, h["regime"], lam, "nonlinear"), {}) for lam in lams}
    present = {lam: grid.present(rows[lam]) for lam in lams}
    gaps = np.stack([cs.weighted_median(grid.values(rows[lam], lambda r: _float(r.get("lin_gap"))),
                                        w * present[lam]) for lam in lams])
    star = _argmin_lam(gaps)  # (1 + num_boot,) index into lams
    x = {lam: grid.values(rows[lam], lambda r, l=lam: _predictor(r, h["kernel"], STATISTIC, l))
         for lam in lams}
    y = {lam: grid.values(rows[lam], lambda r: _float(r.get(h["outcome"]))) for lam in lams}
    for partial in (False, True):
      rho = []
      for lam in lams:
        if h["lam"] == "star-0":
          both = w * present[lam] * present[0.0]
          rho.append(_rho(grid, x[lam], y[lam], both, partial)
                     - _rho(grid, x[0.0], y[0.0], both, partial))
        else:
          rho.append(_rho(grid, x[lam], y[lam], w * present[lam], partial))
      chosen = np.take_along_axis(np.stack(rho), star[None], 0)[0]
      per[partial].append(chosen)
      (per_task_partial if partial else per_task)[task] = float(chosen[0])
    stars[task] = lams[int(star[0])]
    boot_stars[task] = np.asarray(lams)[star[1:]]
  raw, part = _nanmean_rows(per[False]), _nanmean_rows(per[True])
  return {"estimate": float(raw[0]), "partial": float(part[0]), "per_task": per_task,
          "per_task_partial": per_task_partial, "lambda_star": stars, "boot": raw[1:],
          "boot_partial": part[1:], "boot_lambda_star": boot_stars}


def gates(config, h, cells, stars) -> tuple[bool, str]:
  """(ok, reason): lin_gap small at λ* in ≥ 3/4 of the tasks (H1, H2, H4); at least half
  of the runs plateaued in each cell at λ* (H4 only, Amendment 2.1)."""
  tasks = list(config.tasks)
  if h["plateau_gate"]:
    for t in tasks:
      rows = cells[_cell_key(t, h["regime"], stars[t], "nonlinear")].values()
      if np.mean([bool(r.get("plateaued")) for r in rows]) < 0.5:
        return False, (f"fewer than half of the runs plateaued in "
                       f"{t}/{h['regime']}/λ={stars[t]:g}")
  if h["lin_gate"]:
    small = [median_finite([r.get("lin_gap") for r in
                            cells[_cell_key(t, h["regime"], stars[t], "nonlinear")].values()])
             <= config.lin_gap_max for t in tasks]
    if np.mean(small) < 0.75:
      return False, (f"median lin_gap at λ* above {config.lin_gap_max} in "
                     f"{len(tasks) - sum(small)} of {len(tasks)} tasks")
  return True, ""


def verdict_rule(sign: int, ci, partial_ci, rejected: bool, gate: tuple[bool, str],
                 min_effect: float) -> tuple[str, str]:
  """(verdict, reason) from the Holm-level CIs, in the order of the module docstring."""
  ok, why = gate
  if not ok:
    return "undecided", why
  if not np.all(np.isfinite(ci)):
    return "undecided", "the estimate is undefined on the data or its resamples"
  lo, hi = sorted(sign * np.asarray(ci, float))
  plo, _ = sorted(sign * np.asarray(partial_ci, float))
  if hi < 0:
    return "refuted", "CI excludes 0 in the opposite direction"
  if hi < min_effect:
    return "refuted", f"CI excludes predicted-direction effects of {min_effect} or more"
  if rejected and lo > 0 and plo > 0:
    return "supported", "CI and partial CI exclude 0 in the predicted direction"
  if rejected and lo > 0 and not np.all(np.isfinite(partial_ci)):
    return "undecided", "the correlation holds; the partial correlation is undefined"
  if rejected and lo > 0:
    return "undecided", "the correlation holds but not controlling depth and size"
  return "undecided", "CI includes 0 (or Holm's step-down stopped before it)"


def _prediction(h) -> str:
  at = "lambda* minus at lambda=0" if h["lam"] == "star-0" else "lambda*"
  return (f"rho({STATISTIC}[{h['kernel']}], {h['outcome']}) {'>' if h['sign'] > 0 else '<'} 0 "
          f"in regime ({h['regime']}) at {at}")


def verdicts(config, cells, planned) -> list[dict]:
  """One record per hypothesis of the family, Holm-corrected (m = 4 always)."""
  planned = _planned_table(planned)
  out, samples = [], {}
  for h in HYPOTHESES:
    base = {"id": h["hypothesis"], "hypothesis": h["hypothesis"], "prediction": _prediction(h),
            "statistic": STATISTIC, "kernel": h["kernel"], "outcome": h["outcome"],
            "regime": h["regime"], "estimate": None, "ci": None, "partial": None,
            "partial_ci": None, "per_task": None, "per_task_partial": None, "p": None,
            "holm_level": None, "holm_rejected": False, "lambda_star": None}
    why = incomplete(config, h, cells, planned)
    if why:
      out.append({**base, "verdict": "undecided", "reason": why})
      continue
    samples[h["hypothesis"]] = confirmatory_samples(config, h, cells, planned, config.num_boot,
                                                    config.boot_seed)
    out.append(base)
  holm = cs.holm({v["hypothesis"]: (cs.bootstrap_p(samples[v["hypothesis"]]["boot"])
                                    if v["hypothesis"] in samples else float("nan"))
                  for v in out}, config.alpha)
  for i, (v, h) in enumerate(zip(out, HYPOTHESES)):
    if h["hypothesis"] not in samples:
      out[i] = {**v, "holm_level": holm[h["hypothesis"]]["level"]}
      continue
    s, level = samples[h["hypothesis"]], holm[h["hypothesis"]]["level"]
    ci = cs.percentile_ci(s["boot"], 1 - level)
    pci = cs.percentile_ci(s["boot_partial"], 1 - level)
    verdict, reason = verdict_rule(h["sign"], ci, pci, holm[h["hypothesis"]]["rejected"],
                                   gates(config, h, cells, s["lambda_star"]), config.min_effect)
    out[i] = {**v, "estimate": s["estimate"], "ci": ci, "partial": s["partial"],
              "partial_ci": pci, "per_task": s["per_task"],
              "per_task_partial": s["per_task_partial"], "p": cs.bootstrap_p(s["boot"]),
              "holm_level": level, "holm_rejected": holm[h["hypothesis"]]["rejected"],
              "lambda_star": s["lambda_star"], "verdict": verdict, "reason": reason}
  return out


def cell_summary(config, cells, planned) -> list[dict]:
  """Per cell (planned or present): runs, planned runs, diverged runs, median lin_gap,
  plateaued fraction and whether it is λ* of its task × regime (nonlinear cells)."""
  planned = _planned_table(planned)
  lams = sorted(float(l) for l in config.lams)
  out = []
  for key in sorted(set(cells) | set(planned)):
    task, regime, lam, mode = key
    rows = list(cells.get(key, {}).values())
    out.append({"task": task, "regime": regime, "lam": lam, "mode": mode, "n": len(rows),
                "n_planned": len(planned.get(key, ())),
                "n_diverged": int(sum(bool(r.get("diverged", False)) for r in rows)),
                "median_lin_gap": median_finite([r.get("lin_gap") for r in rows]),
                "plateaued": (float(np.mean([bool(r.get("plateaued")) for r in rows]))
                              if rows else float("nan")),
                "lambda_star": (mode == "nonlinear" and lam in lams and
                                lam == lam_star(cells, task, regime, lams))})
  return out


def _entry(raw, part=None) -> dict:
  """ρ on the data (element 0) with the 95% percentile CI of the resamples (1:)."""
  e = {"rho": float(raw[0]), "ci": cs.percentile_ci(raw[1:], 0.95)}
  if part is not None:
    e.update(partial=float(part[0]), partial_ci=cs.percentile_ci(part[1:], 0.95))
  return e


def _exploratory_cell(key, rows, num_boot, seed) -> dict:
  task, regime, lam, mode = key
  grid = _Grid({s for s, _ in rows}, {d for _, d in rows})
  w = grid.weights(num_boot, seed) * grid.present(rows)
  kernels = sorted({k for r in rows.values() for k in (r.get("predictors") or {})},
                   key=_kernel_order)
  names = [f"{k}.{s}" for k in kernels for s in EXPLORATORY_STATS]
  xs = np.array([grid.values(rows, lambda r, k=k, s=s: _predictor(r, k, s, lam))
                 for k in kernels for s in EXPLORATORY_STATS]).reshape(len(names), -1)
  rho = {}
  for outcome in OUTCOMES:
    y = grid.values(rows, lambda r, o=outcome: _float(r.get(o)))
    rho[f"depth:{outcome}"] = _entry(cs.weighted_spearman(grid.depth, y, w))
    rho[f"size:{outcome}"] = _entry(cs.weighted_spearman(grid.size, y, w))
    raw, part = cs.weighted_rank_correlations(xs, y, [grid.depth, grid.size], w)
    for name, r, p in zip(names, raw, part):
      rho[f"{name}:{outcome}"] = _entry(r, p)
  return {"task": task, "regime": regime, "lam": lam, "mode": mode, "n": len(rows),
          "label": "exploratory: uncorrected 95% CIs", "rho": rho}


def exploratory(cells, num_boot: int = 200, seed: int = 0) -> list[dict]:
  """Per cell, ρ (and partial ρ controlling depth and size) of every kernel × statistic,
  and ρ of depth and size, against both outcomes, with uncorrected 95% CIs from
  ``num_boot`` crossed resamples of the cell's layer sets and seeds. Exploratory."""
  return [_exploratory_cell(key, rows, num_boot, seed) for key, rows in sorted(cells.items())]


def _kernel_order(name):
  names = [predictors_lib.kernel_name(k, l, h) for k in predictors_lib.KINDS
           for l in predictors_lib.LAYOUTS for h in predictors_lib.HEADS]
  return (names.index(name) if name in names else len(names), name)


def rho_vs_lin_gap(summary: list[dict], table: list[dict]) -> list[dict]:
  """The data of the figure "ρ against median lin_gap per cell" (exploratory).

  Args:
    summary: :func:`cell_summary` (median lin_gap and λ* flag per cell).
    table: :func:`exploratory` (ρ and partial ρ per cell, uncorrected 95% CIs).

  Returns:
    One row per nonlinear cell with a finite median lin_gap × kernel of
    ``RHO_VS_LIN_GAP_KERNELS`` × outcome: {task, regime, lam, lambda_star,
    median_lin_gap, kernel, outcome, rho, ci, partial, partial_ci} (ρ of κ_λ,
    copied from ``table``), cells in ``summary`` order.
  """
  rhos = {(e["task"], e["regime"], e["lam"], e["mode"]): e["rho"] for e in table}
  out = []
  for c in summary:
    key = (c["task"], c["regime"], c["lam"], c["mode"])
    gap = c["median_lin_gap"]
    if c["mode"] != "nonlinear" or key not in rhos or gap is None or not np.isfinite(gap):
      continue
    for kernel in RHO_VS_LIN_GAP_KERNELS:
      for outcome in OUTCOMES:
        entry = rhos[key].get(f"{kernel}.{STATISTIC}:{outcome}")
        if entry is not None:
          out.append({"task": c["task"], "regime": c["regime"], "lam": c["lam"],
                      "lambda_star": c["lambda_star"], "median_lin_gap": gap,
                      "kernel": kernel, "outcome": outcome, **entry})
  return out


def analyse(config, runs, planned, num_boot_exploratory: int = 200,
            exploratory_tables: bool = True) -> dict:
  """The pre-registered verdicts, the per-cell summary and the exploratory tables.

  Args:
    config: configs/kappa_study.py (tasks, lams, num_boot, boot_seed, alpha,
      lin_gap_max, min_effect).
    runs: finished run records (task, layers, seed, lam, regime, mode, n_kernel,
      train_loss, dev_metric, lin_gap, plateaued, diverged (optional),
      predictors {kernel: {lambda_min, lambda_max, kappa, ...}} or None).
    planned: {(task, regime, lam, mode): [(layers, seed), ...]} of every planned run.
    num_boot_exploratory: crossed resamples per exploratory cell.
    exploratory_tables: False: ``exploratory`` and ``rho_vs_lin_gap`` are not
      computed and hold ``NOT_YET`` (the sweep passes whether every point exists).

  Returns:
    {"verdicts", "cells", "exploratory", "rho_vs_lin_gap"} (module docstring).
  """
  cells = cell_table(runs)
  out = {"verdicts": verdicts(config, cells, planned),
         "cells": cell_summary(config, cells, planned)}
  if not exploratory_tables:
    return {**out, "exploratory": NOT_YET, "rho_vs_lin_gap": NOT_YET}
  table = exploratory(cells, num_boot_exploratory, config.boot_seed)
  return {**out, "exploratory": table, "rho_vs_lin_gap": rho_vs_lin_gap(out["cells"], table)}
