"""Does the NTK spectrum at θ0 predict fine-tuning where linearization holds? (issues 15, 20)

  python -m experiments.kappa_study --config=configs/kappa_study.py[:runlocal] --workdir=W

The pre-registered study of docs/preregistration.md (with Amendment 2), run as a
resumable sweep of points (configs/kappa_study.py), seed-major:

* kernel point (task, seed): one Jacobian of the model with LoRA on every layer
  at that seed's θ0 (``ntkft.train.warm_runs.WarmRuns``: the exact θ0 of every
  run of the group) on its n_train training examples, the per-layer and head
  blocks of the plain and sign kernels as float64 Grams
  (``ntkft.theta0.layer_sets.untraced_block_kernels``), and for each layer set S
  (K_S = Σ_{i∈S} K_i + K_head) the predictors of the 8 kernels
  (``ntkft.spectral.predictors``), κ of the plain flattened kernel against the
  number of examples, and the sign kernel's asymmetry;
* run point (task, S, seed, regime, λ, mode): one run of
  ``WarmRuns.run`` (the loop's step, data and evaluation, in one warm
  process), its final train loss, dev metric, lin_gap, loss curve with its
  plateau check, ``seconds`` and ``train_seconds``.

Every point writes ``W/points/<id>.json`` when it finishes and is skipped when
that file exists. ``W/results.json`` is written when the process ends (all
points done, ``max_seconds`` reached, or ``--config.collect_only``): ``runs``
(one per finished run point: task, layers, seed, lam, regime, mode, train_loss,
dev_metric, lin_gap, plateaued, diverged, seconds, predictors of its layer set)
and, from ``experiments.kappa_analysis``, ``verdicts``, ``cells`` and (once every point
exists: no interim looks at predictor-outcome relations) the exploratory tables
``exploratory`` and ``rho_vs_lin_gap``; ``kernels`` holds κ vs N and the sign
kernel's asymmetry per (task, seed).
"""
import itertools
import json
import pathlib
import time

import numpy as np

from configs import glue_common
from experiments import common, kappa_analysis
from ntkft import cli, config_lib, records
from ntkft.spectral import predictors as predictors_lib
from ntkft.spectral.stats import condition_number, relative_asymmetry
from ntkft.theta0.layer_sets import layer_block, untraced_block_kernels
from ntkft.train.warm_runs import WarmRuns

NUM_LAYERS = 6
KAPPA_VS_N = (16, 32, 64, 128)  # example counts of the exploratory κ-vs-N curve


def layer_sets(config) -> list[tuple[int, ...]]:
  """The configured layer sets; (): the 6 single layers and the 15 pairs (Amendment 2)."""
  if config.layer_sets:
    return [tuple(int(i) for i in s) for s in config.layer_sets]
  return ([(i,) for i in range(NUM_LAYERS)]
          + list(itertools.combinations(range(NUM_LAYERS), 2)))


def label(layers) -> str:
  """E.g. ``L2-4`` for layers (2, 4) (point ids, results keys)."""
  return "L" + common.layer_label(layers)


def kernel_id(task, seed) -> str:
  return f"kernel_{task}_s{seed}"


def run_id(task, layers, seed, regime, lam, mode) -> str:
  return f"run_{task}_{label(layers)}_s{seed}_{regime}_lam{lam:g}_{mode}"


def points(config) -> list[dict]:
  """Every point in execution order (seed-major, preregistration §7)."""
  out = []
  for seed in config.seeds:
    for task in config.tasks:
      base = dict(task=task, seed=int(seed))
      out.append(dict(kind="kernel", id=kernel_id(task, seed), **base))
      for layers in layer_sets(config):
        for regime in config.regimes:
          cells = [(lam, "nonlinear") for lam in config.lams]
          if task in config.tangent.tasks and regime == config.tangent.regime:
            cells += [(lam, "linearized") for lam in config.tangent.lams]
          for lam, mode in cells:
            out.append(dict(kind="run", id=run_id(task, layers, seed, regime, lam, mode),
                            layers=layers, regime=regime, lam=float(lam), mode=mode, **base))
  return out


def planned_cells(config) -> dict:
  """{(task, regime, lam, mode): [(layers, seed), ...]} of every planned run point."""
  cells = {}
  for p in points(config):
    if p["kind"] == "run":
      key = (p["task"], p["regime"], p["lam"], p["mode"])
      cells.setdefault(key, []).append((tuple(p["layers"]), p["seed"]))
  return cells


