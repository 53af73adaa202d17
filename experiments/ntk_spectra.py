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
import time
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps

from experiments import common
from ntkft import cli, spectral


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
  return tuple(sorted(out, key=common.block_order_key))


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
  return "+".join(common.short_name(b) for b in blocks)


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
  fig = common.figure(11.0, 4.2)
  ax, ax_k = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  singles = [c for c in choices if len(c["blocks"]) == 1]
  for c in choices:
    eigs = common.as_floats(c["eigenvalues"])[::-1]
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
  ax.set_ylabel(f"λ_i(K_S), {common.EIG_LABEL}")
  ax.set_title(f"NTK spectra at θ0: {results['task']}, n={results['n']}", fontsize=10)
  ax.legend(fontsize=7, ncol=2)
  kappas = common.as_floats([c["kappa"] for c in choices])
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
  return common.draw_figures(results, outdir, {"ntk_spectra.png": plot_spectra})


def run(config, workdir: str) -> dict:
  """Per-block kernels once, then the spectrum of each layer choice; returns results."""
  t0 = time.time()
  workdir, bk = common.start_block_kernels(config, workdir)
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
  results = common.write_kernel_results(
      {**common.kernel_fields("ntk_spectra", config, bk), "choices": choices}, config, bk,
      workdir, t0)
  plot_all(results, workdir)
  return results


if __name__ == "__main__":
  cli.run_main(run)
