"""Merge runs' task vectors and evaluate every task with its own head: ``python -m ntkft.merge``.

  python -m ntkft.merge --runs=runs/sst2,runs/rte --alpha=0.4 --method=sum --out=runs/merge
  python -m ntkft.merge --runs=runs/sst2,runs/rte --alpha=1,-1 --out=...      # rte negated
  python -m ntkft.merge --runs=... --method=ties --ties_k=0.2 --alpha=1 --out=...
  python -m ntkft.merge --runs=... --alpha=0.4 --n_eval=512 --out=...        # 512 dev examples
  python -m ntkft.merge --runs=... --alpha=0.4 --out=DIR --export           # + PEFT folders
  python -m ntkft.merge --runs=points/a.npz,points/b.npz --alpha=0.4 ...    # run files

``--runs`` takes ``ntkft.run`` workdirs or run files ``*.npz`` (``ntkft.merge.save_run``:
the trained and θ0 LoRA and head leaves of a finished run, no checkpoint needed; the
same merge, bit for bit), mixed as you like.

``--method=sum``: δ = Σ_t α_t τ_t, one ``--alpha`` for every run or one per run
(a negative α negates that task); ``--method=ties``: δ = α · TIES(τ_1..τ_T; k)
with one α (:mod:`ntkft.merge.vectors`). Each run's task is then evaluated with
its own trained head, in the runs' common mode (:mod:`ntkft.merge.runs`), on the
dev examples the run used (``--n_eval=N``: N examples drawn with the run's seed),
and ``<out>/merge.json`` holds

  method, alpha (one per run), ties_k (ties only), mode, n_eval, runs (workdirs),
  tasks: [{run, task, step, dev_metric, dev_metric_name, dev_metrics, n_eval,
           single_task_dev_metric (the run's summary.json dev_metric, or null)}],
  wall_seconds, machine

With ``--export`` each task's merged model (φ0 + δ, its head) is also written as a
Hugging Face PEFT LoRA folder ``<out>/peft/<i>_<task>`` (``ntkft.models.peft_format``,
as ``ntkft.export_peft`` writes a run: with mean pooling the LoRA weights only, with
"cls" the head too), and its task entry gets ``peft`` (the folder) and ``peft_note``.
``load_pretrained(<model>, HeadConfig(C, pooling), adapters_from=<folder>)`` then gives
the merged LoRA weights (tested: the same merged logits).

One run merged at α = 1 is that run (bit for bit), so with ``--n_eval=0`` its
``dev_metric`` is its ``summary.json`` dev_metric (tested).
"""
import pathlib
import time
from typing import Sequence

from absl import flags

from ntkft import records
from ntkft.merge import runs as runs_lib
from ntkft.merge import vectors

METHODS = ("sum", "ties")


def parse_alpha(text: str | float | Sequence[float], num_runs: int) -> list[float]:
  """``--alpha``: one number for every run, or comma-separated, one per run -> T floats.

  Raises:
    ValueError: not numbers, or a count that is neither 1 nor ``num_runs``.
  """
  items = ([t for t in str(text).split(",") if t.strip()] if isinstance(text, (str, float, int))
           else list(text))
  try:
    alphas = [float(a) for a in items]
  except ValueError:
    raise ValueError(f"--alpha={text!r}: expected a number or comma-separated numbers, "
                     f"one per run") from None
  if len(alphas) == 1:
    return alphas * num_runs
  if len(alphas) != num_runs:
    raise ValueError(f"--alpha={text!r}: {len(alphas)} values for {num_runs} runs "
                     "(give one for all or one per run)")
  return alphas


def merged_vector(taus: Sequence[dict], alphas: Sequence[float], method: str,
                  ties_k: float) -> dict:
  """δ of ``method``: Σ α_t τ_t ("sum") or α · TIES(τs; k) ("ties", one α for all)."""
  if method == "sum":
    return vectors.weighted_sum(taus, alphas)
  if method == "ties":
    if len(set(alphas)) > 1:
      raise ValueError(f"--method=ties scales the merged vector by one α, got {list(alphas)}")
    return vectors.scale(vectors.ties_merge(taus, ties_k), alphas[0])
  raise ValueError(f"--method={method!r}: choose from {METHODS}")


