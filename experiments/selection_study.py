"""Spectral layer selection against last-2, first-2 and random pairs (§6, Amendment 2.9).

  python -m experiments.selection_study --config=configs/selection_study.py[:runlocal] --workdir=W

The pre-registered layer-selection study of docs/preregistration.md §6, whose
kernels and seeds 0-2 are the kappa study's points (Amendment 2.9):

* **Criterion** (``choose_criterion``): the rule of §6 on the kappa study's
  ``results.json`` (``<kappa_workdir>/results.json``): among the nonlinear
  cells of ``criterion_task`` (SST-2), the regime × λ cell of smallest median
  lin_gap (``kappa_analysis.median_finite``; ties to the first in (regime, λ)
  order); in it, among the 40 predictor × kernel combinations (the 5
  statistics of §2 of the 8 kernels, from each run's ``predictors``), the one
  of largest |mean over seeds of ρ| (Spearman over the layer sets within a
  seed) with the dev metric, used in its sign's direction. The criterion is
  **final** only when every planned run of those cells is in the results (the
  kappa study's plan, rebuilt from the config stored in its results);
  otherwise it is provisional, no point is computed, and the study is
  incomplete. ``criterion_from_kappa=False``: the config's ``criterion``,
  ``regime``, ``lam`` (runlocal), labelled as such.
* **Settings** (``check_settings``): the fields that shape a point —
  ``finetune``, ``regimes_def`` of the chosen regime, ``plateau``,
  ``kernel_chunk``, ``layer_sets`` — must equal those of the config stored in
  the kappa results, and the pairs, the regime and λ must be in the kappa
  study's plan; otherwise the study refuses with a one-line error. The pairs
  must be among ``layer_sets`` (the sets of the kernel points).
* **Points.** Per (task, seed): the kernel point ``kernel_{task}_s{seed}`` (the
  8 kernels' predictors of every layer set at that seed's θ0,
  ``kappa_study.kernel_point``), from which the criterion scores the pairs
  (K_S = Σ_{i∈S} K_i + K_head), and one run point per distinct pair among the
  arms (``kappa_study.run_point`` in the chosen regime × λ, ids
  ``kappa_study.run_id``). A (task, seed) of the kappa study (its tasks × its
  seeds) reads both from ``<kappa_workdir>/points/`` and never computes them:
  a κ point not produced yet (the sweep has not reached it) leaves that
  seed's arms of that task out, and the study incomplete. Any other (task,
  seed) is computed here into ``W/points/`` (skipped when present) with the
  same code, through one ``WarmRuns`` per (task, seed) (``kappa_study.group_runs``),
  so its numbers are produced exactly as the kappa study's.
* **Arms**, per (task, seed): *selector* (the pair the criterion prefers), the
  ``baselines`` (*last2* (4, 5), *first2* (0, 1)), *random* (``num_random``
  pairs drawn with ``np.random.default_rng([seed, 15])``, Amendment 1; the arm's
  metric is their mean). All arms of a seed share its θ0, data and order.

``W/results.json``: ``criterion`` (with its source and whether it is final),
``complete`` and ``missing`` (why not), ``arms`` (one per task × seed × arm:
layers, source, point ids, dev_metric, train_loss, diverged),
``points_computed`` (here, this session), ``kappa_points_reused``,
``comparisons`` (selector − arm dev metric, paired by seed, per task and
pooled over tasks, mean with a bootstrap CI over the paired units at the Holm
level of the 3 comparisons) and ``verdict``.

**Verdict** (``verdict_of``; top-level ``verdict``: {verdict, reason, estimate,
ci, holm_rejected}, estimate and ci the pooled selector − last2 and selector −
random). §6 states only when the claim is supported; the refuted / undecided
rules below complete it. They were written on 2026-12-07, after the kappa
sweep had started and before any selection point ran:

1. undecided, "incomplete: ...", unless the study is complete (estimate and ci
   None, as in ``kappa_analysis``);
2. refuted if the pooled Holm-level CI of selector − last2 or of selector −
   random lies entirely below 0 (the selector is worse than a baseline it was
   meant to beat);
3. supported (§6) if both pooled Holm-level CIs lie entirely above 0 and Holm's
   step-down rejects both (as ``kappa_analysis.verdict_rule`` reads a
   Holm-level CI);
4. undecided otherwise (a CI includes 0: not supported, but not refuted).
"""
import itertools
import json
import pathlib
import time

