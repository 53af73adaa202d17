"""Empirical NTK of a pretrained model at θ0 on a real task: kernel, spectrum, plot.

  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py --workdir=runs/ntk_sst2
  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py:runlocal --workdir=/tmp/ntk

Writes into the workdir:
  kernel.npz      ``kernel`` (n, n), ``labels`` (n,), ``fx0`` (n, C) outputs at θ0,
                  ``index`` (positions of the examples in the split) and one
                  ``block/<name>`` kernel per parameter block (they sum to ``kernel``)
  spectrum.json   n, num_params, condition_number, lambda_min, lambda_max,
                  effective_rank, trace, decay fit, ... and per-block statistics
  spectrum.png    the eigenvalues (full kernel and blocks), log scale

``implementation="operator"``: the kernel is never formed; spectrum.json holds
lambda_max, lambda_min and their ratio from Lanczos on the NTK-vector product
(:func:`ntkft.ntk.ntk_vp_fn`, ``lanczos_iters`` steps, default n: exact up to
rounding; fewer steps bound lambda_max from below and lambda_min from above),
and no kernel.npz / spectrum.png are written.
"""
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
import tqdm
from ntkft import cli, data, ntk, peft, spectral
from ntkft.models import HeadConfig, load_pretrained, read_config, resolve_model_dir

KINDS = ("ntk", "adam")


def kernel_inputs(config, model):
  """(batch dict with n examples padded to one length, labels, example indices)."""
  d = config.data
  task = data.get_task(config.task)
  examples = data.load_examples(task, d.split, data.task_data_dir(task, d.root))
  if config.n > len(examples):
    raise ValueError(f"n={config.n} exceeds the {len(examples)} examples of "
                     f"{task.name}/{d.split}")
  index = np.sort(np.random.default_rng(config.seed).choice(len(examples), config.n,
                                                            replace=False))
  encoded = data.encode(data.load_tokenizer(model.source), examples.select(index), d.max_len)
  batch = data.make_batch(encoded, np.arange(config.n), config.n, None, int(encoded.lengths.max()))
  x = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  return x, encoded.labels, index


def model_and_subset(config):
  """(model, trainable, frozen, apply) for config.task / model / peft at θ0.

  ``apply(trainable, x, frozen)`` is the model on the recombined params; the
  frozen weights travel as an argument (not a closure), as the NTK engine needs.
  """
  task = data.get_task(config.task)
  spec = peft.PeftSpec.from_config(config.peft)
  num_layers = read_config(resolve_model_dir(config.model.name)).num_layers
  model = load_pretrained(config.model.name, HeadConfig(task.num_labels, config.model.pooling),
                          adapters=peft.adapters_for(spec, num_layers), seed=config.seed)
  subset = peft.kernel_subset(model, spec)
  return model, subset.trainable, subset.frozen, subset.apply_fn


@dataclasses.dataclass(frozen=True)
class BlockKernels:
  """Per-block NTKs at θ0 on n examples of a task (:func:`block_kernels`).

  Attributes:
    kernels: {block name: (n, n) float64 K_b}, blocks in order of first
      appearance in the parameters (model order); sum_b K_b = K.
    num_params: {block name: parameters in the block}.
    fx0: (n, C) float64 outputs at θ0.
    labels: (n,) labels of the examples.
    index: (n,) positions of the examples in the split.
    task: task name.
    seconds: wall time of the kernel computation.
  """
  kernels: dict
  num_params: dict
  fx0: np.ndarray
  labels: np.ndarray
  index: np.ndarray
  task: str
  seconds: float


def block_kernels(config) -> BlockKernels:
  """Per-block NTKs (trace over logits, mean normalization) of ``config.peft`` at θ0.

  Reads config.task, model, peft, seed, n, data (:func:`kernel_inputs`),
  block_by, implementation, chunk_size, and if present memory_budget_mb,
  length_buckets and progress (a tqdm bar over kernel chunks).
  """
  t0 = time.time()
  task = data.get_task(config.task)
  model, trainable, frozen, apply = model_and_subset(config)
  x, labels, index = kernel_inputs(config, model)
  bar = tqdm.tqdm(desc="per-block kernel chunks", disable=not config.get("progress", False))
  block_fn = ntk.per_block_ntk_fn(apply, config.block_by, implementation=config.implementation,
                                  **kernel_options(config, bar))
  kernels = {k: np.asarray(v, np.float64) for k, v in block_fn(x, None, trainable, frozen).items()}
  bar.close()
  fx0 = np.asarray(jax.jit(apply)(trainable, x, frozen), np.float64)
  counts = ntk.block_param_counts(trainable, config.block_by)
  return BlockKernels(kernels, counts, fx0, np.asarray(labels), np.asarray(index), task.name,
                      time.time() - t0)


