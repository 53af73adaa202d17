"""Plumbing shared by the experiments.

Experiments share code only through this module, with two deliberate
exceptions: ``layer_study`` (the layer-set machinery of spectrum_correlation and
selection_validation, not an experiment itself) and ``selection_study``, which
reuses the κ study's points (``kappa_study``) and cells (``kappa_analysis``) by
design (preregistration Amendment 2.9).

- Per-block kernel experiments (``ntk_spectra``, ``perturbation_bounds``):
  :func:`start_block_kernels` (checks, workdir, the kernels of
  ``ntkft.theta0.kernels.kernels_of_config`` in model order), :func:`kernel_fields` (the
  leading results.json fields), :func:`write_kernel_results`; block names in
  plots (:func:`short_name`, :data:`EIG_LABEL`).
- Figures: :func:`figure` (an Agg canvas) and :func:`draw_figures` (``plot_all``).
- Every experiment: :func:`write_results` (results.json with ``wall_seconds``),
  :func:`as_floats` / :func:`optional` (JSON null back to nan),
  :func:`format_markdown`, :func:`parse_tasks`, :func:`compilation_cache`.
- Layer studies: Spearman's ρ with a bootstrap CI (:func:`spearman_ci`) and
  :func:`run_note`.
"""
import contextlib
import dataclasses
import math
import pathlib
import re
import time
import warnings
from typing import Callable, Optional, Sequence

import jax
import numpy as np
import scipy.stats

from ntkft import data, records, spectral
from ntkft.theta0 import kernels as theta0_kernels

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


def layer_label(layers: Sequence[int]) -> str:
  """(4, 5) -> "4-5" (file names, plot labels; the κ study's ``L4-5`` adds the L)."""
  return "-".join(str(i) for i in layers)


def ordered_block_kernels(config) -> theta0_kernels.BlockKernels:
  """:func:`ntkft.theta0.kernels.kernels_of_config` (the NTK), blocks ordered by
  :func:`block_order_key` and symmetrized ((K + Kᵀ)/2, a rounding fix)."""
  bk = theta0_kernels.kernels_of_config(config)
  kernels = {name: spectral.symmetric_kernel(bk.kernels[name], name, symmetrize=True)
             for name in sorted(bk.kernels, key=block_order_key)}
  return dataclasses.replace(bk, kernels=kernels)


def save_block_kernels(bk: theta0_kernels.BlockKernels, path) -> None:
  np.savez(path, labels=bk.labels, index=bk.index,
           **{f"block/{k}": v for k, v in bk.kernels.items()})


def start_block_kernels(config, workdir) -> tuple[pathlib.Path, theta0_kernels.BlockKernels]:
  """Shared start of the per-block kernel experiments: checks config.ridge, creates
  ``workdir`` and computes :func:`ordered_block_kernels`."""
  if config.ridge < 0:
    raise ValueError(f"config.ridge={config.ridge} must be >= 0")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  return workdir, ordered_block_kernels(config)


def kernel_fields(experiment: str, config, bk: theta0_kernels.BlockKernels) -> dict:
  """The leading results.json fields of the per-block kernel experiments."""
  return {"experiment": experiment, "task": bk.task, "model": config.model.name,
          "n": int(config.n), "block_by": config.block_by, "ridge": float(config.ridge),
          "peft": config.peft.to_dict(), "index": bk.index.tolist(),
          "kernel": "NTK traced over logits (mean), at θ0",
          "blocks": {b: {"num_params": bk.num_params[b], "trace": float(np.trace(k))}
                     for b, k in bk.kernels.items()}}


def write_kernel_results(results: dict, config, bk: theta0_kernels.BlockKernels, workdir,
                         t0: float) -> dict:
  """:func:`write_results` with provenance and ``kernel_seconds`` added, and the
  kernels in ``workdir/block_kernels.npz``; returns the JSON-safe results."""
  results = write_results({**results, **records.provenance(config),
                           "kernel_seconds": bk.seconds}, workdir, t0)
  save_block_kernels(bk, pathlib.Path(workdir) / "block_kernels.npz")
  return results


def figure(width: float, height: float):
  """A matplotlib ``Figure`` of ``width`` x ``height`` inches at 100 dpi on the Agg
  canvas (no display, no pyplot state); matplotlib is imported here, on first use."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def draw_figures(results: dict, outdir, plots: dict[str, Callable]) -> list[str]:
  """``plots[name](results, outdir / name)`` for each PNG name, in order, into ``outdir``
  (created); returns the paths written. The body of each experiment's ``plot_all``."""
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, plot in plots.items():
    plot(results, outdir / name)
    paths.append(str(outdir / name))
  return paths


def write_results(results: dict, workdir, t0: float) -> dict:
  """Sets ``wall_seconds`` (since t0), writes ``workdir/results.json``; returns
  the JSON-safe dict written."""
  results["wall_seconds"] = time.time() - t0
  return records.write_json(pathlib.Path(workdir) / "results.json", results)


