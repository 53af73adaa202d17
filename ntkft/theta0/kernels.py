"""Kernels at θ0 of a config's model on a fixed sample of a task, per block, of a kind.

The one θ0-kernel service: ``ntkft.ntk_report``, ``ntkft.select``,
``ntkft.kernel_fit`` and the experiments get their kernels here, the commands
only parse flags and print. For the trainable θ0 of
:func:`ntkft.theta0.build_theta0` split into blocks b by ``block_by``
(``ntkft.ntk.per_block_ntk_fn``), kind "plain" gives

  K_b[i, j] = (1/C) Σ_c Σ_{p∈b} ∂f_c(x_i)/∂θ_p ∂f_c(x_j)/∂θ_p    (n, n)

(trace over the C logits, mean normalization), and the blocks partition the
parameters, so Σ_b K_b = K, the NTK of the whole trainable set. Kind "sign" is
the sign kernel (1/C) Σ_c Σ_p ∂f_c(x_i)/∂θ_p sign(∂f_c(x_j)/∂θ_p) of Malladi et
al. (2023) (``ntkft.ntk.sign_ntk_fn``), which the NTK engine computes for the
whole set only: no blocks, K in :attr:`BlockKernels.whole`.

  from ntkft.theta0 import kernels as theta0_kernels
  bk = theta0_kernels.kernels_of_config(config)            # config.block_by blocks
  bk.kernels["layer_4"], bk.kernel, bk.fx0, bk.labels

(The untraced plain/sign Grams of the κ study are
``ntkft.theta0.layer_sets``: another computation, in float64 from one Jacobian.)
"""
import dataclasses
import time
from typing import Callable, Optional

import jax
import numpy as np
import tqdm

from ntkft import data, ntk
from ntkft.data import FixedSample
from ntkft.theta0 import Theta0, build_theta0
from ntkft.typing import PLAIN, SIGN, check_kernel_kind


@dataclasses.dataclass(frozen=True)
class BlockKernels:
  """Kernels at θ0 on n examples of a task (:func:`per_block_kernels`).

  Attributes:
    kernels: {block name: (n, n) float64 K_b}, blocks in order of first
      appearance in the parameters (model order); sum_b K_b = K. Empty for
      kind "sign" (no per-block split; see ``whole``).
    num_params: {block name: parameters in the block} (empty for "sign").
    fx0: (n, C) float64 outputs at θ0.
    labels: (n,) labels of the examples.
    index: (n,) positions of the examples in the split.
    task: task name.
    seconds: wall time of the kernel computation.
    kind: "plain" or "sign" (:data:`ntkft.typing.KERNEL_KINDS`).
    whole: (n, n) float64 kernel of the whole trainable set where it is not a
      sum of blocks (kind "sign"); None otherwise.
  """
  kernels: dict
  num_params: dict
  fx0: np.ndarray
  labels: np.ndarray
  index: np.ndarray
  task: str
  seconds: float
  kind: str = PLAIN
  whole: Optional[np.ndarray] = None

  @property
  def kernel(self) -> np.ndarray:
    """(n, n) float64 K of the whole trainable set: ``whole``, or Σ_b K_b (summed in
    block order)."""
    return sum(self.kernels.values()) if self.whole is None else self.whole


def kernel_options(chunk_size: int, memory_budget_bytes: int, length_buckets,
                   bar: Optional[tqdm.tqdm] = None) -> dict:
  """Keyword arguments of the ``ntkft.ntk`` kernel functions: the trace over
  logits, ``chunk_size`` examples per chunk, ``memory_budget_bytes`` and
  ``length_buckets`` (0 and () mean off), a progress update of ``bar`` per chunk
  (None: no callback)."""
  return dict(trace_axes=(-1,), batch_size=chunk_size or None,
              memory_budget_bytes=memory_budget_bytes or None,
              on_chunk=None if bar is None else lambda info: bar.update(1),
              length_buckets=tuple(length_buckets) or None)


def kernel_fn(start: Theta0, kind: str = PLAIN, *,
              implementation: str = "jacobian_contraction", chunk_size: int = 0,
              memory_budget_bytes: int = 0, length_buckets=(),
              bar: Optional[tqdm.tqdm] = None, sign_eps: float = 0.0) -> Callable:
  """``fn(x1, x2=None) -> K`` of ``kind`` over ``start.trainable``, on any inputs.

  Args:
    start: the model at θ0.
    kind: "plain" (K = J(x1) J(x2)ᵀ, traced) or "sign" (K = J(x1) sign J(x2)ᵀ:
      put the training examples in x2).
    implementation: ``ntkft.ntk.NtkImplementation`` name (kind "plain"; the sign
      kernel is computed by Jacobian contraction only).
    chunk_size, memory_budget_bytes, length_buckets, bar: :func:`kernel_options`.
    sign_eps: ε of the smoothed sign (kind "sign"; 0: exact sign).

  Returns:
    ``fn(x1, x2=None)``: the (n1, n2) kernel, a jax array in the model's dtype
    (``x2=None``: x1 against itself).

  Raises:
    ValueError: an unknown kind (:func:`ntkft.typing.check_kernel_kind`).
  """
  check_kernel_kind(kind, "kernel_fn")
  options = kernel_options(chunk_size, memory_budget_bytes, length_buckets, bar)
  if kind == PLAIN:
    options["implementation"] = implementation
  else:
    options["eps"] = sign_eps or None
  return start.subset.ntk_fn(kind, **options)


