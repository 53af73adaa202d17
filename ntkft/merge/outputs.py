"""Outputs of merged models over many coefficient settings: forwards, or sums of tangents.

With named task vectors τ_v (shared leaves, float64) and coefficients c = {v: c_v},
task t's merged model (:mod:`ntkft.merge.runs`) at δ = Σ_v c_v τ_v gives on examples x

  nonlinear:   f_t((φ0 + δ, h_t); x)                                  one forward per c
  linearized:  f_t(θ0; x) + J_t(θ0; x)(0, Δh_t) + Σ_v c_v J_t(θ0; x)(τ_v, 0)

so tangent outputs are linear in c: :func:`tangent_outputs` gives f_t(θ0) and J_t d for
full-θ directions d (one ``jax.jvp`` per batch and direction, float32, stored float64),
after which every merge, α grid and ξ grid point is a sum of stored columns.
:class:`MergedOutputs` hides the difference and caches::

  merged = MergedOutputs(runs, {"sst2": tau_sst2, "rte": tau_rte}, {"sst2": {"dev": enc}, ...})
  out = merged("sst2", {"sst2": 0.4, "rte": 0.4}, "dev")      # (N, O) float64
  metric = merged.metric("sst2", {"sst2": 0.4, "rte": 0.4}, "dev")

The tangent sum equals the tangent model evaluated at φ0 + δ up to float32 rounding
(tests/merge_test.py; :meth:`MergedOutputs.forward` is that evaluation, for checks).
"""
import dataclasses
import functools
from typing import Mapping, Sequence

import jax
import numpy as np

from ntkft import data
from ntkft.evals import metrics as metrics_lib
from ntkft.merge import runs as runs_lib
from ntkft.merge import vectors
from ntkft.models import flatten, unflatten
from ntkft.peft import combine
from ntkft.typing import Params

Coefs = Mapping[str, float]  # vector name -> coefficient


@functools.lru_cache(maxsize=16)
def _jvp_fn(apply_fn):
  """jit((θ0, frozen, batch, d) -> (f(θ0), J(θ0) d)) of one model (cached per model)."""

  def jvp(p0, frozen, batch, direction):
    return jax.jvp(lambda p: apply_fn(combine(p, frozen), batch), (p0,), (direction,))

  return jax.jit(jvp)


def direction(run: runs_lib.Run, shared: Params | None = None, head: bool = False) -> dict:
  """A full-θ direction of ``run`` (its trainable pytree, its dtypes): ``shared`` (a task
  vector, cast) on the shared leaves and, with ``head``, Δh = h_T − h0 on the head; zeros
  elsewhere.

  Raises:
    ValueError: ``shared``'s leaves are not the run's shared leaves.
  """
  flat0, trained = flatten(run.trainable0), flatten(run.trainable)
  tau = flatten(shared) if shared is not None else {}
  names = {k for k in flat0 if not vectors.is_head(k)}
  if shared is not None and set(tau) != names:
    raise ValueError(f"direction for {run.workdir}: task vector leaves differ from the run's "
                     f"shared leaves: {sorted(set(tau) ^ names)[:3]}")
  out = {}
  for name, x0 in flat0.items():
    x0 = np.asarray(x0)
    if vectors.is_head(name):
      out[name] = (np.asarray(trained[name]) - x0) if head else np.zeros_like(x0)
    else:
      out[name] = np.asarray(tau[name], x0.dtype) if shared is not None else np.zeros_like(x0)
  return unflatten(out)