def run_config(config, task, layers, seed, regime="b", lam=0.0, mode="nonlinear", lr=None):
  """The configs/glue_common.py config of one run."""
  c = glue_common.get_config(f"task={task}", mode=mode)
  c = config_lib.with_overrides(c, config.finetune.to_dict(), "kappa_study finetune")
  c = config_lib.with_overrides(c, config.regimes_def[regime].to_dict(),
                                f"kappa_study regimes_def.{regime}")
  c.seed = int(seed)
  c.lam = float(lam)
  c.peft.layers = "(" + ",".join(str(i) for i in layers) + ",)"
  if lr is not None:
    c.optim.lr = float(lr)
  return c


def group_runs(config, task, seed) -> WarmRuns:
  """The warm runner of (task, seed): θ0 with LoRA on every layer, data, caches."""
  return WarmRuns(run_config(config, task, (0,), seed))


def _flat_kappa_vs_n(k_flat: np.ndarray, c: int, seed: int) -> dict:
  """κ, λmin, λmax of the kernel restricted to the first N of a seeded example order."""
  n = k_flat.shape[0] // c
  order = np.random.default_rng([seed, 20]).permutation(n)
  out = {"n": [], "kappa": [], "lambda_min": [], "lambda_max": []}
  for m in KAPPA_VS_N:
    if m > n:
      continue
    rows = (order[:m, None] * c + np.arange(c)).reshape(-1)
    eig = np.linalg.eigvalsh(k_flat[np.ix_(rows, rows)])
    kappa = condition_number(eig)
    out["n"].append(m)
    out["kappa"].append(kappa if np.isfinite(kappa) else None)
    out["lambda_min"].append(float(eig[0]))
    out["lambda_max"].append(float(eig[-1]))
  return out


def set_blocks(blocks: dict, layers) -> dict:
  """{(kind, "lora" | "head"): K}: K_S = Σ_{i∈S} K_layer_i, and the head block."""
  out = {}
  for kind in predictors_lib.KINDS:
    out[(kind, "lora")] = sum(blocks[(kind, f"layer_{i}")] for i in layers)
    out[(kind, "head")] = blocks[(kind, "head")]
  return out


def kernel_point(config, group: WarmRuns, seed: int) -> dict:
  """Predictors of the 8 kernels of every layer set at the group's θ0 (Amendment 2.7)."""
  t0 = time.time()
  x, labels = group.kernel_inputs()
  start = group.start
  blocks = untraced_block_kernels(start.apply, start.trainable, start.frozen, x, layer_block,
                                  config.kernel_chunk)
  t_jac = time.time() - t0
  sets, vs_n, asym = {}, {}, {}
  for layers in layer_sets(config):
    part = set_blocks(blocks, layers)
    sets[label(layers)] = predictors_lib.layer_set_predictors(part, labels)
    c = part[("plain", "head")].shape[2]
    vs_n[label(layers)] = _flat_kappa_vs_n(
        predictors_lib.flat(part[("plain", "lora")] + part[("plain", "head")]), c, seed)
    sign = predictors_lib.flat(part[("sign", "lora")] + part[("sign", "head")])
    asym[label(layers)] = relative_asymmetry(sign)
  return {"n_kernel": len(labels), "sets": sets, "kappa_vs_n": vs_n, "sign_asymmetry": asym,
          "gram_dtype": "float64", "jacobian_seconds": t_jac, "seconds": time.time() - t0}


def regime_a_lr(predictors: dict, n: int, lam: float) -> float:
  """The theory's step 1/L, L = λmax(K_flat)/n + λ (plain kernel with head)."""
  return 1.0 / (predictors["plain_flat_head"]["lambda_max"] / n + lam)


def plateau(curve, window: int, rel: float, abs_tol: float) -> bool:
  """Mean logged loss of the last ``window`` steps within rel/abs of the window before.

  ``curve``: [(step, mean minibatch loss of the steps since the last log)].
  """
  steps = np.array([s for s, _ in curve])
  loss = np.array([l for _, l in curve])
  end = steps[-1]
  last = loss[steps > end - window]
  before = loss[(steps > end - 2 * window) & (steps <= end - window)]
  if not len(last) or not len(before):
    return False
  a, b = float(last.mean()), float(before.mean())
  return abs(a - b) <= max(abs_tol, rel * abs(b))


