"""Layer selection from per-block NTKs at θ0: ``python -m ntkft.select``.

  python -m ntkft.select --config=configs/select_layers.py --workdir=runs/select_sst2
  python -m ntkft.select --config=configs/select_layers.py:runlocal --workdir=/tmp/select

Computes the per-block kernels K_b of every candidate block (the blocks of
``config.peft`` split by ``config.block_by``) with
:func:`ntkft.theta0.kernels.kernels_of_config`, selects ``config.budget`` blocks for
``config.criterion`` with ``config.search`` (greedy: Weyl-pruned, see
:mod:`ntkft.select.selection`), reports the other criteria's choices, and writes
``<workdir>/selection.json``:

  selected, criterion, value, search, ridge, num_params, bound_checks,
  bound_violations, pruned, exact_evaluations, stopped, trace, peft_fragment,
  peft_flags (the config overrides for a fine-tuning run), candidates
  ({block: lambda_min, lambda_max, kappa, trace, alignment, num_params}),
  other_criteria ({criterion: {selected, value, peft_flags, ...}}), task, n,
  block_by, targets ("residual y - f(θ0)" or "y"), wall_seconds;
and ``<workdir>/block_kernels.npz``: ``block/<name>`` (n, n) float64 kernels,
``fx0`` (n, C) outputs at θ0, ``targets`` (n, C), ``labels``, ``index``.

Targets: one-hot labels (classification) or the scores (regression), minus the
outputs at θ0 when ``config.residual``.
"""
import json
import pathlib
import time

import numpy as np

from ntkft import data, records
from ntkft import targets as targets_lib
from ntkft.select import selection as selection_lib
from ntkft.theta0 import kernels as theta0_kernels

BLOCK_BY = ("layer", "layer_projection")


def _validate(config):
  if config.block_by not in BLOCK_BY:
    raise ValueError(f"config.block_by={config.block_by!r}; choose from {BLOCK_BY}")
  if config.criterion not in selection_lib.CRITERIA:
    raise ValueError(f"config.criterion={config.criterion!r}; choose from "
                     f"{selection_lib.CRITERIA}")
  if config.search not in selection_lib.SEARCHES:
    raise ValueError(f"config.search={config.search!r}; choose from "
                     f"{selection_lib.SEARCHES}")
  if config.budget < 0 or config.param_budget < 0:
    raise ValueError(f"config.budget={config.budget} and config.param_budget="
                     f"{config.param_budget} must be >= 0 (0: no limit)")
  if config.budget == 0 and config.param_budget == 0:
    raise ValueError("give config.budget (number of blocks) and/or "
                     "config.param_budget (parameters)")


def run(config, workdir: str) -> dict:
  """Computes the per-block kernels, selects, writes selection.json; returns it."""
  t0 = time.time()
  _validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  task = data.get_task(config.task)
  bk = theta0_kernels.kernels_of_config(config)
  kernels, fx0, labels, index, counts = bk.kernels, bk.fx0, bk.labels, bk.index, bk.num_params
  t_kernel = bk.seconds
  targets = targets_lib.targets(np.asarray(labels), task.num_labels, task.is_regression,
                           np.float64)

  common = dict(k=config.budget or None, targets=targets,
                fx0=fx0 if config.residual else None, param_counts=counts,
                param_budget=config.param_budget or None, ridge=config.ridge,
                prune=config.prune)
  t1 = time.time()
  result = selection_lib.select(kernels, config.search,
                                criterion=config.criterion, **common)
  t_select = time.time() - t1
  others = {}
  for criterion in selection_lib.CRITERIA:
    if criterion == config.criterion:
      continue
    other = selection_lib.select(kernels, config.search, criterion=criterion, **common)
    others[criterion] = {key: value for key, value in other.to_json().items()
                         if key != "trace"}
  summary = {
      "task": task.name, "split": config.data.split, "n": int(config.n),
      "block_by": config.block_by, "index": index.tolist(),
      "targets": "residual y - f(θ0)" if config.residual else "y",
      **result.to_json(),
      "candidates": records.jsonable(selection_lib.block_stats(
          kernels, targets, fx0 if config.residual else None, config.ridge, counts)),
      "other_criteria": others,
      "kernel_seconds": t_kernel, "select_seconds": t_select,
      "wall_seconds": time.time() - t0,
  }
  (workdir / "selection.json").write_text(json.dumps(summary, indent=2))
  np.savez(workdir / "block_kernels.npz", fx0=fx0, targets=targets, labels=labels,
           index=index, **{f"block/{k}": v for k, v in kernels.items()})
  print(f"{config.criterion} ({config.search}): selected {list(result.selected)} "
        f"value={result.value:.6g} pruned={result.pruned} "
        f"bound_checks={result.bound_checks} violations={result.bound_violations}")
  print(f"  {result.as_flags()}")
  for criterion, other in others.items():
    print(f"{criterion}: selected {other['selected']} value={other['value']}")
    print(f"  {other['peft_flags']}")
  return summary
