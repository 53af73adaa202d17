"""Weyl perturbation bounds vs exact NTK eigenvalues as layers are added.

  python -m experiments.perturbation_bounds --config=configs/perturbation_bounds.py \
      --workdir=runs/perturbation_bounds
  python -m experiments.perturbation_bounds --config=configs/perturbation_bounds.py:runlocal \
      --workdir=/tmp/pb

Adding block b to the fine-tuned set S adds a PSD block to the kernel,
K_{S+b} = K_S + K_b. Knowing the spectrum a_1 <= ... <= a_n of K_S and only the
extreme eigenvalues b_1, b_n of K_b, Weyl's inequalities bound every eigenvalue
c_k of the sum, a_k + b_1 <= c_k <= a_k + b_n, and hence λ_min, λ_max and
κ = c_n / c_1 (:mod:`ntkft.select.bounds`). This experiment computes the
per-block kernels once (:func:`experiments.common.start_block_kernels`), adds the blocks
one at a time in ``config.order`` starting from S = ∅ (K_∅ = 0), and at each
step compares the bounds with the exact eigenvalues of K_S + K_b (+ ridge)
(:func:`ntkft.select.check_bounds`). Writes into the workdir:

  results.json       order, per step: added, blocks (S after the step),
                     num_params, eigs_before (of K_S), eigs (exact), weyl_lower,
                     weyl_upper, lambda_min/max and kappa exact with their
                     bounds, relative band width, checks, violations; totals;
                     search_costs (:func:`search_costs`)
  block_kernels.npz  ``block/<name>`` (n, n) float64 kernels, ``labels``, ``index``
  perturbation_bounds_bands.png  one panel per step: exact eigenvalues inside
                     the Weyl band [a_k + b_1, a_k + b_n] (log y)
  perturbation_bounds_kappa.png  λ_min, λ_max and κ exact vs bounds per step

Orders (``config.order``): ``"sequential"`` (model order), ``"greedy"`` (the
greedy min-κ order of :func:`ntkft.select.greedy_select` over all blocks), or
comma-separated layer indices / block names (``"5,4,3"``; a subset is allowed).
"""
import math
import time
from typing import Sequence

import numpy as np

from experiments import common
from ntkft import cli, select

ORDERS = ("sequential", "greedy")


def resolve_order(order: str, kernels: dict, ridge: float = 0.0) -> list[str]:
  """The blocks to add, in order.

  Args:
    order: ``"sequential"``, ``"greedy"`` or comma-separated layer indices /
      block names.
    kernels: {block: (n, n) kernel}, in model order.
    ridge: ridge of the greedy min-κ criterion.

  Raises:
    ValueError: unknown or repeated blocks, an empty order.
  """
  names = list(kernels)
  if order == "sequential":
    return names
  if order == "greedy":
    return list(select.greedy_select(kernels, "min_kappa", k=len(names), ridge=ridge,
                                     prune=True).selected)
  items = [item.strip() for item in str(order).split(",") if item.strip()]
  if not items:
    raise ValueError(f"config.order={order!r}: give {ORDERS} or comma-separated blocks")
  out = []
  for item in items:
    name = f"layer_{item}" if item.isdigit() else item
    if name not in names:
      raise ValueError(f"config.order={order!r}: unknown block {item!r}; blocks are {names}; "
                       f"or use one of {ORDERS}")
    if name in out:
      raise ValueError(f"config.order={order!r}: block {name!r} given twice")
    out.append(name)
  return out


