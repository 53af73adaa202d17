"""Shared machinery of the layer-set studies (spectrum_correlation, selection_validation).

A *layer set* S is a tuple of encoder layer indices; fine-tuning S means LoRA
(query/value, the ``finetune.peft`` settings) on exactly the layers of S plus
the classification head when ``finetune.peft.head``. Its kernel at θ0 is the
empirical NTK of exactly that parameter set (trace over the logits, mean
normalization, ``ntkft.ntk.per_block_ntk_fn`` with ``block_by="layer"``)::

  K_S = sum_{i in S} K_{layer_i} + K_head        (K_head only if the head trains)

The per-block kernels ``K_b`` (n, n) are computed once per task on the model
of the run config with LoRA on every layer (:func:`task_kernels`), on a fixed
sample of n examples of the fine-tuning training set, and cached in
``<workdir>/kernels.npz``. This is the kernel of S at the θ0 the run of S with
the same seed starts from: every fresh leaf (head, LoRA A) is drawn from a key
of its own name (``ntkft.theta0``), so it is the same with LoRA on S or on all
layers, and with ``init="zero_b"`` (required) the other layers' adapters leave
f, and hence the Jacobian of S's leaves, unchanged. Kernels of runs with other
seeds (``selection_validation``'s ``seeds``) are those of ``config.seed``.

Also here: spectral statistics of K_S (:func:`kernel_stats`), one fine-tuning
run per (task, layer set, seed) in its own sub-workdir that a rerun skips once
``summary.json`` exists (:func:`finetune`). Plumbing every experiment shares
(Spearman's ρ, results.json, task lists) is in ``experiments.common``.
"""
import json
import pathlib
import shutil
from typing import Mapping, Sequence

import numpy as np

from configs import glue_common
from experiments import common
from ntkft import config_lib, data, records, spectral, theta0
from ntkft import targets as targets_lib
from ntkft.models import read_config, resolve_model_dir
from ntkft.theta0 import kernels as theta0_kernels
from ntkft.train import loop

HEAD = "head"
PREDICTORS = ("kappa", "lambda_min", "lambda_max", "effective_rank", "alignment",
              "kappa_layers_only")
OUTCOMES = ("train_loss", "dev_metric")


# ----------------------------------------------------------------- helpers


def num_layers_of(model_name: str) -> int:
  return read_config(resolve_model_dir(model_name)).num_layers


def singles_and_adjacent_pairs(num_layers: int) -> list[tuple[int, ...]]:
  """(0,), ..., (L-1,), (0, 1), ..., (L-2, L-1)."""
  return ([(i,) for i in range(num_layers)]
          + [(i, i + 1) for i in range(num_layers - 1)])


def check_layer_sets(layer_sets, num_layers: int) -> list[tuple[int, ...]]:
  """Validated, sorted tuples of distinct layer indices in [0, num_layers)."""
  out = []
  for s in layer_sets:
    s = tuple(int(i) for i in s)
    if not s or len(set(s)) != len(s) or not all(0 <= i < num_layers for i in s):
      raise ValueError(f"layer set {s} must be non-empty distinct layer indices in "
                       f"[0, {num_layers})")
    out.append(tuple(sorted(s)))
  if len(set(out)) != len(out):
    raise ValueError(f"duplicate layer sets in {out}")
  return out


# ------------------------------------------------------- fine-tuning runs


def finetune_config(finetune, task: str, layers: Sequence[int], seed: int):
  """The ``configs/glue_common.py`` config of one run.

  Args:
    finetune: nested overrides of glue_common fields (e.g. ``{"data":
      {"kshot": "512-13"}, "train": {"steps": 32}}``); ``mode`` included.
    task: task name.
    layers: the layer set S (LoRA on these layers only).
    seed: ``config.seed`` (head and LoRA init, data order, train subsample).

  Raises:
    ValueError: an override names a field glue_common does not declare.
  """
  finetune = finetune.to_dict() if hasattr(finetune, "to_dict") else dict(finetune)
  config = config_lib.with_overrides(
      glue_common.get_config(f"task={task}", mode=finetune.get("mode", "nonlinear")),
      finetune, "finetune")
  config.seed = int(seed)
  config.peft.layers = "(" + ",".join(str(i) for i in layers) + ",)"
  return config