def format_markdown(rows: list[dict], columns: Sequence[str]) -> str:
  """A markdown table of ``rows`` (dicts) over ``columns``; floats as 4 s.f."""
  def cell(v):
    if v is None:
      return "-"
    if isinstance(v, bool) or isinstance(v, (int, np.integer)):
      return str(v)
    if isinstance(v, (float, np.floating)):
      return "inf" if math.isinf(v) else ("nan" if math.isnan(v) else f"{v:.4g}")
    if isinstance(v, (list, tuple)):
      return "(" + ",".join(str(i) for i in v) + ")"
    return str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def as_floats(values) -> np.ndarray:
  """A JSON list (None for inf/nan) as a float array (None -> nan)."""
  return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def optional(v: Optional[float]) -> float:
  """None -> nan (JSON null back to a float; results.json writes inf/nan as null)."""
  return math.nan if v is None else float(v)


def parse_tasks(tasks) -> tuple[str, ...]:
  """``("sst2", "rte")`` or ``"sst2+rte"`` -> canonical task names, validated."""
  if isinstance(tasks, str):
    tasks = [t for t in tasks.split("+") if t.strip()]
  names = tuple(data.get_task(t.strip()).name for t in tasks)
  if not names:
    raise ValueError("config.tasks is empty; give e.g. ('sst2', 'mrpc')")
  if len(set(names)) != len(names):
    raise ValueError(f"config.tasks has duplicates: {names}")
  return names


@contextlib.contextmanager
def compilation_cache(path):
  """Persistent XLA compilation cache in ``path`` for the block (None: no-op).

  Fine-tuning runs of the same layer set (other seeds, other tasks with the
  same label count) then load their programs instead of compiling them. A
  cache the caller configured already is left alone; the global settings are
  restored on exit.
  """
  from jax.experimental.compilation_cache import compilation_cache as cc
  if path is None or jax.config.jax_compilation_cache_dir:
    yield
    return
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {name: getattr(jax.config, name) for name in names}
  cc.reset_cache()  # forget an earlier "no cache configured" decision
  for name, value in zip(names, (str(path), 0.0, -1)):
    jax.config.update(name, value)
  try:
    yield
  finally:
    for name, value in old.items():
      jax.config.update(name, value)
    cc.reset_cache()


def _spearman_rows(x, y, axis=-1):
  """Spearman's ρ of each resample (rows of x, y); nan for a constant row."""
  return scipy.stats.pearsonr(scipy.stats.rankdata(x, axis=axis),
                              scipy.stats.rankdata(y, axis=axis), axis=axis).statistic


def spearman_ci(x, y, num_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
  """Spearman's ρ with a percentile-bootstrap CI over (x, y) pairs.

  ρ is the Pearson correlation of the ranks (ties get average ranks; ±inf
  rank as the extremes, so κ = inf is "the largest"). Pairs with a nan (or
  None) in x or y are dropped. The CI resamples the n pairs with replacement
  ``num_boot`` times (``np.random.default_rng(seed)``) and takes the
  (1-level)/2 and (1+level)/2 quantiles of the resampled ρ; resamples in which
  x or y is constant (ρ undefined) are left out and counted.

  Returns:
    ``{"rho", "ci95": [lo, hi], "n", "p_value", "num_boot_valid"}`` (ci95 is
    the ``level`` interval, named for the default); nan where undefined (n < 3
    or a constant variable).
  """
  x, y = as_floats(x), as_floats(y)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
  if not 0 < level < 1 or num_boot < 0:
    raise ValueError(f"level={level} must be in (0, 1) and num_boot={num_boot} >= 0")
  keep = ~(np.isnan(x) | np.isnan(y))
  x, y = x[keep], y[keep]
  n = int(x.size)
  out = {"rho": math.nan, "ci95": [math.nan, math.nan], "n": n, "p_value": math.nan,
         "num_boot_valid": 0}
  if n < 3:
    return out
  with warnings.catch_warnings():   # constant (re)samples: ρ = nan, left out below
    warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
    warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
    res = scipy.stats.spearmanr(x, y)
    # Paired resamples of the n indices: rng.integers(0, n, (num_boot, n)).
    boot = scipy.stats.bootstrap(
        (x, y), _spearman_rows, paired=True, vectorized=True, n_resamples=num_boot,
        method="percentile", rng=np.random.default_rng(seed)
    ).bootstrap_distribution if num_boot else np.zeros(0)
  out["rho"] = rho = float(res.statistic)
  if math.isfinite(rho):
    out["p_value"] = float(res.pvalue)
  if num_boot:
    boot = boot[np.isfinite(boot)]
    out["num_boot_valid"] = int(boot.size)
    if boot.size:
      lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
      out["ci95"] = [float(lo), float(hi)]
  return out


def run_note(summary: dict) -> str:
  """" (12.3s)" for a run made now, " (finished before: skipped)" for a resumed one."""
  if summary["skipped"]:
    return " (finished before: skipped)"
  return f" ({summary['wall_seconds']:.1f}s)"
