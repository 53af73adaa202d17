"""Empirical NTK of a pretrained model at θ0 on a real task: kernel, spectrum, plot.

  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py --workdir=runs/ntk_sst2
  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py:runlocal --workdir=/tmp/ntk

The kernels (``config.kind``: "plain", the NTK per block, or "sign", the whole sign kernel)
come from :func:`ntkft.theta0.kernels.kernels_of_config`; this command prints
and writes them into the workdir:
  kernel.npz      ``kernel`` (n, n), ``labels`` (n,), ``fx0`` (n, C) outputs at θ0
                  (float64), ``index`` (positions of the examples in the split) and,
                  for the NTK, one ``block/<name>`` kernel per parameter block (they
                  sum to ``kernel``)
  spectrum.json   n, num_params, condition_number, lambda_min, lambda_max,
                  effective_rank, trace, decay fit, ... and per-block statistics
  spectrum.png    the eigenvalues (full kernel and blocks), log scale

``implementation="operator"``: the kernel is never formed; spectrum.json holds
lambda_max, lambda_min and their ratio from Lanczos on the NTK-vector product
(:func:`ntkft.ntk.ntk_vp_fn`, ``lanczos_iters`` steps, default n: exact up to
rounding; fewer steps bound lambda_max from below and lambda_min from above),
and no kernel.npz / spectrum.png are written.
"""
import json
import pathlib
import time

import numpy as np

from ntkft import cli, data, ntk, peft, spectral, theta0
from ntkft.theta0 import kernels as theta0_kernels
from ntkft.typing import PLAIN, SIGN, check_kernel_kind


def operator_spectrum(config, apply, trainable, frozen, x) -> dict:
  """Extreme eigenvalues of the traced NTK by Lanczos on ntk_vp_fn (K never formed)."""
  matvec, n = ntk.ntk_vp_fn(apply, batch_size=config.chunk_size or 64)(x, trainable, frozen)
  iters = min(n, int(config.get("lanczos_iters", 0)) or n)
  top, bottom = spectral.lanczos_eigs(matvec, n, k=1, num_iters=iters)
  kappa = spectral.condition_number([bottom[0], top[0]])   # inf (λmin <= 0) -> null
  return {"lambda_max": float(top[0]), "lambda_min": float(bottom[0]),
          "condition_number": kappa if np.isfinite(kappa) else None,
          "lanczos_iters": iters}


def run(config, workdir: str) -> dict:
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  check_kernel_kind(config.kind, "config.kind")
  task = data.get_task(config.task)
  start = theta0.build_theta0(config)
  spec, trainable = start.spec, start.trainable
  print(peft.describe(trainable, start.frozen))
  if config.implementation == "operator":
    if config.kind != PLAIN:
      raise ValueError("implementation='operator' computes the NTK only (kind='plain')")
    sample = theta0_kernels.kernel_sample(config, start)
    summary = {"task": task.name, "split": config.data.split, "kind": PLAIN,
               "n": int(config.n), "num_params": peft.count(trainable),
               "implementation": "operator",
               **operator_spectrum(config, start.apply, trainable, start.frozen,
                                   sample.inputs()),
               "wall_seconds": time.time() - t0}
    (workdir / "spectrum.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary
  bk = theta0_kernels.kernels_of_config(config, config.kind, start=start)
  kernel, blocks, fx0, labels, index = bk.kernel, bk.kernels, bk.fx0, bk.labels, bk.index

  symmetrize = config.kind == SIGN
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
