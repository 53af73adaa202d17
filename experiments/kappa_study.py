"""Does the NTK spectrum at θ0 predict fine-tuning where linearization holds? (issue 15)

  python -m experiments.kappa_study --config=configs/kappa_study.py[:runlocal] --workdir=W

The pre-registered study of docs/preregistration.md, run as a resumable sweep of
points (configs/kappa_study.py):

* kernel point (task, layers S, seed): θ0 of the run of S with that seed
  (``ntkft.theta0.build_theta0``), its n_train training examples exactly as the
  run sees them, the untraced plain and sign kernels split head / LoRA
  (``ntkft.layer_set_kernels``, through the prefix cache) and the predictors of
  the 8 kernels (``ntkft.spectral.predictors``);
* run point (task, S, seed, regime, λ, mode): one ``ntkft.train.loop`` run with
  the frozen prefix cached, its final train loss, dev metric, lin_gap and the
  loss curve with its plateau check.

Every point writes ``W/points/<id>.json`` when it finishes and is skipped when
that file exists. ``W/results.json`` (rewritten after every point) has ``runs``
(one per finished run point: task, layers, seed, lam, regime, mode, train_loss,
dev_metric, lin_gap, plateaued, curve, predictors per kernel) and, from
``experiments.kappa_analysis``, ``verdicts`` (one per pre-registered hypothesis)
and ``exploratory``.
"""
import json
import pathlib
import shutil
import time

import numpy as np

from configs import glue_common
from experiments import common, kappa_analysis
from ntkft import cli, config_lib, data, peft, records
from ntkft.layer_set_kernels import head_lora_kernels
from ntkft.spectral import predictors as predictors_lib
from ntkft.theta0 import build_theta0
from ntkft.train import loop, prefix_cache

NUM_LAYERS = 6


def layer_sets(config) -> list[tuple[int, ...]]:
  """The configured layer sets; (): the 6 single layers and the 5 adjacent pairs."""
  if config.layer_sets:
    return [tuple(int(i) for i in s) for s in config.layer_sets]
  return [(i,) for i in range(NUM_LAYERS)] + [(i, i + 1) for i in range(NUM_LAYERS - 1)]


def _label(layers) -> str:
  return "L" + "-".join(str(i) for i in layers)


def kernel_id(task, layers, seed) -> str:
  return f"kernel_{task}_{_label(layers)}_s{seed}"


def run_id(task, layers, seed, regime, lam, mode) -> str:
  return f"run_{task}_{_label(layers)}_s{seed}_{regime}_lam{lam:g}_{mode}"


def points(config) -> list[dict]:
  """Every point in execution order (seed-major, preregistration §7)."""
  out = []
  for seed in config.seeds:
    for task in config.tasks:
      for layers in layer_sets(config):
        base = dict(task=task, layers=layers, seed=int(seed))
        out.append(dict(kind="kernel", id=kernel_id(task, layers, seed), **base))
        for regime in config.regimes:
          cells = [(lam, "nonlinear") for lam in config.lams]
          if task in config.tangent.tasks and regime == config.tangent.regime:
            cells += [(lam, "linearized") for lam in config.tangent.lams]
          for lam, mode in cells:
            out.append(dict(kind="run", id=run_id(task, layers, seed, regime, lam, mode),
                            regime=regime, lam=float(lam), mode=mode, **base))
  return out


def run_config(config, task, layers, seed, regime="b", lam=0.0, mode="nonlinear", lr=None):
  """The configs/glue_common.py config of one run (also the θ0 of its kernel point)."""
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


def theta0_inputs(c):
  """θ0 of the run config ``c`` and its training examples as one batch.

  Returns:
    (start, x, labels, apply): ``ntkft.theta0.build_theta0(c)``; the n_train
    examples exactly as the run sees them (``loop.load_data``) with the states
    entering the lowest trained layer (``prefix_cache``); their labels; and
    ``apply(trainable, x, frozen)`` from those states.
  """
  start = build_theta0(c)
  model = start.model
  train_enc, _, _ = loop.load_data(c, data.get_task(c.task), data.load_tokenizer(model.source))
  d = c.data
  cache = prefix_cache.PrefixCache.build(model, start.trainable, model.params,
                                         {"train": train_enc}, d.eval_batch_size, d.buckets,
                                         d.max_len)
  batch = data.eval_batches(train_enc, len(train_enc.labels), None,
                            int(train_enc.lengths.max()))[0]
  fed = cache.attach(batch, "train")
  x = {k: fed[k] for k in ("input_ids", "attention_mask", "token_type_ids", "hidden")}

  def apply(p, xx, frozen):
    return cache.apply_fn(peft.combine(p, frozen), xx)

  return start, x, batch["labels"], apply


