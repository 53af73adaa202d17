"""The pre-registered analysis of the kappa study (docs/preregistration.md §3-4).

``analyse(config, runs, complete)`` -> ``{"verdicts", "cells", "exploratory"}``:

* ``cells``: per (task, regime, λ, mode) the number of runs, the median lin_gap
  and the fraction of plateaued runs; per (task, regime) λ*, the λ of smallest
  median lin_gap.
* ``verdicts``: one per hypothesis H1-H4 (the family): ``hypothesis``,
  ``prediction``, ``estimate`` (mean over tasks of the within-task Spearman ρ
  over layer sets × seeds), ``ci`` (two-way cluster bootstrap over layer sets
  and seeds, at the hypothesis's Holm level), ``partial`` and ``partial_ci``
  (controlling depth and size), ``p``, ``holm_level``, ``verdict`` ∈
  supported / refuted / undecided and ``reason``. Before every point exists no
  estimate is computed (preregistration §7): verdict undecided, "incomplete".
* ``exploratory`` (not pre-registered, no correction): per cell, point
  estimates of ρ of every kernel × statistic and of depth against both outcomes.
"""
import numpy as np

from ntkft.evals import cluster_stats as cs
from ntkft.spectral import predictors as predictors_lib

OUTCOMES = ("train_loss", "dev_metric")

# The family (preregistration §3). lam: "star" (λ*), or "star-0" (ρ at λ* minus at λ = 0).
HYPOTHESES = (
    dict(hypothesis="H1", regime="a", lam="star", kernel="plain_flat_head", outcome="train_loss",
         sign=+1, lin_gate=True),
    dict(hypothesis="H2", regime="a", lam="star-0", kernel="plain_flat_head",
         outcome="train_loss", sign=+1, lin_gate=True),
    dict(hypothesis="H3", regime="b", lam="star", kernel="sign_flat_head", outcome="train_loss",
         sign=+1, lin_gate=False),
    dict(hypothesis="H4", regime="a", lam="star", kernel="plain_flat_head", outcome="dev_metric",
         sign=-1, lin_gate=True),
)


def _median(values):
  v = [x for x in values if x is not None and np.isfinite(x)]
  return float(np.median(v)) if v else float("nan")


def cell_table(runs) -> dict:
  """{(task, regime, lam, mode): {(layers, seed): run}}."""
  cells = {}
  for r in runs:
    key = (r["task"], r["regime"], r["lam"], r["mode"])
    cells.setdefault(key, {})[(tuple(r["layers"]), r["seed"])] = r
  return cells


def lam_star(cells, task, regime) -> float:
  """The λ of smallest median lin_gap among the nonlinear cells of (task, regime)."""
  gaps = {lam: _median([r["lin_gap"] for r in rows.values()])
          for (t, g, lam, mode), rows in cells.items()
          if t == task and g == regime and mode == "nonlinear"}
  finite = {lam: v for lam, v in gaps.items() if np.isfinite(v)}
  return min(finite, key=finite.get) if finite else min(gaps)


def _value(run, kernel, stat):
  return None if run["predictors"] is None else run["predictors"][kernel][stat]


def _rho(rows, keys, kernel, stat, outcome, partial):
  keep = [k for k in keys if _value(rows[k], kernel, stat) is not None]
  x = [_value(rows[k], kernel, stat) for k in keep]
  y = [rows[k][outcome] for k in keep]
  if partial:
    return cs.partial_spearman(x, y, [[rows[k]["depth"] for k in keep],
                                      [rows[k]["size"] for k in keep]])
  return cs.spearman(x, y)


def _estimator(h, cells, stars, partial):
  """estimate(keys per task): mean over tasks of ρ (H2: ρ(λ*) − ρ(0))."""

  def estimate(keys):
    per_task = []
    for task, ks in keys.items():
      rho = _rho(cells[(task, h["regime"], stars[task], "nonlinear")], ks, h["kernel"],
                 "kappa", h["outcome"], partial)
      if h["lam"] == "star-0":
        rho -= _rho(cells[(task, h["regime"], 0.0, "nonlinear")], ks, h["kernel"], "kappa",
                    h["outcome"], partial)
      per_task.append(rho)
    return float(np.nanmean(per_task)) if np.isfinite(per_task).any() else float("nan")

  return estimate


def _gates(config, h, cells, tasks, stars):
  """(ok, reason): plateau in every tested cell; lin_gap small at λ* in ≥ 3/4 of tasks."""
  for t in tasks:
    for lam in [stars[t]] + ([0.0] if h["lam"] == "star-0" else []):
      rows = cells[(t, h["regime"], lam, "nonlinear")].values()
      if np.mean([bool(r["plateaued"]) for r in rows]) < 0.5:
        return False, f"fewer than half of the runs plateaued in {t}/{h['regime']}/λ={lam:g}"
  if h["lin_gate"]:
    small = [_median([r["lin_gap"] for r in cells[(t, h["regime"], stars[t], "nonlinear")]
                      .values()]) <= config.lin_gap_max for t in tasks]
    if np.mean(small) < 0.75:
      return False, (f"median lin_gap at λ* above {config.lin_gap_max} in "
                     f"{len(tasks) - sum(small)} of {len(tasks)} tasks")
  return True, ""