def kernel_options(config, bar) -> dict:
  """Keyword arguments of the kernel functions from the config: the trace over
  logits, chunk_size, memory_budget_mb and length_buckets (both optional; 0 and
  () mean off), and a progress update of ``bar`` per chunk."""
  return dict(trace_axes=(-1,), batch_size=config.chunk_size or None,
              memory_budget_bytes=int(config.get("memory_budget_mb", 0.0) * 2**20) or None,
              on_chunk=lambda info: bar.update(1),
              length_buckets=tuple(config.get("length_buckets", ())) or None)


def operator_spectrum(config, apply, trainable, frozen, x) -> dict:
  """Extreme eigenvalues of the traced NTK by Lanczos on ntk_vp_fn (K never formed)."""
  matvec, n = ntk.ntk_vp_fn(apply, chunk=config.chunk_size or 64)(x, trainable, frozen)
  iters = min(n, int(config.get("lanczos_iters", 0)) or n)
  top, bottom = spectral.lanczos_eigs(matvec, n, k=1, num_iters=iters)
  return {"lambda_max": float(top[0]), "lambda_min": float(bottom[0]),
          "condition_number": float(top[0] / bottom[0]) if bottom[0] > 0 else None,
          "lanczos_iters": iters}


def run(config, workdir: str) -> dict:
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.kind not in KINDS:
    raise ValueError(f"unknown kernel kind {config.kind!r}; choose from {KINDS}")
  task = data.get_task(config.task)
  spec = peft.PeftSpec.from_config(config.peft)
  model, trainable, frozen, apply = model_and_subset(config)
  print(peft.describe(trainable, frozen))
  x, labels, index = kernel_inputs(config, model)
  if config.implementation == "operator":
    if config.kind != "ntk":
      raise ValueError("implementation='operator' computes the NTK only (kind='ntk')")
    summary = {"task": task.name, "split": config.data.split, "kind": "ntk",
               "n": int(config.n), "num_params": peft.count(trainable),
               "implementation": "operator",
               **operator_spectrum(config, apply, trainable, frozen, x),
               "wall_seconds": time.time() - t0}
    (workdir / "spectrum.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary

  bar = tqdm.tqdm(desc=f"{config.kind} kernel chunks", disable=not config.progress)
  kwargs = kernel_options(config, bar)
  if config.kind == "ntk":
    blocks = ntk.per_block_ntk_fn(apply, config.block_by, implementation=config.implementation,
                                  **kwargs)(x, None, trainable, frozen)
    blocks = {k: np.asarray(v) for k, v in blocks.items()}
    kernel = sum(blocks.values())
  else:
    kernel = np.asarray(ntk.adam_ntk_fn(apply, eps=config.adam_eps or None, **kwargs)(
        x, None, trainable, frozen))
    blocks = {}
  bar.close()
  fx0 = np.asarray(jax.jit(apply)(trainable, x, frozen))

  symmetrize = config.kind == "adam"
  stats = spectral.spectrum_stats(kernel, symmetrize=symmetrize)
  block_stats = {}
  for name, k_b in blocks.items():
    block_stats[name] = {key: stats_b for key, stats_b in spectral.spectrum_stats(k_b).items()
                         if key in ("lambda_min", "lambda_max", "condition_number", "trace",
                                    "effective_rank")}
  summary = {"task": task.name, "split": config.data.split, "kind": config.kind,
             "n": int(config.n), "num_params": peft.count(trainable),
             "layers": "all" if spec.layers is None else list(spec.layers),
             "targets": list(spec.targets), "implementation": config.implementation,
             "trace_normalization": "mean over outputs (neural-tangents convention)",
             **stats, "blocks": block_stats, "wall_seconds": time.time() - t0}
  if symmetrize:
    summary["note"] = "Adam (sign) kernel is asymmetric: spectrum of its symmetric part"
  np.savez(workdir / "kernel.npz", kernel=kernel, labels=labels, fx0=fx0, index=index,
           **{f"block/{k}": v for k, v in blocks.items()})
  (workdir / "spectrum.json").write_text(json.dumps(summary, indent=2))
  eigs = {"full": spectral.eigvalsh(kernel, symmetrize=symmetrize)}
  eigs.update({k: spectral.eigvalsh(v) for k, v in blocks.items()})
  spectral.plot_spectrum(eigs, workdir / "spectrum.png",
                         f"{config.kind.upper()} spectrum at θ0: {task.name}, n={config.n}")
  print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))},
                   indent=2))
  return summary


if __name__ == "__main__":
  cli.run_main(run)