def kernel_point(config, point) -> dict:
  """Predictors of the 8 kernels at the θ0 of the runs of (task, layers, seed)."""
  t0 = time.time()
  c = run_config(config, point["task"], point["layers"], point["seed"])
  start, x, labels, apply = theta0_inputs(c)
  blocks = head_lora_kernels(apply, start.trainable, start.frozen, x, config.kernel_chunk)
  return {"n_kernel": len(labels),
          "predictors": predictors_lib.layer_set_predictors(blocks, labels),
          "num_trainable": peft.count(start.trainable), "seconds": time.time() - t0}


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


def run_point(config, point, workdir: pathlib.Path, kernel: dict) -> dict:
  """One fine-tuning run; its outcomes, lin_gap and loss curve."""
  lr = None
  if point["regime"] == "a":
    lr = regime_a_lr(kernel["predictors"], kernel["n_kernel"], point["lam"])
  c = run_config(config, point["task"], point["layers"], point["seed"], point["regime"],
                 point["lam"], point["mode"], lr)
  rundir = workdir / "runs" / point["id"]
  summary = loop.run(c, str(rundir))
  logged = [json.loads(l) for l in (rundir / "metrics.jsonl").read_text().splitlines()]
  curve = [(r["step"], r["loss"]) for r in logged if r["split"] == "train"]
  shutil.rmtree(rundir / "ckpt", ignore_errors=True)
  p = config.plateau
  return {"train_loss": summary["train_loss"], "dev_metric": summary["dev_metric"],
          "dev_metric_name": summary["dev_metric_name"], "lin_gap": summary.get("lin_gap"),
          "param_distance": summary["param_distance"], "lr": c.optim.lr,
          "steps": summary["steps"], "curve": curve,
          "plateaued": plateau(curve, p.window, p.rel, p.abs),
          "seconds": summary["wall_seconds"]}


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
  runs = []
  for p in plan:
    if p["kind"] != "run" or p["id"] not in done:
      continue
    kernel = done.get(kernel_id(p["task"], p["layers"], p["seed"]))
    runs.append({"task": p["task"], "layers": list(p["layers"]), "seed": p["seed"],
                 "lam": p["lam"], "regime": p["regime"], "mode": p["mode"],
                 "depth": max(p["layers"]), "size": len(p["layers"]), **done[p["id"]],
                 "predictors": kernel["predictors"] if kernel else None})
  complete = len(done) == len(plan)
  results = {"experiment": "kappa_study", "preregistration": "docs/preregistration.md",
             **records.provenance(config), "points_done": len(done),
             "points_total": len(plan), "complete": complete,
             "kernel_seconds": sum(v["seconds"] for k, v in done.items()
                                   if k.startswith("kernel_")),
             "run_seconds": sum(v["seconds"] for k, v in done.items() if k.startswith("run_")),
             "wall_seconds_this_session": seconds, "runs": runs}
  results.update(kappa_analysis.analyse(config, runs, complete))
  return results


def run(config, workdir: str) -> dict:
  """Runs every missing point, then writes and returns results.json."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  (workdir / "points").mkdir(parents=True, exist_ok=True)
  plan = points(config)
  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for i, point in enumerate(plan):
      path = workdir / "points" / f"{point['id']}.json"
      if path.exists():
        continue
      print(f"[{i + 1}/{len(plan)}] {point['id']}", flush=True)
      if point["kind"] == "kernel":
        out = kernel_point(config, point)
      else:
        kid = kernel_id(point["task"], point["layers"], point["seed"])
        kernel = json.loads((workdir / "points" / f"{kid}.json").read_text())
        out = run_point(config, point, workdir, kernel)
      write_json(path, out)
      if point["kind"] == "run":
        write_json(workdir / "results.json", collect(config, workdir, time.time() - t0))
  results = collect(config, workdir, time.time() - t0)
  write_json(workdir / "results.json", results)
  for v in results["verdicts"]:
    print(f"{v['hypothesis']}: estimate {v['estimate']:.3f} CI {v['ci']} -> {v['verdict']}")
  return results


if __name__ == "__main__":
  cli.run_main(run)
