"""Spectral layer selection vs baseline layer choices at the same budget.

  python -m experiments.selection_validation --config=configs/selection_validation.py \
      --workdir=runs/selection_validation
  python -m experiments.selection_validation \
      --config=configs/selection_validation.py:runlocal --workdir=/tmp/sv

For each task of ``config.tasks``: the per-block NTKs at θ0
(``experiments.layer_study``), the selector's choice of ``budget`` layers
(``ntkft.select.selection.select`` with ``config.criterion`` and
``config.search``; every other criterion's choice is recorded too), and the
arms

  selector   the selector's layers
  last<k>    the last k layers          first<k>   the first k layers
  random<r>  ``num_random`` random k-sets, seeded by (random_seed, task), distinct
             from the arms above while enough sets remain

each fine-tuned (``config.finetune``) once per seed of ``config.seeds``.

The selector scores K_S = Σ_{i∈S} K_{layer_i} + K_head (the head is fine-tuned in
every arm, so it is in every kernel): it gets the blocks ``K_{layer_i} +
K_head / k``, whose sum over any k blocks is exactly that kernel (PSD blocks, so
the Weyl pruning stays valid); the exhaustive search is therefore exact.

Writes into the workdir:

  results.json   ``tasks: {task: {selector: {criterion, search, layers, value,
                 other_criteria: {criterion: {layers, value}}}, arms: {name:
                 {layers, seeds, dev_metric: [...], train_loss: [...], mean, std,
                 train_loss_mean, train_loss_std, kernel: {kappa, lambda_min,
                 ...}}}, dev_metric_name, kernel: {n, seconds, index}}}``,
                 ``config``, ``machine``, ``wall_seconds``; std is the sample
                 standard deviation over seeds (ddof=1; 0 for one seed)
  selection_validation_arms.png   per task: dev metric mean ± std per arm,
                 the seeds as dots
  <task>/kernels.npz, <task>/runs/L<i>-<j>_s<seed>/   cached kernels and runs
                 (a rerun skips every finished run; coinciding arms share runs)

and prints one markdown table per task.
"""
import itertools
import pathlib
import time
import zlib

import numpy as np

from experiments import common, layer_study
from ntkft import cli, records
from ntkft.select import selection as selection_lib

TABLE_COLUMNS = ("arm", "layers", "kappa", "dev_metric", "train_loss", "seeds")


def selector_kernels(kernels: dict, num_layers: int, k: int, head: bool) -> dict:
  """{``layer_<i>``: K_i (+ K_head / k)}: any k of them sum to K_S (+ K_head)."""
  out = {}
  for i in range(num_layers):
    block = np.asarray(kernels[f"layer_{i}"], np.float64)
    out[f"layer_{i}"] = block + kernels[layer_study.HEAD] / k if head else block
  return out


def _layers_of(selected) -> tuple[int, ...]:
  return tuple(sorted(int(name.removeprefix("layer_")) for name in selected))


def select_layers(tk: dict, num_layers: int, k: int, head: bool, criterion: str,
                  search: str, ridge: float, residual: bool) -> dict:
  """The selector's k layers for ``criterion`` and every other criterion's.

  Returns:
    {criterion, search, layers, value, other_criteria: {criterion: {layers, value}}}.
  """
  if criterion not in selection_lib.CRITERIA:
    raise ValueError(f"config.criterion={criterion!r}; choose from {selection_lib.CRITERIA}")
  if not 1 <= k <= num_layers:
    raise ValueError(f"config.budget={k} must be in [1, {num_layers}]")
  kernels = selector_kernels(tk["kernels"], num_layers, k, head)
  common = dict(k=k, targets=tk["targets"], fx0=tk["fx0"] if residual else None, ridge=ridge)
  picks = {}
  for crit in selection_lib.CRITERIA:
    sel = selection_lib.select(kernels, search, criterion=crit, **common)
    picks[crit] = {"layers": list(_layers_of(sel.selected)), "value": float(sel.value),
                   "bound_violations": sel.bound_violations}
  main = picks.pop(criterion)
  return {"criterion": criterion, "search": search, "layers": main["layers"],
          "value": main["value"], "bound_violations": main["bound_violations"],
          "other_criteria": picks}


def arm_layers(selected, num_layers: int, k: int, num_random: int, seed: int,
               task: str) -> dict:
  """{arm name: layer tuple}: selector, last<k>, first<k>, random1..random<num_random>.

  Random arms: distinct k-subsets drawn from those not already an arm; when
  fewer remain than ``num_random``, the rest are drawn from the arms' sets.
  """
  arms = {"selector": tuple(selected), f"last{k}": tuple(range(num_layers - k, num_layers)),
          f"first{k}": tuple(range(k))}
  taken = set(arms.values())
  pool = [s for s in itertools.combinations(range(num_layers), k) if s not in taken]
  rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
  order = [pool[i] for i in rng.permutation(len(pool))]
  extra = sorted(taken)
  order += [extra[i] for i in rng.permutation(len(extra))]
  for r in range(num_random):
    arms[f"random{r + 1}"] = order[r % len(order)]
  return arms


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def plot_all(results: dict, outdir) -> list[str]:
  """Every figure of this experiment into ``outdir``: [selection_validation_arms.png]."""
  return common.draw_figures(results, outdir, {"selection_validation_arms.png": plot_arms})


