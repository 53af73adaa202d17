"""Per-block NTKs at θ0 on a fixed sample of a task.

The one per-block kernel computation behind ``ntkft.ntk_report``,
``ntkft.select`` and the experiments: the blocks b of the trainable θ0
(:func:`ntkft.theta0.build_theta0`) split by ``block_by``
(``ntkft.ntk.per_block_ntk_fn``) give

  K_b[i, j] = (1/C) Σ_c Σ_{p∈b} ∂f_c(x_i)/∂θ_p ∂f_c(x_j)/∂θ_p    (n, n)

(trace over the C logits, mean normalization), and the blocks partition the
parameters, so Σ_b K_b = K, the NTK of the whole trainable set.
"""
import dataclasses
import time

import jax
import numpy as np
import tqdm

from ntkft import ntk
from ntkft.data import FixedSample
from ntkft.theta0 import Theta0


@dataclasses.dataclass(frozen=True)
class BlockKernels:
  """Per-block NTKs at θ0 on n examples of a task (:func:`per_block_kernels`).

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


def per_block_kernels(start: Theta0, sample: FixedSample, block_by: str = "layer", *,
                      implementation: str = "jacobian_contraction", chunk_size: int = 0,
                      memory_budget_bytes: int = 0, length_buckets=(),
                      progress: bool = False) -> BlockKernels:
  """Per-block NTKs of ``start.trainable`` on the examples of ``sample``.

  Args:
    start: the model at θ0.
    sample: the n examples (one padded batch, :meth:`FixedSample.inputs`).
    block_by: ``ntkft.ntk.BLOCK_MODES`` ("layer", "layer_projection", "leaf").
    implementation: ``ntkft.ntk.NtkImplementation`` name.
    chunk_size: examples per kernel chunk (0: one chunk).
    memory_budget_bytes: bound in bytes on per-chunk Jacobians (0: none).
    length_buckets: Jacobians of examples cut to the shortest bucket holding
      their tokens (``ntkft.ntk.lengths``; ``()``: off).
    progress: a tqdm bar over kernel chunks.
  """
  t0 = time.time()
  x = sample.inputs()
  bar = tqdm.tqdm(desc="per-block kernel chunks", disable=not progress)
  block_fn = ntk.per_block_ntk_fn(
      start.apply, block_by, implementation=implementation,
      **kernel_options(chunk_size, memory_budget_bytes, length_buckets, bar))
  kernels = {k: np.asarray(v, np.float64)
             for k, v in block_fn(x, None, start.trainable, start.frozen).items()}
  bar.close()
  fx0 = np.asarray(jax.jit(start.apply)(start.trainable, x, start.frozen), np.float64)
  counts = ntk.block_param_counts(start.trainable, block_by)
  return BlockKernels(kernels, counts, fx0, np.asarray(sample.labels), np.asarray(sample.index),
                      sample.task, time.time() - t0)


def kernel_options(chunk_size: int, memory_budget_bytes: int, length_buckets, bar) -> dict:
  """Keyword arguments of the ``ntkft.ntk`` kernel functions: the trace over
  logits, ``chunk_size`` examples per chunk, ``memory_budget_bytes`` and
  ``length_buckets`` (0 and () mean off), a progress update of ``bar`` per chunk."""
  return dict(trace_axes=(-1,), batch_size=chunk_size or None,
              memory_budget_bytes=memory_budget_bytes or None,
              on_chunk=lambda info: bar.update(1),
              length_buckets=tuple(length_buckets) or None)