def merge(workdirs: Sequence[str], alpha, method: str = "sum", out: str | None = None,
          n_eval: int = 0, ties_k: float = 0.2, export: bool = False) -> dict:
  """Merges the runs in ``workdirs``, evaluates each task, writes ``<out>/merge.json``.

  Args:
    workdirs: finished ``ntkft.run`` workdirs or run files (``*.npz``) sharing θ0 and mode.
    alpha: one α, or one per run (``parse_alpha``).
    method: "sum" or "ties".
    out: output folder (None: nothing written).
    n_eval: 0: each run's own dev examples; N > 0: N examples drawn with its seed.
    ties_k: kept fraction of TIES' trim step.
    export: also write each task's merged model as a PEFT folder under ``<out>/peft``.

  Returns:
    The merge.json dict.
  """
  t0 = time.time()
  if method not in METHODS:  # every flag checked before anything loads
    raise ValueError(f"--method={method!r}: choose from {METHODS}")
  if not workdirs:
    raise ValueError("--runs: give at least one run workdir or run file")
  if n_eval < 0:
    raise ValueError(f"--n_eval={n_eval}: must be >= 0 (0: each run's own dev examples)")
  if not 0.0 < ties_k <= 1.0:
    raise ValueError(f"--ties_k={ties_k}: the kept fraction must be in (0, 1]")
  if export and out is None:
    raise ValueError("--export writes PEFT folders under --out: give --out")
  alphas = parse_alpha(alpha, len(workdirs))
  if method == "ties" and len(set(alphas)) > 1:
    raise ValueError(f"--method=ties scales the merged vector by one α, got --alpha={alpha}")

  runs = runs_lib.load_runs(workdirs)
  delta = merged_vector([runs_lib.run_task_vector(r) for r in runs], alphas, method, ties_k)
  tasks = []
  for i, run in enumerate(runs):
    dev = runs_lib.dev_set(run, n_eval)
    metrics = runs_lib.evaluate(run, runs_lib.merged_trainable(run, delta), dev)
    name = run.task.primary_metric
    tasks.append({
        "run": str(run.workdir), "task": run.task.name, "step": run.step,
        "dev_metric": metrics[name], "dev_metric_name": name, "dev_metrics": metrics,
        "n_eval": len(dev.labels),
        "single_task_dev_metric": (run.summary or {}).get("dev_metric")})
    print(f"{run.task.name} ({run.workdir}): {name} {metrics[name]:.4f}"
          f" (single-task {tasks[-1]['single_task_dev_metric']})")
    if export:
      folder = pathlib.Path(out) / "peft" / f"{i}_{run.task.name}"
      note = runs_lib.export_peft(run, delta, folder)
      tasks[-1].update(peft=str(folder), peft_note=note)
      print(f"  wrote PEFT folder {folder}" + (f" (note: {note})" if note else ""))
  result = {"method": method, "alpha": alphas, "ties_k": ties_k if method == "ties" else None,
            "mode": runs[0].mode, "n_eval": n_eval, "runs": [str(r.workdir) for r in runs],
            "tasks": tasks, "wall_seconds": time.time() - t0, "machine": records.machine_info()}
  if out is not None:
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    result = records.write_json(pathlib.Path(out) / "merge.json", result)
    print(f"wrote {pathlib.Path(out) / 'merge.json'}")
  return result


def define_flags() -> None:
  """The command's flags (only when it runs as ``__main__``)."""
  flags.DEFINE_list("runs", None, "Comma-separated ntkft.run workdirs or run files (*.npz) "
                    "to merge (one θ0, one mode).")
  flags.DEFINE_string("alpha", None, "Scale α: one number for all runs, or one per run.")
  flags.DEFINE_string("method", "sum", f"How task vectors combine: one of {METHODS}.")
  flags.DEFINE_string("out", None, "Output folder for merge.json.")
  flags.DEFINE_integer("n_eval", 0, "Dev examples per task (0: each run's own dev set).")
  flags.DEFINE_float("ties_k", 0.2, "TIES: fraction of each task vector's entries kept.")
  flags.DEFINE_bool("export", False, "Also write each task's merged model as a Hugging Face "
                    "PEFT LoRA folder <out>/peft/<i>_<task>.")


def main() -> dict:
  """The program: :func:`merge` with the flags' values."""
  f = flags.FLAGS
  return merge(f.runs, f.alpha, f.method, f.out, f.n_eval, f.ties_k, f.export)