def bound_steps(kernels: dict, order: Sequence[str], ridge: float = 0.0,
                rtol: float = select.bounds.DEFAULT_RTOL) -> list[dict]:
  """Adds the blocks of ``order`` one by one from S = ∅; bounds vs exact per step.

  Args:
    kernels: {block: (n, n) symmetric PSD kernel}.
    order: block names to add, in order.
    ridge: ρ >= 0; the spectra are those of K_S + K_b + ρI.
    rtol: rounding slack of the checks (:func:`ntkft.select.check_bounds`).

  Returns:
    One dict per step: the :func:`ntkft.select.check_bounds` report (``eigs``,
    ``weyl_lower``, ``weyl_upper``, ``lambda_min``, ``lambda_min_lower``, ...,
    ``kappa``, ``kappa_lower``, ``kappa_upper``, ``checks``, ``violations``)
    plus ``added``, ``blocks``, ``eigs_before`` (of K_S + ρI),
    ``block_lambda_min``/``block_lambda_max`` (of K_b) and
    ``relative_band_width`` (median over k of (upper_k − lower_k) / c_k).
  """
  n = next(iter(kernels.values())).shape[0]
  k_s = np.zeros((n, n))
  steps = []
  for b in order:
    report = select.check_bounds(k_s, kernels[b], ridge=ridge, rtol=rtol)
    eigs_b = np.linalg.eigvalsh(kernels[b])
    eigs = np.asarray(report["eigs"])
    width = (np.asarray(report["weyl_upper"]) - np.asarray(report["weyl_lower"]))
    steps.append({
        "added": b, "blocks": list(order[:len(steps) + 1]),
        "eigs_before": (np.linalg.eigvalsh(k_s) + ridge).tolist(),
        "block_lambda_min": float(eigs_b[0]), "block_lambda_max": float(eigs_b[-1]),
        "relative_band_width": float(np.median(width / np.abs(eigs))) if np.all(eigs != 0)
                               else math.inf,
        **report})
    k_s = k_s + kernels[b]
  return steps


def _positive(values) -> np.ndarray:
  values = common.as_floats(values)
  values[~(values > 0)] = np.nan   # log axes
  return values


