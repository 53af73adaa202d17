"""Spectral layer selection against last-2, first-2 and random pairs (issue 15 §5).

  python -m experiments.selection_study --config=configs/selection_study.py[:runlocal] --workdir=W

Per (task, seed): one kernel point, the per-layer plain and sign kernels at θ0
of the model with LoRA on every layer (``ntkft.layer_set_kernels.block_kernels``;
fresh leaves are keyed by name, so they are the θ0 leaves of every pair's run),
from which the criterion of every one of the 15 pairs follows (K_S = Σ_{i∈S} K_i
+ K_head); then one run point per distinct pair among the arms (selector,
last-2, first-2, ``num_random`` random pairs), trained as in the kappa study.
Points are files under ``W/points`` (skipped when present), as in
``experiments.kappa_study``. ``W/results.json``: ``criterion`` (and where it
came from), ``arms`` (one entry per task × seed × arm: layers, dev_metric,
train_loss), ``comparisons`` (selector − arm, paired by seed, per task and
pooled, bootstrap CIs over seeds at Holm levels over the 3 comparisons).
"""
import itertools
import json
import pathlib
import time

import numpy as np

from experiments import common, kappa_analysis, kappa_study
from ntkft import cli, records
from ntkft.evals import cluster_stats as cs
from ntkft.layer_set_kernels import block_kernels
from ntkft.spectral import predictors as predictors_lib

NUM_LAYERS = 6
PAIRS = list(itertools.combinations(range(NUM_LAYERS), 2))


def _block(path: str) -> str:
  parts = path.split("/")
  return parts[1] if parts[0] == "encoder" else "head"


def choose_criterion(config) -> dict:
  """The pre-registered rule on ``config.criterion_task`` of the kappa results, or the
  configured fallback: {kernel, stat, direction, regime, lam, source}."""
  if not config.kappa_results:
    return {**config.criterion.to_dict(), "regime": config.regime, "lam": config.lam,
            "source": "config fallback (no kappa_results given)"}
  runs = json.loads(pathlib.Path(config.kappa_results).read_text())["runs"]
  cells = kappa_analysis.cell_table([r for r in runs if r["task"] == config.criterion_task])
  (task, regime, lam, _), rows = min(
      ((k, v) for k, v in cells.items() if k[3] == "nonlinear"),
      key=lambda kv: kappa_analysis.median_finite([r["lin_gap"] for r in kv[1].values()]))
  best = None
  for name in predictors_lib.STATS:
    for kernel in rows[next(iter(rows))]["predictors"]:
      per_seed = []
      for seed in sorted({s for _, s in rows}):
        keys = [k for k in rows if k[1] == seed]
        per_seed.append(cs.spearman([rows[k]["predictors"][kernel][name] for k in keys],
                                    [rows[k]["dev_metric"] for k in keys]))
      rho = float(np.nanmean(per_seed))
      if np.isfinite(rho) and (best is None or abs(rho) > abs(best[0])):
        best = (rho, kernel, name)
  rho, kernel, stat = best
  return {"kernel": kernel, "stat": stat, "direction": "max" if rho > 0 else "min",
          "regime": regime, "lam": lam, "rho_on_heldout": rho,
          "source": f"{config.kappa_results}: {task}, regime {regime}, λ={lam:g}"}


def kernel_point(config, task, seed) -> dict:
  """The 8 kernels' predictors of all 15 pairs at this seed's θ0 (+ λmax for regime a)."""
  t0 = time.time()
  c = kappa_study.run_config(config, task, tuple(range(NUM_LAYERS)), seed)
  start, x, labels, apply = kappa_study.theta0_inputs(c)
  blocks = block_kernels(apply, start.trainable, start.frozen, x, _block, config.kernel_chunk)
  pairs = {}
  for pair in PAIRS:
    part = {}
    for kind in predictors_lib.KINDS:
      part[(kind, "lora")] = sum(blocks[(kind, f"layer_{i}")] for i in pair)
      part[(kind, "head")] = blocks[(kind, "head")]
    pairs[kappa_study._label(pair)] = predictors_lib.layer_set_predictors(part, labels)
  return {"n_kernel": len(labels), "pairs": pairs, "seconds": time.time() - t0}


