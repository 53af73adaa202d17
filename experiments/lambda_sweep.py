"""How linear is fine-tuning? The three regimes vs λ, with the theory's bounds beside them.

  python -m experiments.lambda_sweep --config=configs/lambda_sweep.py:runlocal --workdir=W

For one task, one parameter subset (``peft``) and each λ of ``config.lams``,
trains from the same θ0 and the same data order (``ntkft.diagnostics.run_regimes``):
the nonlinear model f(θ), the tangent model f̄(θ) and the closed-form kernel
trajectory / kernel-ridge endpoint, under the squared loss on one-hot targets and
(S)GD with the pull λ/2‖θ − θ0‖². Writes into the workdir:

  results.json     config, η, kernel spectrum edge, and per λ: records every
                   ``record_every`` steps, per-step objective/distance, the
                   bounds, violation flags and counts; plus ``table`` (one row per λ)
  distances.png    ‖θ_t − θ0‖ (nonlinear solid, linearized dashed) vs step, one
                   colour per λ, the bound sqrt(2R(θ0)/λ) dotted in the same colour
  gaps_vs_lambda.png  final ‖θ−θ0‖, bound, ‖θ−θ̄‖, ‖f−f̄‖ train/eval and the
                   remainder estimate vs λ (log axes; λ = 0 on a linear stretch)

and prints the table. Output gaps are RMS over examples of the per-example
Euclidean norm over the logits (see ``ntkft.diagnostics``).
"""
import pathlib
import time

import numpy as np

from experiments import common
from ntkft import cli, data, diagnostics, peft, records, theta0
from ntkft import targets as targets_lib
from ntkft.models import blocks

TABLE_COLUMNS = ("lam", "dist_nonlinear", "dist_linearized", "bound", "param_gap",
                 "f_gap_train", "f_gap_eval", "remainder_train", "remainder_est_train",
                 "agree_eval", "acc_nonlinear_eval", "acc_linearized_eval", "cf_gap_train",
                 "violations")


def load_inputs(config, start, task):
  """(x_train, y_train, x_eval, y_eval): fixed random samples, one padded batch each.

  ``config.n_train`` train and ``config.n_eval`` eval examples
  (``ntkft.data.fixed_sample`` with seeds [seed, 0] and [seed, 1]), both padded
  to the same length, so equal n_train and n_eval share compiled code; targets
  are one-hot labels (``ntkft.targets.targets``).
  """
  d = config.data
  tokenizer = data.load_tokenizer(start.model.source)
  samples = []
  for split, n, salt in ((d.train_split, config.n_train, 0), (d.eval_split, config.n_eval, 1)):
    examples = data.load_examples(task, split, data.task_data_dir(task, d.root))
    samples.append(data.fixed_sample(examples, n, [config.seed, salt], tokenizer, d.max_len))
  length = max(s.longest for s in samples)
  out = []
  for s in samples:
    out += [s.inputs(length),
            np.asarray(targets_lib.targets(s.labels, task.num_labels, task.is_regression))]
  return tuple(out)


def table_row(out: dict) -> dict:
  f = out["final"]
  return {"lam": out["lam"], "dist_nonlinear": f["dist_nonlinear"],
          "dist_linearized": f["dist_linearized"], "bound": out["bounds"]["distance"],
          "param_gap": f["dist_nonlinear_vs_linearized"], "f_gap_train": f["f_gap_train"],
          "f_gap_eval": f["f_gap_eval"], "remainder_train": f["remainder_measured_train"],
          "remainder_est_train": f["remainder_estimate_train"],
          "agree_eval": f["agree_nonlinear_linearized_eval"],
          "acc_nonlinear_eval": f.get("acc_nonlinear_eval"),
          "acc_linearized_eval": f.get("acc_linearized_eval"),
          "cf_gap_train": f["closed_form_gap_train"], "violations": out["num_violations"]}


def format_table(rows: list[dict]) -> str:
  def cell(v):
    if v is None:
      return "-"
    if isinstance(v, int):
      return str(v)
    return f"{v:.3g}"
  head = " | ".join(TABLE_COLUMNS)
  lines = [head, " | ".join("---" for _ in TABLE_COLUMNS)]
  lines += [" | ".join(cell(r[c]) for c in TABLE_COLUMNS) for r in rows]
  return "\n".join(lines)


def plot_distances(results: list[dict], path):
  fig = common.figure(6.5, 4.2)
  ax = fig.add_subplot(1, 1, 1)
  for i, out in enumerate(results):
    color = f"C{i}"
    for regime, style in (("nonlinear", "-"), ("linearized", "--")):
      dist = np.asarray(out["per_step"][regime]["distance"])
      ax.plot(np.arange(len(dist))[1:], dist[1:], style, color=color,
              label=f"λ={out['lam']:g} {regime}")
    if np.isfinite(out["bounds"]["distance"]):
      ax.axhline(out["bounds"]["distance"], color=color, linestyle=":", linewidth=1)
  ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("‖θ_t − θ0‖ (dotted: sqrt(2R(θ0)/λ))")
  ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path)