def plot_bands(results: dict, path) -> str:
  """One panel per step: exact eigenvalues of K_S + K_b inside the Weyl band.

  Args:
    results: a loaded results.json of :func:`run`.
    path: PNG to write.
  """
  steps = results["steps"]
  cols = min(3, len(steps))
  rows = math.ceil(len(steps) / cols)
  fig = common.figure(4.0 * cols, 3.1 * rows)
  first = None
  for t, step in enumerate(steps):
    ax = fig.add_subplot(rows, cols, t + 1, sharey=first)
    first = first or ax
    # Descending order, pairing each c_k with its own bounds.
    eigs = _positive(step["eigs"])[::-1]
    lower = _positive(step["weyl_lower"])[::-1]
    upper = _positive(step["weyl_upper"])[::-1]
    before = _positive(step["eigs_before"])[::-1]
    index = np.arange(1, eigs.shape[0] + 1)
    ax.fill_between(index, lower, upper, color="C0", alpha=0.3, linewidth=0,
                    label="Weyl band [a_k+b_1, a_k+b_n]")
    ax.plot(index, eigs, "k.-", markersize=4, linewidth=1, label="exact c_k")
    if np.any(np.isfinite(before)):
      ax.plot(index, before, ":", color="0.5", linewidth=1, label="a_k (before)")
    ax.set_yscale("log")
    ax.set_title(f"step {t + 1}: +{common.short_name(step['added'])} "
                 f"(|S|={len(step['blocks'])}), {step['violations']} violations",
                 fontsize=9)
    if t % cols == 0:
      ax.set_ylabel(f"λ_k(K_S + K_b), {common.EIG_LABEL}", fontsize=8)
    if t >= len(steps) - cols:
      ax.set_xlabel("eigenvalue index k (descending)", fontsize=8)
    if t == min(1, len(steps) - 1):   # step 2 shows all three (a_k = 0 at step 1)
      ax.legend(fontsize=7)
  fig.suptitle(f"Weyl bounds vs exact NTK eigenvalues: {results['task']}, n={results['n']}",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
  return str(path)


def plot_kappa(results: dict, path) -> str:
  """λ_min, λ_max (left) and κ (right): exact vs their bounds as blocks are added.

  Args:
    results: a loaded results.json of :func:`run`.
    path: PNG to write.
  """
  steps = results["steps"]
  t = np.arange(1, len(steps) + 1)
  ticks = [f"+{common.short_name(s['added'])}" for s in steps]
  fig = common.figure(11.0, 4.0)
  ax, ax_k = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  for key, color in (("lambda_min", "C0"), ("lambda_max", "C3")):
    ax.fill_between(t, _positive([s[f"{key}_lower"] for s in steps]),
                    _positive([s[f"{key}_upper"] for s in steps]), color=color, alpha=0.25,
                    linewidth=0, label=f"{key} bounds")
    ax.plot(t, _positive([s[key] for s in steps]), "o-", color=color, label=f"{key} exact")
  ax.set_yscale("log")
  ax.set_ylabel(f"eigenvalue of K_S, {common.EIG_LABEL}")
  lower = common.as_floats([s["kappa_lower"] for s in steps])
  upper = common.as_floats([s["kappa_upper"] for s in steps])   # None (inf) -> nan: not drawn
  ax_k.fill_between(t, lower, upper, color="C2", alpha=0.25, linewidth=0,
                    label="κ bounds (Weyl)")
  ax_k.plot(t, lower, "v--", color="C2", markersize=4, linewidth=1)
  ax_k.plot(t, upper, "^--", color="C2", markersize=4, linewidth=1)
  ax_k.plot(t, _positive([s["kappa"] for s in steps]), "ko-", label="κ exact")
  ax_k.set_yscale("log")
  ax_k.set_ylabel("κ(K_S) = λ_max / λ_min (dimensionless)")
  for a in (ax, ax_k):
    a.set_xticks(t)
    a.set_xticklabels(ticks, fontsize=8)
    a.set_xlabel("block added at step (S grows left to right)")
    a.legend(fontsize=7)
  fig.suptitle(f"{results['task']}, n={results['n']}, order={results['order_rule']}, "
               f"ridge={results['ridge']:g}: {results['total_violations']} violations in "
               f"{results['total_checks']} checks", fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
  return str(path)


def plot_all(results: dict, outdir) -> list[str]:
  """Every figure of this experiment into ``outdir`` (bands, kappa)."""
  return common.draw_figures(results, outdir, {"perturbation_bounds_bands.png": plot_bands,
                                               "perturbation_bounds_kappa.png": plot_kappa})


def search_costs(kernels: dict, ridge: float = 0.0, ks: Sequence[int] = (2, 3)) -> list[dict]:
  """What the min-κ searches of :mod:`ntkft.select` cost on these kernels.

  Per k: the greedy search with and without Weyl pruning and the exhaustive
  enumeration, each with its selection, κ, ``exact_evaluations`` (every
  eigendecomposition, single-block spectra included) and ``pruned``, and
  ``subsets`` = C(m, k).
  """
  rows = []
  for k in (k for k in ks if k <= len(kernels)):
    for search, prune in (("greedy", True), ("greedy", False), ("exhaustive", False)):
      sel = select.select(kernels, search, prune=prune, criterion="min_kappa", k=k, ridge=ridge)
      rows.append({"k": k, "search": search, "prune": prune, "selected": list(sel.selected),
                   "kappa": sel.value, "exact_evaluations": sel.exact_evaluations,
                   "pruned": sel.pruned, "subsets": math.comb(len(kernels), k),
                   "bound_violations": sel.bound_violations})
  return rows


def run(config, workdir: str) -> dict:
  """Per-block kernels once, then bounds vs exact spectra step by step; returns results."""
  t0 = time.time()
  workdir, bk = common.start_block_kernels(config, workdir)
  order = resolve_order(config.order, bk.kernels, config.ridge)
  steps = bound_steps(bk.kernels, order, config.ridge, config.rtol)
  for t, step in enumerate(steps):
    step["num_params"] = int(sum(bk.num_params[b] for b in step["blocks"]))
    print(f"step {t + 1} +{step['added']}: κ={step['kappa']:.4g} in "
          f"[{step['kappa_lower']:.4g}, {step['kappa_upper']:.4g}], "
          f"λmin={step['lambda_min']:.4g} in [{step['lambda_min_lower']:.4g}, "
          f"{step['lambda_min_upper']:.4g}], λmax={step['lambda_max']:.4g} in "
          f"[{step['lambda_max_lower']:.4g}, {step['lambda_max_upper']:.4g}], "
          f"violations {step['violations']}/{step['checks']}")
  results = common.write_kernel_results(
      {**common.kernel_fields("perturbation_bounds", config, bk),
       "rtol": float(config.rtol), "order_rule": config.order, "order": order,
       "steps": steps,
       "total_checks": int(sum(s["checks"] for s in steps)),
       "total_violations": int(sum(s["violations"] for s in steps)),
       "search_costs": search_costs(bk.kernels, config.ridge)},
      config, bk, workdir, t0)
  plot_all(results, workdir)
  print(f"{results['total_violations']} violations in {results['total_checks']} checks")
  for row in results["search_costs"]:
    print(f"k={row['k']} {row['search']}{' pruned' if row['prune'] else ''}: "
          f"{'+'.join(row['selected'])} κ={row['kappa']:.4g}, "
          f"{row['exact_evaluations']} eigendecompositions, {row['pruned']} pruned "
          f"(C(m, k) = {row['subsets']})")
  return results


if __name__ == "__main__":
  cli.run_main(run)