def _pair_kernel(kernel: dict, pair) -> dict:
  """A pair's entry of a kernel point, shaped like a kappa-study kernel point."""
  return {"predictors": kernel["pairs"][kappa_study._label(pair)], "n_kernel": kernel["n_kernel"]}


def arms_of(config, criterion, kernel, seed) -> dict:
  """{arm: [pair, ...]}: the selector's pair, the baselines, the random pairs."""
  sign = 1 if criterion["direction"] == "max" else -1
  score = lambda pair: sign * kernel["pairs"][kappa_study._label(pair)][
      criterion["kernel"]][criterion["stat"]]
  rng = np.random.default_rng([seed, 15])
  random = [PAIRS[i] for i in rng.choice(len(PAIRS), config.num_random, replace=False)]
  return {"selector": [max(PAIRS, key=score)],
          **{name: [tuple(p)] for name, p in config.baselines.items()}, "random": random}


def run(config, workdir: str) -> dict:
  """Runs every missing point, then writes and returns results.json."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  (workdir / "points").mkdir(parents=True, exist_ok=True)
  criterion = choose_criterion(config)
  print(f"criterion: {criterion}")
  arms = []
  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for seed in config.seeds:
      for task in config.tasks:
        kpath = workdir / "points" / f"kernels_{task}_s{seed}.json"
        if not kpath.exists():
          kappa_study.write_json(kpath, kernel_point(config, task, seed))
        kernel = json.loads(kpath.read_text())
        for arm, pairs in arms_of(config, criterion, kernel, seed).items():
          outs = []
          for pair in pairs:
            pid = kappa_study.run_id(task, pair, seed, criterion["regime"], criterion["lam"],
                                     "nonlinear")
            path = workdir / "points" / f"{pid}.json"
            if not path.exists():
              print(f"{task} seed {seed} {arm}: {pid}", flush=True)
              point = dict(id=pid, task=task, layers=pair, seed=seed, mode="nonlinear",
                           regime=criterion["regime"], lam=float(criterion["lam"]))
              kappa_study.write_json(path, kappa_study.run_point(config, point, workdir,
                                                                 _pair_kernel(kernel, pair)))
            outs.append(json.loads(path.read_text()))
          arms.append({"task": task, "seed": seed, "arm": arm,
                       "layers": [list(p) for p in pairs],
                       "dev_metric": float(np.mean([o["dev_metric"] for o in outs])),
                       "train_loss": float(np.mean([o["train_loss"] for o in outs]))})
  results = {"experiment": "selection_study", "preregistration": "docs/preregistration.md",
             **records.provenance(config), "criterion": criterion, "arms": arms,
             "comparisons": compare(config, arms), "wall_seconds": time.time() - t0}
  kappa_study.write_json(workdir / "results.json", results)
  for c in results["comparisons"]:
    print(f"{c['task']}: selector - {c['arm']} = {c['mean_difference']:+.4f} CI {c['ci']}")
  return results


def compare(config, arms) -> list[dict]:
  """selector − arm dev metric, paired by seed, per task and pooled; Holm over arms."""
  value = {(a["task"], a["seed"], a["arm"]): a["dev_metric"] for a in arms}
  others = [a for a in dict.fromkeys(a["arm"] for a in arms) if a != "selector"]
  out = []
  for task in list(config.tasks) + ["pooled"]:
    tasks = list(config.tasks) if task == "pooled" else [task]
    diffs = {arm: np.array([value[(t, s, "selector")] - value[(t, s, arm)]
                            for t in tasks for s in config.seeds]) for arm in others}
    rng = np.random.default_rng(config.boot_seed)
    boots = {arm: np.array([rng.choice(d, len(d)).mean() for _ in range(config.num_boot)])
             for arm, d in diffs.items()}
    holm = cs.holm({arm: cs.bootstrap_p(b) for arm, b in boots.items()}, config.alpha)
    for arm in others:
      out.append({"task": task, "arm": arm, "n": len(diffs[arm]),
                  "mean_difference": float(diffs[arm].mean()),
                  "ci": cs.percentile_ci(boots[arm], 1 - holm[arm]["level"]),
                  "p": cs.bootstrap_p(boots[arm]), "holm_rejected": holm[arm]["rejected"]})
  return out


if __name__ == "__main__":
  cli.run_main(run)
