"""What a κ-study point costs beyond its training, apart from the sweep (issue 20).

  python benchmarks/study_point.py [--json] [--task rte] [--seed 0] [--steps 96]
                                   [--layer_sets "2;0,5"]

In ONE process, as ``experiments.kappa_study`` runs a (task, seed) group of the
full-scale design (configs/kappa_study.py): builds the group
(``kappa_study.group_runs``: θ0 with LoRA on every layer, data, tokenizer), times
its kernel point (``kappa_study.kernel_point``: one Jacobian, float64 block
Grams, predictors of all 21 layer sets), then runs 8 consecutive run points —
two layer sets × regimes (a, b) × λ (0, 10), nonlinear, in the sweep's order —
through ``kappa_study.run_point``, writing their point files (and the XLA cache,
when the config keeps one) in a temporary workdir, never under docs/results.

Keys: ``kernel_task_seed_s`` (the kernel point), ``run_point_median_s`` (median of
the points' ``seconds``), ``run_overhead_median_s`` (median of ``seconds −
train_seconds``: setup, compilation, evaluation and lin_gap outside the training
steps; goal ≤ 8 s at 96 steps), ``points`` (per point: id, seconds,
train_seconds, overhead_s, diverged), ``group_s`` (building the group),
``load_start`` / ``load_end`` (``os.getloadavg()``) and ``quiet`` (1-minute load
≤ 2.5 at the start: only a quiet timing is reported). ``--steps`` shortens every
run, with regime (b)'s warmup cut to at most half of it (a smoke check, not the
goal's setting).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))  # configs, experiments
import common  # noqa: E402

from configs import kappa_study as kappa_config  # noqa: E402
from experiments import common as experiments_common  # noqa: E402
from experiments import kappa_study  # noqa: E402

QUIET_LOAD = 2.5


def parse_layer_sets(text: str) -> list[tuple[int, ...]]:
  """"2;0,5" -> [(2,), (0, 5)]."""
  return [tuple(int(i) for i in part.split(",")) for part in text.split(";") if part.strip()]


def run_points(task: str, seed: int, layer_sets) -> list[dict]:
  """The sweep's run points of these sets (regimes × λ of configs/kappa_study.py), in its
  order: set, then regime, then λ."""
  config = kappa_config.get_config()
  return [dict(kind="run", id=kappa_study.run_id(task, layers, seed, regime, lam, "nonlinear"),
               task=task, seed=seed, layers=layers, regime=regime, lam=float(lam),
               mode="nonlinear")
          for layers in layer_sets for regime in config.regimes for lam in config.lams]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--task", default="rte")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=0, help="steps per run (0: the config's 96)")
  parser.add_argument("--layer_sets", default="2;0,5", help="two sets, e.g. '2;0,5'")
  args = parser.parse_args()

  load_start = os.getloadavg()
  config = kappa_config.get_config()
  if args.steps:
    config.finetune.train.steps = args.steps
    for regime in config.regimes_def.values():  # warmup must fit in the run
      regime.optim.warmup_steps = min(regime.optim.warmup_steps, args.steps // 2)
  layer_sets = parse_layer_sets(args.layer_sets)
  missing = [s for s in layer_sets if s not in kappa_study.layer_sets(config)]
  if missing:
    raise SystemExit(f"layer set {missing[0]} is not in the study's design")
  points = []
  with tempfile.TemporaryDirectory(prefix="study_point_") as tmp:
    workdir = pathlib.Path(tmp)
    (workdir / "points").mkdir()
    cache = workdir / "xla_cache" if config.xla_cache else None
    with experiments_common.compilation_cache(cache):
      t0 = time.time()
      group = kappa_study.group_runs(config, args.task, args.seed)
      group_s = time.time() - t0
      t0 = time.time()
      kernel = kappa_study.kernel_point(config, group, args.seed)
      kpath = workdir / "points" / f"{kappa_study.kernel_id(args.task, args.seed)}.json"
      kappa_study.write_json(kpath, kernel)
      kernel_s = time.time() - t0
      kernel = json.loads(kpath.read_text())  # what the sweep's run points read
      for point in run_points(args.task, args.seed, layer_sets):
        out = kappa_study.run_point(config, point, group, kernel)
        kappa_study.write_json(workdir / "points" / f"{point['id']}.json", out)
        points.append({"id": point["id"], "seconds": out["seconds"],
                       "train_seconds": out["train_seconds"],
                       "overhead_s": out["seconds"] - out["train_seconds"],
                       "diverged": out["diverged"]})
  load_end = os.getloadavg()
  result = {
      "kernel_task_seed_s": kernel_s,
      "run_point_median_s": statistics.median(p["seconds"] for p in points),
      "run_overhead_median_s": statistics.median(p["overhead_s"] for p in points),
      "group_s": group_s,
      "kernel_jacobian_s": kernel["jacobian_seconds"],
      "points": points,
      "load_start": list(load_start), "load_end": list(load_end),
      "quiet": load_start[0] <= QUIET_LOAD,
      "task": args.task, "seed": args.seed, "steps": config.finetune.train.steps,
      "layer_sets": [list(s) for s in layer_sets], "n_kernel": kernel["n_kernel"],
      "machine": common.machine(),
  }
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