import ml_collections
import numpy as np

from experiments import common, kappa_analysis, kappa_study
from ntkft import cli, records
from ntkft.evals import cluster_stats as cs
from ntkft.spectral import predictors as predictors_lib

NUM_LAYERS = 6
VERDICT_ARMS = ("last2", "random")  # §6: supported if selector beats both
# Fields of a config that shape a point (besides the chosen regime's regimes_def);
# layer_sets: the sets a kernel point stores predictors for.
POINT_FIELDS = ("finetune", "plateau", "kernel_chunk", "layer_sets")
KERNELS = [predictors_lib.kernel_name(k, l, h) for k in predictors_lib.KINDS
           for l in predictors_lib.LAYOUTS for h in predictors_lib.HEADS]


def selection_pairs(config) -> list[tuple[int, int]]:
  """The candidate pairs: ``config.pairs``, or (): all 15 pairs of the 6 layers."""
  if config.pairs:
    return [tuple(int(i) for i in p) for p in config.pairs]
  return list(itertools.combinations(range(NUM_LAYERS), 2))


def load_kappa(config) -> dict | None:
  """The kappa study's workdir, results and stored config; None if ``kappa_workdir`` is ""."""
  if not config.kappa_workdir:
    return None
  workdir = pathlib.Path(config.kappa_workdir)
  path = workdir / "results.json"
  if not path.exists():
    raise FileNotFoundError(f"no kappa study results at {path}: run experiments.kappa_study "
                            "first (its results.json is written when a session ends)")
  results = json.loads(path.read_text())
  return {"workdir": workdir, "results": results, "stored_config": results["config"],
          "config": ml_collections.ConfigDict(results["config"])}


def _finite(v) -> float:
  return float(v) if v is not None and np.isfinite(v) else float("nan")


def _rho_over_seeds(rows: dict, kernel: str, stat: str) -> float:
  """Mean over seeds of Spearman ρ(predictor, dev metric) over the layer sets."""
  per_seed = []
  for seed in sorted({s for _, s in rows}):
    pts = [(_finite(((r.get("predictors") or {}).get(kernel) or {}).get(stat)),
            _finite(r.get("dev_metric"))) for (_, s), r in sorted(rows.items()) if s == seed]
    pts = np.array([p for p in pts if np.isfinite(p).all()]).reshape(-1, 2)
    rho = cs.spearman(pts[:, 0], pts[:, 1])
    if np.isfinite(rho):
      per_seed.append(rho)
  return float(np.mean(per_seed)) if per_seed else float("nan")


def choose_criterion(config, kappa: dict | None) -> dict:
  """The pre-registered rule on ``config.criterion_task`` of the kappa results, or the
  configured fallback: {kernel, stat, direction, regime, lam, final, source, ...}."""
  if not config.criterion_from_kappa:
    return {**config.criterion.to_dict(), "regime": config.regime, "lam": float(config.lam),
            "final": True, "source": "config fallback (criterion_from_kappa=False)"}
  if kappa is None:
    raise ValueError("criterion_from_kappa needs kappa_workdir (the kappa study's results)")
  task = config.criterion_task
  runs = [r for r in kappa["results"]["runs"] if r["task"] == task and r["mode"] == "nonlinear"]
  if not runs:
    raise ValueError(f"the kappa results in {kappa['workdir']} have no {task} runs yet: "
                     "the criterion cannot be chosen")
  cells = kappa_analysis.cell_table(runs)

  def gap(key):
    m = kappa_analysis.median_finite([r.get("lin_gap") for r in cells[key].values()])
    return m if np.isfinite(m) else np.inf

  key = min(sorted(cells), key=gap)
  best = None
  for stat in predictors_lib.STATS:
    for kernel in KERNELS:
      rho = _rho_over_seeds(cells[key], kernel, stat)
      if np.isfinite(rho) and (best is None or abs(rho) > abs(best[0])):
        best = (rho, kernel, stat)
  if best is None:
    raise ValueError(f"no finite ρ with the dev metric in {task}/{key[1]}/λ={key[2]:g}")
  planned = kappa_study.planned_cells(kappa["config"])
  lacking = {k: len([u for u in want if u not in cells.get(k, {})])
             for k, want in planned.items() if k[0] == task and k[3] == "nonlinear"}
  lacking = {k: n for k, n in lacking.items() if n}
  rho, kernel, stat = best
  _, regime, lam, _ = key
  return {"kernel": kernel, "stat": stat, "direction": "max" if rho > 0 else "min",
          "regime": regime, "lam": float(lam), "rho_on_heldout": rho,
          "median_lin_gap": gap(key), "final": not lacking,
          "lacking": {f"{t}/{g}/λ={l:g}": n for (t, g, l, _), n in sorted(lacking.items())},
          "source": f"{kappa['workdir']}/results.json: {task}, regime {regime}, λ={lam:g}"}


