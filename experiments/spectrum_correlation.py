"""Does the spectrum of the NTK at θ0 predict fine-tuning? One point per layer set.

  python -m experiments.spectrum_correlation --config=configs/spectrum_correlation.py \
      --workdir=runs/spectrum_correlation
  python -m experiments.spectrum_correlation \
      --config=configs/spectrum_correlation.py:runlocal --workdir=/tmp/sc

For each task of ``config.tasks``: the per-block NTKs at θ0 on ``n_kernel``
examples of the fine-tuning training set (``experiments.layer_study``), then
for every layer set S of ``config.layer_sets`` (default: every single layer and
every adjacent pair) the spectrum of K_S = Σ_{i∈S} K_{layer_i} + K_head (the
NTK of exactly the fine-tuned parameters: LoRA on S's query/value + the head)
and a short fine-tuning run of S (``config.finetune``; same seed, data and
optimizer for every S). Then Spearman's ρ between each spectral predictor
(κ, λ_min, λ_max, effective rank, kernel-target alignment with the residual
y − f(θ0), and κ of the layer blocks alone, ``kappa_layers_only``) and the
final train loss / dev metric, with a seeded percentile-bootstrap 95% CI.

Writes into the workdir:

  results.json   ``tasks: {task: {rows: [{layers, kappa, lambda_min, lambda_max,
                 effective_rank, alignment, kappa_layers_only, trace, num_params,
                 train_loss, dev_metric, dev_metric_name, run_seconds}], spearman:
                 {"<predictor>_vs_<outcome>": {rho, ci95, n, p_value,
                 num_boot_valid}}, kernel: {n, seconds, index}}}``, ``config``,
                 ``machine``, ``wall_seconds`` (rewritten after every task)
  spectrum_correlation_scatter.png   per task: κ (log) vs train loss and vs
                 dev metric, points labelled by layer set, ρ and CI in the titles
  <task>/kernels.npz, <task>/runs/L<i>[-<j>]/   cached kernels and the runs
                 (a rerun skips every finished run and reuses the kernels)

and prints one markdown table per task and the ρ table. κ = inf (λ_min <= 0)
is written as null.
"""
import pathlib
import time

import numpy as np
from matplotlib import ticker

from experiments import common, layer_study
from ntkft import cli, records

ROW_COLUMNS = ("layers", "num_params", "kappa", "lambda_min", "lambda_max",
               "effective_rank", "alignment", "kappa_layers_only", "train_loss", "dev_metric")