def finetune(finetune_cfg, task: str, layers: Sequence[int], seed: int, workdir,
             keep_checkpoints: bool = False) -> dict:
  """One fine-tuning run of layer set ``layers``; its summary (``ntkft.train.loop``).

  Skips the run and returns the stored summary when ``workdir/summary.json``
  exists (a rerun resumes a study). Without ``keep_checkpoints`` the run's
  ``ckpt/`` folder (the whole TrainState, ~90 MB for MiniLM) is deleted once
  the summary is written.
  """
  workdir = pathlib.Path(workdir)
  summary = records.finished_summary(workdir)
  if summary is not None:
    summary["skipped"] = True
    return summary
  config = finetune_config(finetune_cfg, task, layers, seed)
  summary = loop.run(config, str(workdir))
  if not keep_checkpoints:
    shutil.rmtree(workdir / "ckpt", ignore_errors=True)
  summary["skipped"] = False
  return summary


# ------------------------------------------------------------ kernels


def _train_examples(finetune_cfg, task, seed: int):
  """The training examples a run with this ``seed`` sees (as ntkft.train.loop)."""
  d = finetune_cfg.data
  examples = data.load_examples(task, d.train_split, loop.data_dir_for(task, d.root, d.kshot))
  if d.n_train and d.n_train < len(examples):
    examples = data.subsample(examples, d.n_train, seed=seed, stratified=d.stratified)
  return examples


def task_kernels(finetune_cfg, task: str, n: int, seed: int, workdir,
                 chunk_size: int = 32) -> dict:
  """Per-block NTKs at θ0 on n training examples; cached in ``workdir/kernels.npz``.

  The examples are a seeded random sample of the training set of the run with
  ``seed`` (so they are fine-tuned on). The model has LoRA (``finetune.peft``)
  on every layer and the head when ``finetune.peft.head``.

  Returns:
    dict with ``kernels`` {``layer_<i>``/``head``: (n, n) float64}, ``fx0``
    (n, C) outputs at θ0, ``targets`` (n, C) one-hot labels (or (n, 1)
    scores), ``labels`` (n,), ``index`` (n,) positions in the training set,
    ``param_counts`` {block: parameters}, ``seconds`` (0 if loaded).
  """
  workdir = pathlib.Path(workdir)
  cache = workdir / "kernels.npz"
  if cache.exists():
    z = np.load(cache)
    kernels = {k.removeprefix("block/"): z[k] for k in z.files if k.startswith("block/")}
    counts = json.loads(str(z["param_counts"]))
    return {"kernels": kernels, "fx0": z["fx0"], "targets": z["targets"],
            "labels": z["labels"], "index": z["index"], "param_counts": counts,
            "seconds": 0.0}
  config = finetune_config(finetune_cfg, task, (0,), seed)
  config.peft.layers = "all"  # one model, every layer's block
  if config.peft.init != "zero_b":
    raise ValueError(
        f"finetune.peft.init={config.peft.init!r}: the layer studies compute every layer's "
        "block on one model with LoRA on all layers, which is the kernel of a run on S at "
        "its θ0 only when the other adapters leave f unchanged (B = 0: init='zero_b')")
  spec = data.get_task(task)
  start = theta0.build_theta0(config)
  sample = data.fixed_sample(_train_examples(config, task, seed), n, [seed, 1],
                             data.load_tokenizer(start.model.source), config.data.max_len)
  bk = theta0_kernels.per_block_kernels(start, sample, "layer", chunk_size=chunk_size)
  kernels, fx0, counts, index = bk.kernels, bk.fx0, bk.num_params, bk.index
  targets = np.asarray(targets_lib.targets(bk.labels, spec.num_labels, spec.is_regression),
                       np.float64).reshape(n, -1)
  workdir.mkdir(parents=True, exist_ok=True)
  np.savez(cache, fx0=fx0, targets=targets, labels=bk.labels, index=index,
           param_counts=json.dumps(counts), **{f"block/{k}": v for k, v in kernels.items()})
  return {"kernels": kernels, "fx0": fx0, "targets": targets, "labels": bk.labels,
          "index": index, "param_counts": counts, "seconds": bk.seconds}