def tangent_outputs(run: runs_lib.Run, directions: Sequence[Params], encoded: data.Encoded
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
  """f(θ0; x) and J(θ0; x) d for each direction d, on every example of ``encoded``.

  Args:
    run: a run (its θ0 ``trainable0``, frozen weights and model; any mode).
    directions: full-θ directions (:func:`direction`).
    encoded: N examples, batched as the run's evaluation.

  Returns:
    ((N, O) float64 f(θ0), [(N, O) float64 J d per direction]), row i example i.
  """
  if not directions:
    raise ValueError("tangent_outputs: give at least one direction (a zero one for f(θ0) alone)")
  d = run.config.data
  jvp = _jvp_fn(run.apply_fn)
  f0, cols = None, None
  for batch in data.eval_batches(encoded, d.eval_batch_size, d.buckets, d.max_len):
    keep = batch["weights"] > 0
    rows = batch["index"][keep]
    for i, t in enumerate(directions):
      primal, tangent = jvp(run.trainable0, run.frozen, batch, t)
      primal, tangent = np.asarray(primal, np.float64), np.asarray(tangent, np.float64)
      if f0 is None:
        f0 = np.zeros((len(encoded),) + primal.shape[1:])
        cols = [np.zeros_like(f0) for _ in directions]
      if i == 0:
        f0[rows] = primal[keep]
      cols[i][rows] = tangent[keep]
  return f0, cols


def primary_metric(task: data.TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> float:
  """The task's GLUE metric of (N, O) outputs (argmax, or output 0 for regression), as
  ``ntkft.train.losses.predictions`` but in numpy: float64 sums keep their precision."""
  outputs = np.asarray(outputs)
  preds = outputs[:, 0] if task.is_regression else np.argmax(outputs, axis=-1)
  return metrics_lib.compute_metrics(task, preds, labels)[task.primary_metric]


def _on_device(runs: Mapping[str, runs_lib.Run]) -> dict:
  """The runs with θ0 and frozen leaves on the device, each distinct host array put once
  (runs from ``load_runs`` share their frozen base model)."""
  placed = {}  # id(host array) -> (host array, device array); the host array keeps its id

  def put_once(x):
    if id(x) not in placed:
      placed[id(x)] = (x, jax.device_put(x))
    return placed[id(x)][1]

  def put(tree):
    return jax.tree.map(put_once, tree)

  return {t: dataclasses.replace(r, trainable0=put(r.trainable0), frozen=put(r.frozen))
          for t, r in runs.items()}


class MergedOutputs:
  """Outputs of each task's merged model at δ = Σ_v c_v τ_v, cached per (task, c, split).

  Args:
    runs: {task name: Run} of one mode and one θ0 (``runs.load_runs``).
    task_vectors: {name: τ} (shared leaves; :meth:`add_vector` adds more, e.g. TIES).
    examples: {task name: {split name: Encoded}}.
  """

  def __init__(self, runs: Mapping[str, runs_lib.Run], task_vectors: Mapping[str, Params],
               examples: Mapping[str, Mapping[str, data.Encoded]]):
    modes = {r.mode for r in runs.values()}
    if len(modes) != 1:
      raise ValueError(f"MergedOutputs: runs mix modes {sorted(modes)}; use one mode")
    self.mode = modes.pop()
    self.runs = _on_device(runs)
    self.vectors = dict(task_vectors)
    self.examples = examples
    self._cache = {}  # nonlinear: (task, key, split) -> out; linearized: columns, see _column

  def add_vector(self, name: str, vector: Params) -> None:
    if name in self.vectors:
      raise ValueError(f"MergedOutputs: a task vector named {name!r} exists")
    self.vectors[name] = vector

  def _encoded(self, task: str, split: str) -> data.Encoded:
    try:
      return self.examples[task][split]
    except KeyError:
      raise KeyError(f"MergedOutputs: no {split!r} examples for task {task!r}") from None

  def _key(self, coefs: Coefs) -> tuple:
    unknown = sorted(set(coefs) - set(self.vectors))
    if unknown:
      raise KeyError(f"MergedOutputs: unknown task vector(s) {unknown}; known "
                     f"{sorted(self.vectors)}")
    return tuple(sorted((v, float(c)) for v, c in coefs.items() if c != 0))

  def delta(self, coefs: Coefs) -> Params:
    """δ = Σ_v c_v τ_v (float64; names sorted); zeros for no nonzero coefficient."""
    key = self._key(coefs)
    if not key:
      return vectors.scale(next(iter(self.vectors.values())), 0.0)
    return vectors.weighted_sum([self.vectors[v] for v, _ in key], [c for _, c in key])

  def forward(self, task: str, coefs: Coefs, split: str) -> np.ndarray:
    """(N, O) outputs of the merged model evaluated directly (either mode; no cache)."""
    run = self.runs[task]
    trainable = runs_lib.merged_trainable(run, self.delta(coefs))
    return np.asarray(runs_lib.outputs_on(run, trainable, self._encoded(task, split)),
                      np.float64)

  def _columns(self, task: str, names: Sequence[str], split: str) -> None:
    """Computes the missing tangent columns J_t τ_v (and the base f_t(θ0) + J_t Δh_t)."""
    run = self.runs[task]
    base_key = (task, None, split)
    need_base = base_key not in self._cache
    todo = [v for v in names if (task, v, split) not in self._cache]
    dirs = (([direction(run, head=True)] if need_base else [])
            + [direction(run, self.vectors[v]) for v in todo])
    if not dirs:
      return
    f0, cols = tangent_outputs(run, dirs, self._encoded(task, split))
    if need_base:
      self._cache[base_key] = f0 + cols.pop(0)
    for v, col in zip(todo, cols):
      self._cache[(task, v, split)] = col

  def __call__(self, task: str, coefs: Coefs, split: str) -> np.ndarray:
    """(N, O) float64 outputs of task ``task``'s merged model at ``coefs`` on ``split``."""
    key = self._key(coefs)
    if self.mode == "linearized":
      self._columns(task, [v for v, _ in key], split)
      out = self._cache[(task, None, split)].copy()
      for v, c in key:
        out += c * self._cache[(task, v, split)]
      return out
    full = (task, key, split)
    if full not in self._cache:
      self._cache[full] = self.forward(task, coefs, split)
    return self._cache[full]

  def metric(self, task: str, coefs: Coefs, split: str) -> float:
    """The task's GLUE metric of :meth:`__call__`'s outputs against the split's labels."""
    run = self.runs[task]
    return primary_metric(run.task, self(task, coefs, split), self._encoded(task, split).labels)