def spearman_table(spearman: dict) -> str:
  """Markdown: one row per predictor, ρ [95% CI] vs each outcome."""
  lines = ["| predictor | " + " | ".join(f"ρ vs {o} [95% CI]" for o in layer_study.OUTCOMES)
           + " |", "|---|" + "---|" * len(layer_study.OUTCOMES)]
  for p in layer_study.PREDICTORS:
    cells = []
    for o in layer_study.OUTCOMES:
      s = spearman[f"{p}_vs_{o}"]
      lo, hi = (common.optional(v) for v in s["ci95"])
      cells.append(f"{common.optional(s['rho']):+.2f} [{lo:+.2f}, {hi:+.2f}] (n={s['n']})")
    lines.append(f"| {p} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _ci_text(s: dict) -> str:
  rho = common.optional(s["rho"])
  lo, hi = (common.optional(v) for v in s["ci95"])
  return f"ρ={rho:+.2f} [{lo:+.2f}, {hi:+.2f}], n={s['n']}"


def plot_all(results: dict, outdir) -> list[str]:
  """Every figure of this experiment into ``outdir``: [spectrum_correlation_scatter.png]."""
  return common.draw_figures(results, outdir,
                             {"spectrum_correlation_scatter.png": plot_scatter})


def plot_scatter(results: dict, path):
  """κ(K_S) (log x) vs final train loss and vs dev metric; one row per task.

  Args:
    results: the dict :func:`run` returns / writes as results.json.
    path: the PNG to write.
  """
  tasks = list(results["tasks"])
  fig = common.figure(10, 3.4 * max(1, len(tasks)))
  for t, task in enumerate(tasks):
    out = results["tasks"][task]
    rows = out["rows"]
    kappa = np.array([common.optional(r["kappa"]) for r in rows])
    for j, outcome in enumerate(layer_study.OUTCOMES):
      ax = fig.add_subplot(len(tasks), 2, 2 * t + j + 1)
      y = np.array([common.optional(r[outcome]) for r in rows])
      ok = np.isfinite(kappa) & np.isfinite(y) & (kappa > 0)
      ax.scatter(kappa[ok], y[ok], color=f"C{t}", s=28)
      for r, xk, yk, good in zip(rows, kappa, y, ok):
        if good:
          ax.annotate(common.layer_label(r["layers"]), (xk, yk), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
      if ok.any():
        ax.set_xscale("log")
        lo, hi = kappa[ok].min(), kappa[ok].max()
        if hi < 10 * lo:  # within a decade: a few labelled ticks, not minor-tick clutter
          ax.xaxis.set_minor_formatter(ticker.NullFormatter())
          ax.set_xticks(np.geomspace(lo, hi, 4) if hi > lo else [lo])
          ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
      name = (rows[0].get("dev_metric_name", "dev metric") if outcome == "dev_metric"
              and rows else outcome.replace("_", " "))
      ax.set_xlabel("κ(K_S) at θ0 (K_S incl. head)")
      ax.set_ylabel(f"final {name}" if outcome == "train_loss" else f"dev {name}")
      ax.set_title(f"{task}: {_ci_text(out['spearman'][f'kappa_vs_{outcome}'])}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)


def run(config, workdir: str) -> dict:
  """Runs the study (resuming finished runs); returns and writes the results dict."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  num_layers = layer_study.num_layers_of(config.finetune.model.name)
  layer_sets = layer_study.check_layer_sets(
      config.layer_sets or layer_study.singles_and_adjacent_pairs(num_layers), num_layers)
  head = bool(config.finetune.peft.head)
  results = {"tasks": {}, "layer_sets": [list(s) for s in layer_sets], "head_in_kernel": head,
             **records.provenance(config)}
  for task, tk in layer_study.kernels_per_task(config, workdir):
    print(f"{task}: kernels on n={config.n_kernel} ({tk['seconds']:.1f}s; "
          f"blocks {sorted(tk['kernels'])})")
    rows = []
    for layers in layer_sets:
      row = {"layers": list(layers), **layer_study.set_stats(tk, layers, head)}
      label = common.layer_label(layers)
      summary = layer_study.finetune(config.finetune, task, layers, config.seed,
                                     workdir / task / "runs" / f"L{label}",
                                     config.keep_checkpoints)
      layer_study.check_num_params(row["num_params"], summary, f"{task} layers {label}")
      row.update(train_loss=summary["train_loss"], dev_metric=summary["dev_metric"],
                 dev_metric_name=summary["dev_metric_name"],
                 run_seconds=summary["wall_seconds"], skipped=summary["skipped"])
      rows.append(row)
      print(f"{task} L{label}: κ={row['kappa']:.4g} train loss {row['train_loss']:.4f} "
            f"dev {row['dev_metric_name']} {row['dev_metric']:.4f}"
            + common.run_note(summary))
    spearman = {
        f"{p}_vs_{o}": common.spearman_ci(
            [r[p] for r in rows], [r[o] for r in rows], config.num_boot,
            seed=config.boot_seed)
        for p in layer_study.PREDICTORS for o in layer_study.OUTCOMES}
    results["tasks"][task] = {
        "rows": rows, "spearman": spearman,
        "kernel": layer_study.kernel_record(config.n_kernel, tk)}
    common.write_results(results, workdir, t0)  # after every task: partial results
  results = common.write_results(results, workdir, t0)
  plot_all(results, workdir)
  for task, out in results["tasks"].items():
    print(f"\n### {task} (n_kernel={out['kernel']['n']}, dev metric "
          f"{out['rows'][0]['dev_metric_name']})\n")
    print(common.format_markdown(out["rows"], ROW_COLUMNS))
    print(f"\nSpearman ρ, {task} (bootstrap {config.num_boot} resamples):\n")
    print(spearman_table(out["spearman"]))
  print(f"\nwall {results['wall_seconds']:.1f}s")
  return results


if __name__ == "__main__":
  cli.run_main(run)
