"""NTK spectra at θ0 for different choices of fine-tuned layers.

  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py --workdir=runs/ntk_spectra
  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py:runlocal --workdir=/tmp/ns

The per-block kernels K_b = J_b J_bᵀ of every block b of ``config.peft`` (LoRA on
query/value of all layers, split by ``config.block_by``) are computed once, on
n examples, with :func:`ntkft.ntk.per_block_ntk_fn` (traced over the logits,
mean normalization). Fine-tuning a set S of blocks has the kernel
K_S = Σ_{b∈S} K_b exactly (the blocks partition the parameters), so the
spectrum of every layer choice S in ``config.choices`` comes from sums of the
stored blocks without recomputing Jacobians. Writes into the workdir:

  results.json       task, n, block_by, per block: num_params, trace; per choice:
                     label, blocks, num_params, eigenvalues (ascending, ridge
                     included), kappa, lambda_min, lambda_max, effective_rank,
                     trace, stats (:func:`ntkft.spectral.spectrum_stats`)
  block_kernels.npz  ``block/<name>`` (n, n) float64 kernels, ``labels``, ``index``
  ntk_spectra.png    sorted eigenvalues (log y) one line per choice, and κ per choice

Choices (``config.choices``, a tuple of entries): ``"singles"`` (each block on
its own), ``"all"`` (every block), or a tuple of layer indices / block names
(``(4, 5)``, ``("layer_4/query",)``).
"""
import dataclasses
import json
import math
import pathlib
import re
import time
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ntkft import cli, ntk_report, records, spectral, theta0_kernels

# Axis label of kernel eigenvalues: the NTK is Σ_p ∂f/∂θ_p ∂f/∂θ_p, averaged
# over the logits, so its unit is logit² per (unit of θ)².
EIG_LABEL = "eigenvalue (logit² / θ-unit²)"
_LAYER_RE = re.compile(r"layer_(\d+)")


def block_order_key(name: str) -> tuple:
  """Sort key: model order (``layer_2`` before ``layer_10``), then the name."""
  match = _LAYER_RE.search(name)
  return (int(match.group(1)) if match else math.inf, name)


def short_name(name: str) -> str:
  """``layer_4`` -> ``L4``, ``layer_4/query`` -> ``L4/query`` (plot labels)."""
  return _LAYER_RE.sub(lambda m: f"L{m.group(1)}", name)


def block_kernels(config) -> theta0_kernels.BlockKernels:
  """:func:`ntkft.ntk_report.block_kernels`, blocks ordered by :func:`block_order_key`
  and symmetrized ((K + Kᵀ)/2, a rounding fix)."""
  bk = ntk_report.block_kernels(config)
  kernels = {name: (bk.kernels[name] + bk.kernels[name].T) / 2
             for name in sorted(bk.kernels, key=block_order_key)}
  return dataclasses.replace(bk, kernels=kernels)


def save_block_kernels(bk: theta0_kernels.BlockKernels, path) -> None:
  np.savez(path, labels=bk.labels, index=bk.index,
           **{f"block/{k}": v for k, v in bk.kernels.items()})


def start(config, workdir) -> tuple[pathlib.Path, theta0_kernels.BlockKernels]:
  """Shared start of the per-block kernel experiments: checks config.ridge, creates
  ``workdir`` and computes :func:`block_kernels`."""
  if config.ridge < 0:
    raise ValueError(f"config.ridge={config.ridge} must be >= 0")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  return workdir, block_kernels(config)


def kernel_fields(experiment: str, config, bk: theta0_kernels.BlockKernels) -> dict:
  """The leading results.json fields of the per-block kernel experiments."""
  return {"experiment": experiment, "task": bk.task, "model": config.model.name,
          "n": int(config.n), "block_by": config.block_by, "ridge": float(config.ridge),
          "peft": config.peft.to_dict(), "index": bk.index.tolist(),
          "kernel": "NTK traced over logits (mean), at θ0",
          "blocks": {b: {"num_params": bk.num_params[b], "trace": float(np.trace(k))}
                     for b, k in bk.kernels.items()}}


def write_results(results: dict, config, bk: theta0_kernels.BlockKernels, workdir, t0: float) -> dict:
  """Adds provenance and timings; writes results.json and block_kernels.npz into
  ``workdir``; returns the JSON-safe results."""
  results = records.jsonable({**results, **records.provenance(config),
                              "kernel_seconds": bk.seconds, "wall_seconds": time.time() - t0})
  (workdir / "results.json").write_text(json.dumps(results, indent=1))
  save_block_kernels(bk, workdir / "block_kernels.npz")
  return results


def resolve_blocks(entry: Any, names: Sequence[str], where: str) -> tuple[str, ...]:
  """Block names of one entry: an int layer index, a block name, or a tuple of them."""
  items = entry if isinstance(entry, (tuple, list)) else (entry,)
  if not items:
    raise ValueError(f"{where}: empty block set")
  out = []
  for item in items:
    name = f"layer_{item}" if isinstance(item, (int, np.integer)) else str(item)
    if name not in names:
      raise ValueError(f"{where}: unknown block {item!r}; blocks are {list(names)}")
    if name in out:
      raise ValueError(f"{where}: block {name!r} given twice")
    out.append(name)
  return tuple(sorted(out, key=block_order_key))