def run_point(config, point, group: WarmRuns, kernel: dict) -> dict:
  """One fine-tuning run of the group: outcomes, lin_gap, loss curve, plateau check."""
  lr = None
  if point["regime"] == "a":
    lr = regime_a_lr(kernel["sets"][label(point["layers"])], kernel["n_kernel"], point["lam"])
  c = run_config(config, point["task"], point["layers"], point["seed"], point["regime"],
                 point["lam"], point["mode"], lr)
  out = group.run(c)
  p = config.plateau
  out["plateaued"] = plateau(out["curve"], p.window, p.rel, p.abs)
  return out


def write_json(path: pathlib.Path, obj) -> None:
  """``records.write_json`` (inf/nan -> null) through a temporary file: a point file is
  either complete or absent."""
  tmp = path.with_suffix(".tmp")
  records.write_json(tmp, obj)
  tmp.replace(path)


def collect(config, workdir: pathlib.Path, seconds: float) -> dict:
  """results.json from every finished point (partial while points are missing)."""
  plan = points(config)
  done = {p["id"]: json.loads((workdir / "points" / f"{p['id']}.json").read_text())
          for p in plan if (workdir / "points" / f"{p['id']}.json").exists()}
  runs, kernels = [], []
  for p in plan:
    if p["id"] not in done:
      continue
    if p["kind"] == "kernel":
      k = done[p["id"]]
      kernels.append({"task": p["task"], "seed": p["seed"], "seconds": k["seconds"],
                      "kappa_vs_n": k["kappa_vs_n"], "sign_asymmetry": k["sign_asymmetry"]})
      continue
    kernel = done.get(kernel_id(p["task"], p["seed"]))
    runs.append({"task": p["task"], "layers": list(p["layers"]), "seed": p["seed"],
                 "lam": p["lam"], "regime": p["regime"], "mode": p["mode"],
                 "depth": max(p["layers"]), "size": len(p["layers"]), **done[p["id"]],
                 "n_kernel": kernel["n_kernel"] if kernel else None,
                 "predictors": kernel["sets"][label(p["layers"])] if kernel else None})
  results = {"experiment": "kappa_study", "preregistration": "docs/preregistration.md",
             **records.provenance(config), "points_done": len(done),
             "points_total": len(plan), "complete": len(done) == len(plan),
             "kernel_seconds": sum(v["seconds"] for k, v in done.items()
                                   if k.startswith("kernel_")),
             "run_seconds": sum(v["seconds"] for k, v in done.items() if k.startswith("run_")),
             "wall_seconds_this_session": seconds, "kernels": kernels, "runs": runs}
  # The predictor-outcome tables only once every point exists: no interim looks.
  results.update(kappa_analysis.analyse(config, runs, planned_cells(config),
                                        exploratory_tables=results["complete"]))
  return results


def run(config, workdir: str) -> dict:
  """Runs missing points (until ``config.max_seconds``), then writes results.json."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  (workdir / "points").mkdir(parents=True, exist_ok=True)
  plan = [] if config.collect_only else points(config)
  todo = [p for p in plan if not (workdir / "points" / f"{p['id']}.json").exists()]
  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for (seed, task), group_points in itertools.groupby(todo, lambda p: (p["seed"], p["task"])):
      if config.max_seconds and time.time() - t0 > config.max_seconds:
        break
      group = group_runs(config, task, seed)
      kpath = workdir / "points" / f"{kernel_id(task, seed)}.json"
      for point in group_points:
        if config.max_seconds and time.time() - t0 > config.max_seconds:
          break
        print(f"[{plan.index(point) + 1}/{len(plan)}] {point['id']}", flush=True)
        if point["kind"] == "kernel":
          write_json(kpath, kernel_point(config, group, seed))
          continue
        out = run_point(config, point, group, json.loads(kpath.read_text()))
        write_json(workdir / "points" / f"{point['id']}.json", out)
  results = collect(config, workdir, time.time() - t0)
  write_json(workdir / "results.json", results)
  for v in results["verdicts"]:
    est = "n/a" if v["estimate"] is None else f"{v['estimate']:.3f}"
    print(f"{v['hypothesis']}: estimate {est} CI {v['ci']} -> {v['verdict']}")
  return results


if __name__ == "__main__":
  cli.run_main(run)