def _verdict(config, h, est_ci, partial_ci, rejected, gates):
  s, (lo, hi), (plo, phi) = h["sign"], est_ci, partial_ci
  if not gates[0]:
    return "undecided", gates[1]
  if rejected and min(s * lo, s * hi) > 0 and min(s * plo, s * phi) > 0:
    return "supported", "CI and partial CI exclude 0 in the predicted direction"
  if rejected and max(s * lo, s * hi) < 0:
    return "refuted", "CI excludes 0 in the opposite direction"
  if max(s * lo, s * hi) < config.min_effect:
    return "refuted", f"CI excludes predicted-direction effects beyond {config.min_effect}"
  if rejected:
    return "undecided", "the correlation holds but not controlling depth and size"
  return "undecided", "CI includes 0"


def verdicts(config, cells, complete: bool) -> list[dict]:
  """One record per hypothesis of the family, Holm-corrected."""
  base = [{"hypothesis": h["hypothesis"],
           "prediction": (f"rho(kappa[{h['kernel']}], {h['outcome']}) "
                          f"{'>' if h['sign'] > 0 else '<'} 0 in regime ({h['regime']}) at "
                          + ("lambda* minus at lambda=0" if h["lam"] == "star-0"
                             else "lambda*"))} for h in HYPOTHESES]
  if not complete:
    return [{**b, "estimate": None, "ci": None, "verdict": "undecided",
             "reason": "incomplete: not every pre-registered point has run"} for b in base]
  tasks = sorted({t for t, *_ in cells})
  out, boots = [], {}
  for h in HYPOTHESES:
    stars = {t: lam_star(cells, t, h["regime"]) for t in tasks}
    keys = {}
    for t in tasks:
      tested = [stars[t]] + ([0.0] if h["lam"] == "star-0" else [])
      keys[t] = sorted(set.intersection(*[set(cells[(t, h["regime"], lam, "nonlinear")])
                                          for lam in tested]))
    stats = {}
    for partial in (False, True):
      fn = _estimator(h, cells, stars, partial)
      stats[partial] = (fn(keys), cs.two_way_bootstrap(fn, keys, config.num_boot,
                                                       config.boot_seed))
    boots[h["hypothesis"]] = (h, stars, stats)
  holm = cs.holm({name: cs.bootstrap_p(s[False][1]) for name, (_, _, s) in boots.items()},
                 config.alpha)
  for b, (name, (h, stars, stats)) in zip(base, boots.items()):
    level = holm[name]["level"]
    ci = cs.percentile_ci(stats[False][1], 1 - level)
    pci = cs.percentile_ci(stats[True][1], 1 - level)
    verdict, reason = _verdict(config, h, ci, pci, holm[name]["rejected"],
                               _gates(config, h, cells, tasks, stars))
    out.append({**b, "estimate": stats[False][0], "ci": ci, "partial": stats[True][0],
                "partial_ci": pci, "p": cs.bootstrap_p(stats[False][1]),
                "holm_level": level, "holm_rejected": holm[name]["rejected"],
                "lambda_star": stars, "verdict": verdict, "reason": reason})
  return out


def exploratory(cells) -> list[dict]:
  """Per cell: median lin_gap, plateau fraction, ρ of every kernel × statistic and depth."""
  out = []
  names = [predictors_lib.kernel_name(k, l, h) for k in predictors_lib.KINDS
           for l in predictors_lib.LAYOUTS for h in predictors_lib.HEADS]
  for (task, regime, lam, mode), rows in sorted(cells.items()):
    keys = sorted(rows)
    rec = {"task": task, "regime": regime, "lam": lam, "mode": mode, "n": len(keys),
           "median_lin_gap": _median([rows[k]["lin_gap"] for k in keys]),
           "plateaued": float(np.mean([bool(rows[k]["plateaued"]) for k in keys])),
           "rho": {}}
    for outcome in OUTCOMES:
      y = [rows[k][outcome] for k in keys]
      rec["rho"][f"depth:{outcome}"] = cs.spearman([rows[k]["depth"] for k in keys], y)
      for name in names:
        for stat in predictors_lib.STATS:
          rec["rho"][f"{name}.{stat}:{outcome}"] = _rho(rows, keys, name, stat, outcome, False)
    out.append(rec)
  return out


def analyse(config, runs, complete: bool) -> dict:
  cells = cell_table(runs)
  return {"verdicts": verdicts(config, cells, complete),
          "cells_exploratory": exploratory(cells)}