def kernels_per_task(config, workdir):
  """Yields ``(task, task_kernels(...))`` for each of ``config.tasks``.

  The loop that heads both layer studies: kernels (and everything the caller
  does before asking for the next task) run inside the persistent compilation
  cache ``workdir/xla_cache`` when ``config.xla_cache``; each task's kernels
  are cached in ``workdir/<task>/kernels.npz``.
  """
  workdir = pathlib.Path(workdir)
  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for task in common.parse_tasks(config.tasks):
      yield task, task_kernels(config.finetune, task, config.n_kernel, config.seed,
                               workdir / task, config.kernel_chunk)


def set_blocks(layers: Sequence[int], head: bool) -> list[str]:
  """Block names of layer set S: ``layer_<i>`` for i in S, plus ``head``."""
  return [f"layer_{i}" for i in layers] + ([HEAD] if head else [])


def set_kernel(kernels: Mapping[str, np.ndarray], layers: Sequence[int],
               head: bool) -> np.ndarray:
  """K_S = sum_{i in S} K_{layer_i} (+ K_head): (n, n) float64.

  Raises:
    ValueError: a block the kernels lack.
  """
  names = set_blocks(layers, head)
  missing = [b for b in names if b not in kernels]
  if missing:
    raise ValueError(f"no kernel for block(s) {missing}; have {sorted(kernels)}")
  return sum(np.asarray(kernels[b], np.float64) for b in names)


def kernel_stats(kernel, targets=None, fx0=None) -> dict:
  """Spectral statistics of one symmetric PSD kernel (float64 ``eigh``).

  Args:
    kernel: (n, n).
    targets: (n, C) or (n,) for the alignment (None: no alignment).
    fx0: outputs at θ0, same shape: the alignment is with ``targets - fx0``.

  Returns:
    ``lambda_min``, ``lambda_max``, ``kappa`` = λmax/λmin (inf when λmin <= 0,
    no clamping, as the selector), ``effective_rank`` exp(H(λ/Σλ)) over the
    positive eigenvalues, ``trace``, and ``alignment``
    tr(Rᵀ K R) / (‖K‖_F ‖R‖_F²) (``ntkft.select.selection``) when targets.
  """
  eigs = np.linalg.eigvalsh(spectral.symmetric_kernel(kernel, "kernel", symmetrize=True))
  lam_min, lam_max = float(eigs[0]), float(eigs[-1])
  pos = eigs[eigs > 0]
  p = pos / pos.sum() if pos.size else pos
  out = {"lambda_min": lam_min, "lambda_max": lam_max,
         "kappa": spectral.condition_number(eigs),
         "effective_rank": float(np.exp(-np.sum(p * np.log(p)))) if pos.size else 0.0,
         "trace": float(eigs.sum())}
  if targets is not None:
    resid = np.asarray(targets, np.float64)
    if fx0 is not None:
      resid = resid - np.asarray(fx0, np.float64)
    out["alignment"] = spectral.kernel_target_alignment(kernel, resid)
  return out


def set_stats(task_kernel: dict, layers: Sequence[int], head: bool) -> dict:
  """:func:`kernel_stats` of K_S, plus ``kappa_layers_only`` (κ of K_S without
  the head) and ``num_params`` of the blocks."""
  k = set_kernel(task_kernel["kernels"], layers, head)
  row = kernel_stats(k, task_kernel["targets"], task_kernel["fx0"])
  row["kappa_layers_only"] = kernel_stats(
      set_kernel(task_kernel["kernels"], layers, False))["kappa"]
  row["num_params"] = int(sum(task_kernel["param_counts"][b] for b in set_blocks(layers, head)))
  return row


def kernel_record(n: int, task_kernel: dict) -> dict:
  """What results.json keeps of a task's kernels: n, seconds, example index, blocks."""
  return {"n": int(n), "seconds": task_kernel["seconds"],
          "index": np.asarray(task_kernel["index"]).tolist(),
          "blocks": sorted(task_kernel["kernels"])}


def check_num_params(row_params: int, summary: dict, where: str):
  """The kernel's blocks and the run must cover the same parameters."""
  if int(summary["num_trainable"]) != int(row_params):
    raise RuntimeError(
        f"{where}: the fine-tuning run trains {summary['num_trainable']} parameters but "
        f"the kernel blocks hold {row_params}: the kernel is not the NTK of the "
        "fine-tuned set (check finetune.peft)")