def per_block_kernels(start: Theta0, sample: FixedSample, block_by: str = "layer", *,
                      kind: str = PLAIN, implementation: str = "jacobian_contraction",
                      chunk_size: int = 0, memory_budget_bytes: int = 0, length_buckets=(),
                      progress: bool = False, sign_eps: float = 0.0) -> BlockKernels:
  """Kernels of ``kind`` over ``start.trainable`` on the examples of ``sample``.

  Args:
    start: the model at θ0.
    sample: the n examples (one padded batch, :meth:`FixedSample.inputs`).
    block_by: ``ntkft.ntk.BLOCK_MODES`` ("layer", "layer_projection", "leaf");
      kind "plain" only.
    kind: "plain" (per-block NTKs) or "sign" (the whole sign kernel, no blocks).
    implementation: ``ntkft.ntk.NtkImplementation`` name (kind "plain").
    chunk_size: examples per kernel chunk (0: one chunk).
    memory_budget_bytes: bound in bytes on per-chunk Jacobians (0: none).
    length_buckets: Jacobians of examples cut to the shortest bucket holding
      their tokens (``ntkft.ntk.lengths``; ``()``: off).
    progress: a tqdm bar over kernel chunks.
    sign_eps: ε of the smoothed sign (kind "sign"; 0: exact sign).

  Raises:
    ValueError: an unknown kind (and the errors of ``ntkft.ntk``).
  """
  check_kernel_kind(kind, "per_block_kernels")
  t0 = time.time()
  x = sample.inputs()
  bar = tqdm.tqdm(desc="per-block kernel chunks" if kind == PLAIN else "sign kernel chunks",
                  disable=not progress)
  if kind == PLAIN:
    block_fn = ntk.per_block_ntk_fn(
        start.apply, block_by, implementation=implementation,
        **kernel_options(chunk_size, memory_budget_bytes, length_buckets, bar))
    kernels = {k: np.asarray(v, np.float64)
               for k, v in block_fn(x, None, start.trainable, start.frozen).items()}
    counts, whole = ntk.block_param_counts(start.trainable, block_by), None
  else:
    fn = kernel_fn(start, SIGN, chunk_size=chunk_size,
                   memory_budget_bytes=memory_budget_bytes, length_buckets=length_buckets,
                   bar=bar, sign_eps=sign_eps)
    kernels, counts, whole = {}, {}, np.asarray(fn(x), np.float64)
  bar.close()
  fx0 = np.asarray(jax.jit(start.apply)(start.trainable, x, start.frozen), np.float64)
  return BlockKernels(kernels, counts, fx0, np.asarray(sample.labels), np.asarray(sample.index),
                      sample.task, time.time() - t0, kind, whole)


def kernel_sample(config, start: Theta0) -> FixedSample:
  """The ``config.n`` examples of config.task / data.split the kernels are computed on.

  A fixed random sample (``np.random.default_rng(config.seed)``) tokenized with
  the model's tokenizer to ``config.data.max_len``.
  """
  d = config.data
  task = data.get_task(config.task)
  examples = data.load_examples(task, d.split, data.task_data_dir(task, d.root))
  return data.fixed_sample(examples, config.n, config.seed,
                           data.load_tokenizer(start.model.source), d.max_len)


def kernel_settings(config, kind: str = PLAIN) -> dict:
  """The kernel settings of the config, as keyword arguments of :func:`per_block_kernels`:
  implementation, chunk_size, and if present memory_budget_mb (the config's unit,
  passed on in bytes, MB = 2**20), length_buckets, progress; ``sign_eps`` for kind
  "sign"."""
  settings = dict(implementation=config.implementation, chunk_size=config.chunk_size,
                  memory_budget_bytes=int(config.get("memory_budget_mb", 0.0) * 2**20),
                  length_buckets=config.get("length_buckets", ()),
                  progress=config.get("progress", False))
  if kind == SIGN:
    settings["sign_eps"] = config.sign_eps
  return settings


def kernels_of_config(config, kind: str = PLAIN, *,
                      start: Optional[Theta0] = None) -> BlockKernels:
  """The kernels of ``kind`` of ``config``'s model at θ0 on its kernel sample.

  Reads config.task, model, peft, seed (:func:`ntkft.theta0.build_theta0`;
  pass ``start`` if it is built already), n, data (:func:`kernel_sample`),
  block_by, implementation, chunk_size, and if present memory_budget_mb,
  length_buckets and progress (a tqdm bar over kernel chunks), sign_eps for
  kind "sign"; see :func:`per_block_kernels`.

  Raises:
    ValueError: an unknown kind (before any model is loaded), and the errors
      of the functions above.
  """
  check_kernel_kind(kind, "kernels_of_config")
  start = build_theta0(config) if start is None else start
  return per_block_kernels(start, kernel_sample(config, start), config.block_by, kind=kind,
                           **kernel_settings(config, kind))