def plot_gaps(rows: list[dict], path):
  fig = common.figure(6.5, 4.2)
  ax = fig.add_subplot(1, 1, 1)
  lams = np.array([r["lam"] for r in rows])
  for key, style in (("dist_nonlinear", "o-"), ("bound", "k:"), ("param_gap", "s-"),
                     ("f_gap_train", "^-"), ("f_gap_eval", "v-"),
                     ("remainder_est_train", "x--")):
    vals = common.as_floats([r[key] for r in rows])
    vals[~np.isfinite(vals) | (vals <= 0)] = np.nan
    ax.plot(lams, vals, style, label=key)
  positive = lams[lams > 0]
  ax.set_xscale("symlog", linthresh=positive.min() if positive.size else 1.0)
  ax.set_yscale("log")
  ax.set_xlabel("λ")
  ax.set_ylabel("at the last step")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)


def plot_all(results: dict, outdir) -> list[str]:
  """Both figures from a loaded results.json into ``outdir``.

  results.json stores inf/nan as null (``_finite``); they are turned back into
  floats (inf bound at λ = 0, nan distances) before calling
  :func:`plot_distances` and :func:`plot_gaps`.

  Returns:
    [outdir/lambda_sweep_distances.png, outdir/lambda_sweep_gaps_vs_lambda.png]
  """
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  per_lambda = []
  for out in results["per_lambda"]:
    bound = out["bounds"]["distance"]
    per_lambda.append({
        "lam": out["lam"],
        "bounds": {"distance": np.inf if bound is None else bound},
        "per_step": {regime: {"distance": [np.nan if v is None else v
                                           for v in out["per_step"][regime]["distance"]]}
                     for regime in ("nonlinear", "linearized")}})
  paths = [str(outdir / "lambda_sweep_distances.png"),
           str(outdir / "lambda_sweep_gaps_vs_lambda.png")]
  plot_distances(per_lambda, paths[0])
  plot_gaps(results["table"], paths[1])
  return paths


def run(config, workdir: str) -> dict:
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.optimizer != "sgd":
    raise ValueError(f"optimizer={config.optimizer!r}: only 'sgd' (the theory's setting)")
  if not config.lams or any(lam < 0 for lam in config.lams):
    raise ValueError(f"lams must be a non-empty grid of values >= 0, got {config.lams}")
  task = data.get_task(config.task)
  start = theta0.build_theta0(config)
  trainable, frozen, apply = start.trainable, start.frozen, start.apply
  print(peft.describe(trainable, frozen))
  x_train, y_train, x_eval, y_eval = load_inputs(config, start, task)
  chunk = config.ntk_batch_size or None
  k_tt = diagnostics.flat_ntk(apply, x_train, None, trainable, frozen, batch_size=chunk)
  k_et = diagnostics.flat_ntk(apply, x_eval, x_train, trainable, frozen, batch_size=chunk)
  n = config.n_train
  gn = diagnostics.lipschitz(k_tt, n, 0.0)  # λmax(K)/n
  if config.lr_relative > 0:
    lr = config.lr_relative * 2.0 / (gn + max(config.lams))
  else:
    lr = config.lr
  block_of = blocks.block_of_fn(config.block_by)
  results = []
  for lam in config.lams:
    t_lam = time.time()
    out = diagnostics.run_regimes(
        apply, trainable, x_train, y_train, x_eval, y_eval, extra=(frozen,), lam=float(lam),
        lr=lr, steps=config.steps, record_every=config.record_every,
        batch_size=config.batch_size or None, seed=config.seed, selective=config.selective,
        block_of=block_of, kernels=(k_tt, k_et))
    out["wall_seconds"] = time.time() - t_lam
    results.append(out)
    print(f"λ={lam:g}: done in {out['wall_seconds']:.1f}s, violations {out['num_violations']}")
  rows = [table_row(out) for out in results]
  summary = {
      "task": task.name, "model": config.model.name, "peft": config.peft.to_dict(),
      "num_params": peft.count(trainable), "n_train": n, "n_eval": config.n_eval,
      "lr": lr, "gauss_newton_lmax_over_n": gn, "kernel_trace": float(np.trace(k_tt)),
      "output_norm": "RMS over examples of the per-example L2 norm over logits",
      **records.provenance(config),
      "per_lambda": results, "table": rows,
      "total_violations": int(sum(r["violations"] for r in rows)),
      "wall_seconds": time.time() - t0}
  records.write_json(workdir / "results.json", summary)
  plot_distances(results, workdir / "distances.png")
  plot_gaps(rows, workdir / "gaps_vs_lambda.png")
  print(f"{task.name}, {config.model.name}, {peft.count(trainable)} trainable params, "
        f"n={n}, η={lr:.4g}, λmax(K)/n={gn:.4g}, {config.steps} steps "
        f"({'full batch' if not config.batch_size else f'batch {config.batch_size}'}, "
        f"selective={config.selective})")
  print(format_table(rows))
  return summary


if __name__ == "__main__":
  cli.run_main(run)