def _get(tree: dict, dotted: str):
  for part in dotted.split("."):
    tree = tree.get(part) if isinstance(tree, dict) else None
  return tree


def in_kappa(kappa: dict | None, task: str, seed: int) -> bool:
  """Whether (task, seed) is a group of the kappa study (its points are reused)."""
  return (kappa is not None and task in list(kappa["config"].tasks)
          and int(seed) in [int(s) for s in kappa["config"].seeds])


def check_settings(config, kappa: dict, criterion: dict) -> None:
  """Refuses (ValueError, one line) unless the reused kappa points are this study's points."""
  mine = json.loads(config.to_json_best_effort())
  theirs = kappa["stored_config"]
  fields = list(POINT_FIELDS) + [f"regimes_def.{criterion['regime']}"]
  differ = [f for f in fields if _get(mine, f) != _get(theirs, f)]
  if differ:
    raise ValueError(f"selection settings differ from the kappa study's ({kappa['workdir']}) "
                     f"in {', '.join(differ)}: its points are not this study's runs")
  if not any(in_kappa(kappa, t, s) for t in config.tasks for s in config.seeds):
    return
  k = kappa["config"]
  sets = set(kappa_study.layer_sets(k))
  outside = [p for p in selection_pairs(config) if p not in sets]
  if outside:
    raise ValueError(f"pairs {outside} are not layer sets of the kappa study "
                     f"({kappa['workdir']}): its points cannot be reused")
  if (criterion["regime"] not in list(k.regimes)
      or float(criterion["lam"]) not in [float(l) for l in k.lams]):
    raise ValueError(f"regime {criterion['regime']}, λ={criterion['lam']:g} is not a cell of "
                     f"the kappa study ({kappa['workdir']}): its points cannot be reused")


def arms_of(config, criterion, kernel, seed, pairs) -> dict:
  """{arm: [pair, ...]}: the selector's pair, the baselines, the random pairs."""
  sign = 1 if criterion["direction"] == "max" else -1

  def score(pair):
    v = kernel["sets"][kappa_study.label(pair)][criterion["kernel"]][criterion["stat"]]
    return sign * v if v is not None and np.isfinite(v) else -np.inf

  rng = np.random.default_rng([seed, 15])
  random = [pairs[i] for i in rng.choice(len(pairs), config.num_random, replace=False)]
  return {"selector": [max(pairs, key=score)],
          **{name: [tuple(int(i) for i in p)] for name, p in config.baselines.items()},
          "random": random}


