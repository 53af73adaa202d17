"""Kernel classifiers on a task: each solver on the plain and the sign kernel at θ0.

  python -m ntkft.kernel_fit --config=configs/kernel_fit.py --workdir=runs/kfit_sst2_16
  python -m ntkft.kernel_fit --config=configs/kernel_fit.py:runlocal --workdir=/tmp/kfit

Computes, over the parameters ``config.peft`` selects at θ0
(:func:`ntkft.theta0.kernels.kernel_fn` of ``ntkft.theta0.build_theta0``), the
train×train and eval×train kernels (and train×eval for the asymmetric sign
kernel), divides them by the mean diagonal of the train×train kernel (so the
solvers' ``reg`` values are scale-free), and fits every solver of
``ntkft.kernel.classifiers`` on every kernel. The examples come from the task's
LM-BFF k-shot split (``data.kshot="<k>-<seed>"``; its "test" split is the GLUE
dev set) or from the GLUE folders (``data.kshot=""``), optionally subsampled to
``data.n_train`` / ``data.n_eval``.

Writes ``<workdir>/kernel_fit.json``::

  task, kshot, train_split, eval_split, n_train, n_eval, num_params,
  dev_metric_name, f0_dev_metric (the model at θ0),
  results: {kernel: {solver: {dev_metric, dev_metrics, reg}}}, kernel in config.kernels
    ("plain": the NTK J Jᵀ, "sign": J sign(J)ᵀ, Malladi et al. 2023's Adam kernel),
  kernel_scale: {kernel: mean diagonal of its train×train matrix},
  kernel_seconds: {kernel: seconds}, wall_seconds
"""
import pathlib
import time

import numpy as np
import tqdm

from ntkft import cli, data, records, theta0
from ntkft.evals import metrics as metrics_lib
from ntkft.kernel import classifiers
from ntkft.theta0 import kernels as theta0_kernels
from ntkft.train.loop import data_dir_for, parse_kshot
from ntkft.typing import SIGN, check_kernel_kind


def load_split_pair(config, task, tokenizer):
  """(train, eval) ``Encoded`` examples as configured (k-shot folder or GLUE, subsampled)."""
  d = config.data
  parse_kshot(d.kshot)
  data_dir = data_dir_for(task, d.root, d.kshot)
  sets = []
  for split, n in ((d.train_split, d.n_train), (d.eval_split, d.n_eval)):
    examples = data.load_examples(task, split, data_dir)
    if n and n < len(examples):
      examples = data.subsample(examples, n, seed=config.seed)
    sets.append(data.encode(tokenizer, examples, d.max_len))
  return sets


def kernels(fn, kind, x_train, x_eval):
  """{"train_train", "eval_train"[, "train_eval"]} float64 kernels of one kind, from
  ``fn(x1, x2=None)`` of :func:`ntkft.theta0.kernels.kernel_fn`."""
  out = {"train_train": fn(x_train), "eval_train": fn(x_eval, x_train)}
  if kind == SIGN:  # the asymmetric solver needs K(x_train, x_eval) too
    out["train_eval"] = fn(x_train, x_eval)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def fit_all(k, labels, f0_train, f0_eval, num_classes, solvers, reg):
  """{solver: (m, C) scores} on the kernels ``k`` of :func:`kernels`."""
  k_ts = k.get("train_eval", k["eval_train"].T)
  out = {}
  for solver in solvers:
    lam = float(reg[solver])
    if solver == "ridge":
      out[solver] = classifiers.ridge_scores(k["train_train"], labels, k["eval_train"],
                                             num_classes, lam, f0_train, f0_eval)
    elif solver == "logistic":
      out[solver] = classifiers.logistic_scores(k["train_train"], labels, k["eval_train"],
                                                num_classes, lam)
    elif solver == "svm":
      out[solver] = classifiers.svm_scores(k["train_train"], labels, k["eval_train"],
                                           num_classes, lam)
    else:
      out[solver] = classifiers.asym_ls_svm_scores(k["train_train"], labels, k["eval_train"],
                                                   k_ts, num_classes, lam)
  return out


def _check_config(config, task):
  bad = [s for s in config.solvers if s not in classifiers.SOLVERS]
  if bad:
    raise ValueError(f"config.solvers: unknown {bad}; choose from {classifiers.SOLVERS}")
  missing = [s for s in config.solvers if s not in config.reg]
  if missing:
    raise ValueError(f"config.reg has no value for solver(s) {missing}")
  for kind in config.kernels:
    check_kernel_kind(kind, "config.kernels")
  if task.is_regression:
    raise ValueError(f"kernel_fit: task {task.name} is a regression task; the kernel "
                     "classifiers need class labels")


def run(config, workdir: str) -> dict:
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  task = data.get_task(config.task)
  _check_config(config, task)
  start = theta0.build_theta0(config)
  model, subset = start.model, start.subset
  train, evals = load_split_pair(config, task, data.load_tokenizer(model.source))
  x_train, x_eval = (data.one_padded_batch(e, config.data.max_len) for e in (train, evals))
  print(f"task {task.name}: {len(train.labels)} {config.data.train_split} / "
        f"{len(evals.labels)} {config.data.eval_split} examples"
        + (f" (k-shot split {config.data.kshot})" if config.data.kshot else "")
        + f"; kernel over {subset.num_params:,} parameters")
  f0_train = np.asarray(subset.outputs(x_train), np.float64)
  f0_eval = np.asarray(subset.outputs(x_eval), np.float64)
  name = task.primary_metric

  def score(scores):
    m = metrics_lib.compute_metrics(task, np.argmax(scores, axis=1), evals.labels)
    return {"dev_metric": m[name], "dev_metrics": m}

  results, scale, seconds = {}, {}, {}
  for kind in config.kernels:
    t = time.time()
    bar = tqdm.tqdm(desc=f"{kind} kernel chunks", disable=not config.progress)
    fn = theta0_kernels.kernel_fn(start, kind, chunk_size=config.chunk_size,
                                  length_buckets=config.length_buckets, bar=bar,
                                  sign_eps=config.sign_eps)
    k = kernels(fn, kind, x_train, x_eval)
    bar.close()
    seconds[kind] = time.time() - t
    scale[kind] = float(np.mean(np.diagonal(k["train_train"])))
    k = {key: v / scale[kind] for key, v in k.items()}
    fits = fit_all(k, train.labels, f0_train, f0_eval, task.num_labels, config.solvers,
                   config.reg)
    results[kind] = {s: {**score(v), "reg": float(config.reg[s])} for s, v in fits.items()}
    print(f"{kind}: " + ", ".join(f"{s} {r['dev_metric']:.4f}" for s, r in results[kind].items()))

  summary = {"task": task.name, "kshot": config.data.kshot,
             "train_split": config.data.train_split, "eval_split": config.data.eval_split,
             "n_train": len(train.labels), "n_eval": len(evals.labels),
             "num_params": subset.num_params, "dev_metric_name": name,
             "f0_dev_metric": score(f0_eval)["dev_metric"], "results": results,
             "kernel_scale": scale, "kernel_seconds": seconds,
             "kernel_normalization": "divided by the mean diagonal of train x train",
             "wall_seconds": time.time() - t0}
  # One JSON policy (inf/nan -> null) and the provenance every results file records.
  records.write_json(workdir / "kernel_fit.json", {**summary, **records.provenance(config)})
  return summary


if __name__ == "__main__":
  cli.run_main(run)