def plot_arms(results: dict, path):
  """Dev metric mean ± std (sample std over seeds) per arm, one panel per task.

  Args:
    results: the dict :func:`run` returns / writes as results.json.
    path: the PNG to write.
  """
  tasks = list(results["tasks"])
  fig = common.figure(4.2 * max(1, len(tasks)), 3.8)
  for t, task in enumerate(tasks):
    out = results["tasks"][task]
    ax = fig.add_subplot(1, len(tasks), t + 1)
    names = list(out["arms"])
    means = [common.optional(out["arms"][a]["mean"]) for a in names]
    stds = [common.optional(out["arms"][a]["std"]) for a in names]
    colors = ["C3" if a == "selector" else "C0" if a.startswith(("last", "first"))
              else "C7" for a in names]
    xs = np.arange(len(names))
    ax.bar(xs, means, yerr=stds, color=colors, alpha=0.8, capsize=4)
    for x, a in zip(xs, names):
      vals = [common.optional(v) for v in out["arms"][a]["dev_metric"]]
      ax.plot(np.full(len(vals), x), vals, "k.", markersize=4)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{a}\n({common.layer_label(out['arms'][a]['layers'])})"
                        for a in names], fontsize=7)
    finite = [m for m in means if np.isfinite(m)]
    if finite:
      lo = min(finite) - 2 * max([s for s in stds if np.isfinite(s)] + [0.01])
      ax.set_ylim(max(0.0, lo), None)
    ax.set_ylabel(f"dev {out.get('dev_metric_name', 'metric')}")
    sel = out["selector"]
    ax.set_title(f"{task}: selector {sel['criterion']} -> "
                 f"({common.layer_label(sel['layers'])})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def _table_rows(out: dict) -> list[dict]:
  rows = []
  for name, arm in out["arms"].items():
    rows.append({"arm": name, "layers": arm["layers"], "kappa": arm["kernel"]["kappa"],
                 "dev_metric": f"{arm['mean']:.4f} ± {arm['std']:.4f}",
                 "train_loss": f"{arm['train_loss_mean']:.4f} ± {arm['train_loss_std']:.4f}",
                 "seeds": len(arm["seeds"])})
  return rows


def run(config, workdir: str) -> dict:
  """Runs the comparison (resuming finished runs); returns and writes the results."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  common.parse_tasks(config.tasks)  # fail on a bad task name before any work
  num_layers = layer_study.num_layers_of(config.finetune.model.name)
  seeds = tuple(int(s) for s in config.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"config.seeds={config.seeds} must be distinct and non-empty")
  if config.num_random < 0:
    raise ValueError(f"config.num_random={config.num_random} must be >= 0")
  head = bool(config.finetune.peft.head)
  k = int(config.budget)
  results = {"tasks": {}, "head_in_kernel": head, **records.provenance(config)}
  for task, tk in layer_study.kernels_per_task(config, workdir):
    selector = select_layers(tk, num_layers, k, head, config.criterion, config.search,
                             config.ridge, config.residual)
    print(f"{task}: kernels on n={config.n_kernel} ({tk['seconds']:.1f}s); selector "
          f"{config.criterion} ({config.search}) -> {selector['layers']}; others "
          + ", ".join(f"{c} -> {o['layers']}" for c, o in selector["other_criteria"].items()))
    arms = {}
    metric_name = None
    for name, layers in arm_layers(selector["layers"], num_layers, k, config.num_random,
                                   config.random_seed, task).items():
      stats = layer_study.set_stats(tk, layers, head)
      arm = {"layers": list(layers), "seeds": list(seeds), "dev_metric": [],
             "train_loss": [], "run_seconds": [], "kernel": stats}
      for seed in seeds:
        label = common.layer_label(layers)
        summary = layer_study.finetune(config.finetune, task, layers, seed,
                                       workdir / task / "runs" / f"L{label}_s{seed}",
                                       config.keep_checkpoints)
        layer_study.check_num_params(stats["num_params"], summary, f"{task} {name}")
        arm["dev_metric"].append(summary["dev_metric"])
        arm["train_loss"].append(summary["train_loss"])
        arm["run_seconds"].append(0.0 if summary["skipped"] else summary["wall_seconds"])
        metric_name = summary["dev_metric_name"]
        print(f"{task} {name} L{label} seed {seed}: dev {metric_name} "
              f"{summary['dev_metric']:.4f} train loss {summary['train_loss']:.4f}"
              + common.run_note(summary))
      arm["mean"], arm["std"] = _mean_std(arm["dev_metric"])
      arm["train_loss_mean"], arm["train_loss_std"] = _mean_std(arm["train_loss"])
      arms[name] = arm
    results["tasks"][task] = {
        "selector": selector, "arms": arms, "dev_metric_name": metric_name,
        "kernel": layer_study.kernel_record(config.n_kernel, tk)}
    common.write_results(results, workdir, t0)  # after every task: partial results
  results = common.write_results(results, workdir, t0)
  plot_all(results, workdir)
  for task, out in results["tasks"].items():
    print(f"\n### {task}: dev {out['dev_metric_name']} mean ± std over seeds {list(seeds)} "
          f"(selector {out['selector']['criterion']}, {out['selector']['search']})\n")
    print(common.format_markdown(_table_rows(out), TABLE_COLUMNS))
  print(f"\nwall {results['wall_seconds']:.1f}s")
  return results


if __name__ == "__main__":
  cli.run_main(run)