class _GroupPoints:
  """The points of one (task, seed) in ``pdir``: read, or computed here (not from_kappa).

  ``get(pid, make)`` returns the stored point, or computes ``make(group)`` (one
  ``WarmRuns`` per (task, seed), built on first use) when ``may_compute()``, or
  records why it is missing in ``missing`` and returns None.
  """

  def __init__(self, config, task, seed, pdir, from_kappa, may_compute, missing):
    self.config, self.task, self.seed, self.pdir = config, task, int(seed), pdir
    self.from_kappa, self.may_compute, self.missing = from_kappa, may_compute, missing
    self.group, self.computed, self.reused = None, 0, 0

  def get(self, pid, make):
    path = self.pdir / f"{pid}.json"
    if path.exists():
      self.reused += self.from_kappa
      return json.loads(path.read_text())
    where = f"{self.task} seed {self.seed}"
    if self.from_kappa:
      self.missing.append(f"{where}: kappa point {pid} not produced yet")
      return None
    if not self.may_compute():
      self.missing.append(f"{where}: point {pid} not computed")
      return None
    print(f"{where}: {pid}", flush=True)
    if self.group is None:
      self.group = kappa_study.group_runs(self.config, self.task, self.seed)
    kappa_study.write_json(path, make(self.group))
    self.computed += 1
    return json.loads(path.read_text())


def _group_arms(config, criterion, pairs, pts: _GroupPoints) -> list[dict]:
  """The arm records of one (task, seed), or [] if one of its points is missing."""
  task, seed = pts.task, pts.seed
  regime, lam = criterion["regime"], float(criterion["lam"])
  kernel = pts.get(kappa_study.kernel_id(task, seed),
                   lambda g: kappa_study.kernel_point(config, g, seed))
  if kernel is None:
    return []
  seed_arms = arms_of(config, criterion, kernel, seed, pairs)
  ids = {p: kappa_study.run_id(task, p, seed, regime, lam, "nonlinear")
         for ps in seed_arms.values() for p in ps}
  outs = {}
  for pair, pid in ids.items():
    point = dict(kind="run", id=pid, task=task, seed=seed, layers=pair, regime=regime, lam=lam,
                 mode="nonlinear")
    outs[pair] = pts.get(pid, lambda g, p=point: kappa_study.run_point(config, p, g, kernel))
    if outs[pair] is None:
      return []
  source = "kappa_study" if pts.from_kappa else "selection_study"
  return [{"task": task, "seed": seed, "arm": arm, "layers": [list(p) for p in ps],
           "source": source, "points": [ids[p] for p in ps],
           "dev_metric": float(np.mean([outs[p]["dev_metric"] for p in ps])),
           "train_loss": float(np.mean([outs[p]["train_loss"] for p in ps])),
           "diverged": any(bool(outs[p].get("diverged")) for p in ps)}
          for arm, ps in seed_arms.items()]