def resolve_choices(choices: Sequence[Any], names: Sequence[str]) -> list[tuple[str, ...]]:
  """Expands ``config.choices`` into distinct block sets, in the given order.

  Args:
    choices: entries ``"singles"``, ``"all"``, or layer indices / block names
      (alone or in a tuple).
    names: the available block names, in model order.

  Raises:
    ValueError: empty choices, unknown blocks or entries.
  """
  if not choices:
    raise ValueError("config.choices is empty")
  out: list[tuple[str, ...]] = []
  for i, entry in enumerate(choices):
    if entry == "singles":
      sets = [(name,) for name in names]
    elif entry == "all":
      sets = [tuple(names)]
    else:
      sets = [resolve_blocks(entry, names, f"config.choices[{i}]")]
    out += [s for s in sets if s not in out]
  return out


def choice_label(blocks: Sequence[str], names: Sequence[str]) -> str:
  if len(blocks) == len(names) and len(names) > 1:
    return f"all ({len(names)})"
  return "+".join(short_name(b) for b in blocks)


def _as_floats(values) -> np.ndarray:
  """A JSON list (None for inf/nan) as a float array (None -> nan)."""
  return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def choice_stats(kernels: dict, blocks: Sequence[str], ridge: float) -> dict:
  """Spectrum of K_S + ridge·I for S = blocks (sums of the block kernels)."""
  k_s = sum(kernels[b] for b in blocks)
  eigs = np.linalg.eigvalsh(k_s)
  stats = spectral.spectrum_stats_from_eigs(eigs, ridge=ridge)
  return {"eigenvalues": (eigs + ridge).tolist(), "kappa": stats["condition_number"],
          "lambda_min": stats["lambda_min"], "lambda_max": stats["lambda_max"],
          "effective_rank": stats["effective_rank"], "trace": stats["trace"],
          "stats": stats}


def plot_spectra(results: dict, path) -> str:
  """Sorted eigenvalues of K_S per choice (left, log y) and κ per choice (right).

  Args:
    results: a loaded results.json of :func:`run`.
    path: PNG to write.
  """
  choices = results["choices"]
  fig = Figure(figsize=(11.0, 4.2), dpi=100)
  FigureCanvasAgg(fig)
  ax, ax_k = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  singles = [c for c in choices if len(c["blocks"]) == 1]
  for i, c in enumerate(choices):
    eigs = _as_floats(c["eigenvalues"])[::-1]
    eigs[~(eigs > 0)] = np.nan   # log axis: drop zero / rounding-negative ones
    index = np.arange(1, eigs.shape[0] + 1)
    if len(c["blocks"]) == 1:
      color = matplotlib_color(singles.index(c), len(singles))
      ax.plot(index, eigs, "-", color=color, linewidth=1.2, label=c["label"])
    elif c["label"].startswith("all"):
      ax.plot(index, eigs, "-", color="k", linewidth=2.2, label=c["label"])
    else:
      ax.plot(index, eigs, "--", linewidth=1.4, label=c["label"])
  ax.set_yscale("log")
  ax.set_xlabel("eigenvalue index i (descending)")
  ax.set_ylabel(f"λ_i(K_S), {EIG_LABEL}")
  ax.set_title(f"NTK spectra at θ0: {results['task']}, n={results['n']}", fontsize=10)
  ax.legend(fontsize=7, ncol=2)
  kappas = _as_floats([c["kappa"] for c in choices])
  pos = np.arange(len(choices))
  ax_k.bar(pos, np.where(np.isfinite(kappas), kappas, np.nan), color="C0")
  ax_k.set_xticks(pos)
  ax_k.set_xticklabels([c["label"] for c in choices], rotation=60, ha="right", fontsize=7)
  ax_k.set_yscale("log")
  ax_k.set_xlabel("fine-tuned blocks S")
  ax_k.set_ylabel("κ(K_S) = λ_max / λ_min (dimensionless)")
  fig.tight_layout()
  fig.savefig(path)
  return str(path)


def matplotlib_color(i: int, count: int):
  """i-th of ``count`` colours along viridis (the single-block curves)."""
  return colormaps["viridis"](0.9 * i / max(count - 1, 1))


def plot_all(results: dict, outdir) -> list[str]:
  """Every figure of this experiment into ``outdir``: [ntk_spectra.png]."""
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  return [plot_spectra(results, outdir / "ntk_spectra.png")]


def run(config, workdir: str) -> dict:
  """Per-block kernels once, then the spectrum of each layer choice; returns results."""
  t0 = time.time()
  workdir, bk = start(config, workdir)
  names = list(bk.kernels)
  sets = resolve_choices(config.choices, names)
  choices = []
  for blocks in sets:
    choice = {"label": choice_label(blocks, names), "blocks": list(blocks),
              "num_params": int(sum(bk.num_params[b] for b in blocks)),
              **choice_stats(bk.kernels, blocks, config.ridge)}
    choices.append(choice)
    print(f"{choice['label']:>12}: κ={choice['kappa']:.4g} λmin={choice['lambda_min']:.4g} "
          f"λmax={choice['lambda_max']:.4g} eff.rank={choice['effective_rank']:.3g} "
          f"({choice['num_params']} params)")
  results = write_results({**kernel_fields("ntk_spectra", config, bk), "choices": choices},
                          config, bk, workdir, t0)
  plot_all(results, workdir)
  return results


if __name__ == "__main__":
  cli.run_main(run)