def run(config, workdir: str) -> dict:
  """Reuses or runs every point of the arms, then writes and returns results.json."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  (workdir / "points").mkdir(parents=True, exist_ok=True)
  kappa = load_kappa(config)
  criterion = choose_criterion(config, kappa)
  if kappa is not None:
    check_settings(config, kappa, criterion)
  pairs = selection_pairs(config)
  bad = [p for p in config.baselines.values() if tuple(p) not in pairs]
  if bad:
    raise ValueError(f"baselines {bad} are not among the pairs {pairs}")
  bad = [p for p in pairs if p not in kappa_study.layer_sets(config)]
  if bad:
    raise ValueError(f"pairs {bad} are not among layer_sets: kernel points would lack them")
  print(f"criterion: {criterion}", flush=True)
  missing = [] if criterion["final"] else [
      f"criterion provisional: the kappa study's {config.criterion_task} cells lack runs "
      f"{criterion['lacking']}; no point computed (if its points are newer than its "
      "results.json, rebuild that with --config.collect_only)"]
  arms, computed, reused = [], 0, 0

  def may_compute():
    return (criterion["final"] and not config.collect_only
            and not (config.max_seconds and time.time() - t0 > config.max_seconds))

  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for seed in config.seeds:
      for task in config.tasks:
        from_kappa = in_kappa(kappa, task, seed)
        pts = _GroupPoints(config, task, seed, (kappa["workdir"] if from_kappa else workdir)
                           / "points", from_kappa, may_compute, missing)
        arms += _group_arms(config, criterion, pairs, pts)
        computed, reused = computed + pts.computed, reused + pts.reused
  comparisons = compare(config, arms)
  complete = not missing
  results = {"experiment": "selection_study", "preregistration": "docs/preregistration.md",
             **records.provenance(config), "kappa_workdir": config.kappa_workdir,
             "criterion": criterion, "complete": complete, "missing": missing, "arms": arms,
             "comparisons": comparisons,
             "verdict": verdict_of(comparisons, complete, missing),
             "points_computed": computed, "kappa_points_reused": reused,
             "wall_seconds": time.time() - t0}
  kappa_study.write_json(workdir / "results.json", results)
  for c in comparisons:
    if c["mean_difference"] is not None:
      print(f"{c['task']}: selector - {c['arm']} = {c['mean_difference']:+.4f} CI {c['ci']}")
  v = results["verdict"]
  print(f"verdict: {v['verdict']} ({v['reason']})")
  return results


def compare(config, arms) -> list[dict]:
  """selector − arm dev metric, paired by seed, per task and pooled; Holm over arms.

  Only (task, seed) units with all arms present enter (a unit's arms are stored
  together or not at all); ``n`` is their number, and an arm with none has
  None in place of its numbers.
  """
  value = {(a["task"], a["seed"], a["arm"]): a["dev_metric"] for a in arms}
  others = [*config.baselines.keys(), "random"]
  out = []
  for task in list(config.tasks) + ["pooled"]:
    tasks = list(config.tasks) if task == "pooled" else [task]
    units = [(t, s) for t in tasks for s in config.seeds if (t, s, "selector") in value]
    diffs = {arm: np.array([value[(t, s, "selector")] - value[(t, s, arm)] for t, s in units])
             for arm in others}
    rng = np.random.default_rng(config.boot_seed)
    boots = {arm: (np.array([rng.choice(d, len(d)).mean() for _ in range(config.num_boot)])
                   if len(d) else np.array([])) for arm, d in diffs.items()}
    holm = cs.holm({arm: cs.bootstrap_p(b) for arm, b in boots.items()}, config.alpha)
    for arm in others:
      d = diffs[arm]
      out.append({"task": task, "arm": arm, "n": len(d),
                  "mean_difference": float(d.mean()) if len(d) else None,
                  "ci": cs.percentile_ci(boots[arm], 1 - holm[arm]["level"]) if len(d) else None,
                  "p": cs.bootstrap_p(boots[arm]) if len(d) else None,
                  "holm_level": holm[arm]["level"], "holm_rejected": holm[arm]["rejected"]})
  return out


def verdict_of(comparisons, complete: bool, missing=()) -> dict:
  """The §6 verdict from the pooled comparisons (rules 1-4 of the module docstring)."""
  pooled = {c["arm"]: c for c in comparisons if c["task"] == "pooled"}
  rows = {arm: pooled.get(arm) for arm in VERDICT_ARMS}
  base = {"estimate": None, "ci": None, "holm_rejected": None,
          "rule": "supported (§6): the pooled Holm-level CIs of selector − last2 and of "
                  "selector − random both exclude 0 upward (and Holm rejects both); refuted: "
                  "either lies below 0; undecided otherwise or when incomplete"}
  if not complete:
    first = missing[0] if missing else "points missing"
    more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
    return {"verdict": "undecided", "reason": f"incomplete: {first}{more}", **base}
  if any(r is None or r["ci"] is None or not np.all(np.isfinite(r["ci"]))
         for r in rows.values()):
    return {"verdict": "undecided", "reason": "a pooled difference is undefined", **base}
  out = {**base, "estimate": {a: r["mean_difference"] for a, r in rows.items()},
         "ci": {a: r["ci"] for a, r in rows.items()},
         "holm_rejected": {a: r["holm_rejected"] for a, r in rows.items()}}
  below = [a for a, r in rows.items() if r["ci"][1] < 0]
  if below:
    return {"verdict": "refuted", "reason": "the pooled Holm-level CI of selector − "
            f"{' and of selector − '.join(below)} lies below 0 (the selector is worse)", **out}
  if all(r["ci"][0] > 0 and r["holm_rejected"] for r in rows.values()):
    return {"verdict": "supported", "reason": "the pooled Holm-level CIs of selector − last2 "
            "and selector − random exclude 0 upward", **out}
  return {"verdict": "undecided", "reason": "a pooled Holm-level CI includes 0 (or Holm's "
          "step-down stopped before it)", **out}


if __name__ == "__main__":
  cli.run_main(run)
