"""The driver of the empirical NTK: chunks examples, assembles kernel blocks.

A :class:`KernelEngine` computes ``{block name: K_b}`` for a fixed ``apply_fn``
and :class:`EngineConfig`: it validates inputs and parameters, derives the
output :class:`ntkft.ntk.layout.Layout`, plans parameter groups and example
chunks (:mod:`ntkft.ntk.chunking`), runs the jitted Jacobians of the one
Jacobian core (:mod:`ntkft.ntk.jacobians`) and the contractions of
:mod:`ntkft.ntk.contraction` per (row chunk, column chunk) and sums/mirrors the
blocks on the host. The public kernel functions built on it, and the math, are
in :mod:`ntkft.ntk.empirical`.
"""
import dataclasses
import enum
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntkft import xla_workarounds
from ntkft.models import blocks as blocks_lib
from ntkft.ntk import chunking, contraction
from ntkft.ntk import jacobians as jacobians_lib
from ntkft.ntk import layout as layout_lib
from ntkft.ntk import lengths as lengths_lib
from ntkft.ntk import precision as precision_lib
from ntkft.typing import PLAIN, ApplyFn, Array, Params, check_kernel_kind

OnChunk = Callable[[dict], None]


class NtkImplementation(str, enum.Enum):
  """How the kernel is computed; see :mod:`ntkft.ntk.empirical`."""
  JACOBIAN_CONTRACTION = "jacobian_contraction"
  NTK_VECTOR_PRODUCTS = "ntk_vector_products"


# neural-tangents' integer codes, accepted for convenience.
_NT_CODES = {1: NtkImplementation.JACOBIAN_CONTRACTION,
             2: NtkImplementation.NTK_VECTOR_PRODUCTS}


def as_implementation(value: Any) -> NtkImplementation:
  """``value`` (enum, name, or neural-tangents' code 1/2) as NtkImplementation."""
  if isinstance(value, NtkImplementation):
    return value
  if isinstance(value, str):
    try:
      return NtkImplementation(value.lower())
    except ValueError:
      pass
  elif isinstance(value, int) and not isinstance(value, bool):
    if value in _NT_CODES:
      return _NT_CODES[value]
  raise ValueError(
      f"unknown NTK implementation {value!r}; use one of "
      f"{[m.value for m in NtkImplementation]} (or neural-tangents' 1, 2)")


# The block name of the whole kernel (engines without block_of).
WHOLE = "kernel"


@dataclasses.dataclass(frozen=True)
class EngineConfig:
  """Static options of a :class:`KernelEngine` (see ``empirical_ntk_fn``)."""
  trace_axes: tuple[int, ...]
  diagonal_axes: tuple[int, ...]
  implementation: NtkImplementation
  kind: str
  eps: Optional[float]
  batch_size: Optional[int]
  memory_budget_bytes: Optional[int]
  length_buckets: Optional[tuple[int, ...]] = None
  mask_key: str = "attention_mask"
  precision: str = "highest"


class KernelEngine:
  """Computes {block name: kernel} for a fixed apply_fn and configuration."""

  def __init__(self, apply_fn: ApplyFn, config: EngineConfig,
               block_of: Optional[blocks_lib.BlockOf],
               on_chunk: Optional[OnChunk]):
    if not callable(apply_fn):
      raise TypeError(f"apply_fn must be callable, got {type(apply_fn)}")
    if on_chunk is not None and not callable(on_chunk):
      raise TypeError(f"on_chunk must be callable, got {type(on_chunk)}")
    if config.batch_size is not None:
      chunking.check_positive("batch_size", config.batch_size)
    if config.memory_budget_bytes is not None:
      chunking.check_positive("memory_budget_bytes",
                              config.memory_budget_bytes)
    check_kernel_kind(config.kind, "make_engine")
    if config.eps is not None and not config.eps > 0:
      raise ValueError(f"eps must be positive or None, got {config.eps!r}")
    if config.length_buckets is not None and (
        config.implementation != NtkImplementation.JACOBIAN_CONTRACTION):
      raise ValueError("length_buckets needs implementation='jacobian_contraction'")
    if config.kind != PLAIN and (
        config.implementation != NtkImplementation.JACOBIAN_CONTRACTION):
      raise ValueError("the sign kernel needs implementation='jacobian_contraction'")
    precision_lib.check_precision(config.precision)
    xla_workarounds.check_batched_jacobians()  # raises if XLA miscompiles Jacobians here
    self.apply_fn = apply_fn
    self.config = config
    self.block_of = block_of
    self.on_chunk = on_chunk
    self._jitted = {}

  def _piece(self, name: str, treedef, group, num_leaves):
    """Jitted Jacobians ("jac") or NTK-vp stack ("vp_stack") of a group (the shared cache)."""
    piece = {"jac": jacobians_lib.per_example, "vp_stack": contraction.vp_stack}[name]
    return jacobians_lib.jitted(self.apply_fn, piece, self._jitted, treedef=treedef,
                                num_leaves=num_leaves, group=group)

  def _groups(self, leaves, leaf_blocks, paths, out_size, itemsize,
              num_examples) -> tuple[list[tuple[int, ...]], Optional[int]]:
    """Parameter groups and the example-chunk size (None: no chunking)."""
    cfg = self.config
    sizes = [int(np.size(leaf)) for leaf in leaves]
    if cfg.implementation == NtkImplementation.NTK_VECTOR_PRODUCTS:
      order = list(dict.fromkeys(leaf_blocks))
      groups = [tuple(i for i, b in enumerate(leaf_blocks) if b == name)
                for name in order]
    else:
      groups = [tuple(range(len(leaves)))]
    chunk = cfg.batch_size
    budget = cfg.memory_budget_bytes
    if budget is not None:
      split = []
      for group in groups:
        group_size = sum(sizes[i] for i in group)
        if chunking.max_chunk(out_size, group_size, itemsize, budget) >= 1:
          split.append(group)
          continue
        for sub in chunking.plan_param_groups(
            [sizes[i] for i in group], out_size, itemsize, budget,
            leaf_names=[paths[i] for i in group]):
          split.append(tuple(group[i] for i in sub))
      groups = split
      biggest = max(sum(sizes[i] for i in g) for g in groups)
      fit = chunking.plan_chunks(num_examples, out_size, biggest, itemsize,
                                 budget)
      chunk = fit if chunk is None else min(chunk, fit)
    return groups, chunk

  def _jacobians(self, jac, diff, rest, x, extra):
    """Per-example Jacobians of a chunk, length bucket by bucket if configured."""
    if self.config.length_buckets is None:
      return jac(diff, rest, x, extra)
    return lengths_lib.bucketed(lambda xc: jac(diff, rest, xc, extra), x,
                                self.config.length_buckets, self.config.mask_key)

  def __call__(self, x1, x2, params: Params, *extra) -> dict[str, Array]:
    """Every jitted piece is traced under the configured matmul precision."""
    with precision_lib.matmul_precision(self.config.precision):
      return self._kernels(x1, x2, params, *extra)

  def _kernels(self, x1, x2, params: Params, *extra) -> dict[str, Array]:
    cfg = self.config
    leaves, treedef = jax.tree.flatten(params)
    paths = blocks_lib.leaf_paths(params)
    if not leaves:
      raise ValueError("params has no leaves: nothing to differentiate")
    for path, leaf in zip(paths, leaves):
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        raise TypeError(f"params leaf {path!r} has dtype "
                        f"{jnp.result_type(leaf)}; only float leaves can be "
                        "differentiated (pass integer state through *extra)")
    if self.block_of is None:
      leaf_blocks = [WHOLE] * len(leaves)
    else:
      leaf_blocks = blocks_lib.assign_blocks(params, self.block_of)

    symmetric = x2 is None
    n1 = chunking.num_examples(x1, "x1")
    if symmetric:
      x2, n2 = x1, n1
    else:
      n2 = chunking.num_examples(x2, "x2")
      if jax.tree.structure(x1) != jax.tree.structure(x2):
        raise ValueError("x1 and x2 must have the same pytree structure, got "
                         f"{jax.tree.structure(x1)} and "
                         f"{jax.tree.structure(x2)}")

    def out_shape(x, n, name):
      out = jax.eval_shape(self.apply_fn, params, x, *extra)
      if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError("apply_fn must return a single array (N, ...), got "
                         f"a {type(out).__name__} pytree")
      if not out.shape or out.shape[0] != n:
        raise ValueError(f"apply_fn(params, {name}) has shape {out.shape}; "
                         f"expected a leading example axis of size {n}")
      return out

    out1 = out_shape(x1, n1, "x1")
    out2 = out1 if symmetric else out_shape(x2, n2, "x2")
    layout = layout_lib.output_layout(out1.shape, out2.shape,
                     cfg.trace_axes, cfg.diagonal_axes)
    out_size = max(math.prod(out1.shape[1:]), math.prod(out2.shape[1:]))
    itemsize = jnp.result_type(out1.dtype, *leaves).itemsize
    groups, chunk = self._groups(leaves, leaf_blocks, paths, out_size,
                                 itemsize, max(n1, n2))
    rows, size1 = chunking.example_chunks(n1, chunk)
    cols, size2 = (rows, size1) if symmetric else chunking.example_chunks(n2, chunk)
    # Mirroring (K_ji = K_ij^T) is valid for the plain kernel, not the sign kernel.
    mirror = symmetric and cfg.kind == PLAIN
    single = len(rows) == 1 and len(cols) == 1
    extra = tuple(extra)
    jc = cfg.implementation == NtkImplementation.JACOBIAN_CONTRACTION

    result, host = {}, {}
    perm = layout.transpose_perm()
    for g, group in enumerate(groups):
      in_group = set(group)
      diff = [leaves[i] for i in group]
      rest = [leaf for i, leaf in enumerate(leaves) if i not in in_group]
      group_blocks = tuple(leaf_blocks[i] for i in group)
      num_params = sum(int(np.size(leaves[i])) for i in group)
      if jc:
        jac = self._piece("jac", treedef, group, len(leaves))
        kw = dict(layout=layout, leaf_blocks=group_blocks, kind=cfg.kind,
                  eps=cfg.eps)
        diag_fn = contraction.jitted_reduction("contract", **kw, symmetrize=mirror)
        off_fn = contraction.jitted_reduction("contract", **kw, symmetrize=False)
      else:
        stack = self._piece("vp_stack", treedef, group, len(leaves))
        kw = dict(layout=layout, block=group_blocks[0])
        diag_fn = contraction.jitted_reduction("vp_reduce", **kw, symmetrize=mirror)
        off_fn = contraction.jitted_reduction("vp_reduce", **kw, symmetrize=False)

      for r, (r0, r1) in enumerate(rows):
        xa = x1 if single else chunking.take_examples(x1, r0, r1, size1)
        jac_a = self._jacobians(jac, diff, rest, xa, extra) if jc else None
        for c, (c0, c1) in enumerate(cols):
          if mirror and c < r:
            continue
          if symmetric and c == r:
            kblock = (diag_fn(jac_a, jac_a) if jc else
                      diag_fn(stack(diff, rest, xa, xa, extra)))
          else:
            xb = x2 if single else chunking.take_examples(x2, c0, c1, size2)
            kblock = (off_fn(jac_a, self._jacobians(jac, diff, rest, xb, extra)) if jc else
                      off_fn(stack(diff, rest, xa, xb, extra)))
          if self.on_chunk is not None:
            self.on_chunk(dict(
                group=g, num_groups=len(groups), num_params=num_params,
                rows=(r0, r1), cols=(c0, c1), chunk_size=(size1, size2),
                jacobian_bytes=chunking.jacobian_bytes(
                    size1, size2, out_size, num_params, itemsize),
                memory_budget_bytes=cfg.memory_budget_bytes))
          for name, k in kblock.items():
            if single:
              result[name] = k if name not in result else result[name] + k
              continue
            k = np.asarray(k)[:r1 - r0, :c1 - c0]
            dtype = k.dtype
            if name not in host:      # chunks accumulate in float64
              host[name] = np.zeros((n1, n2) + layout.shape_tail, np.float64)
            host[name][r0:r1, c0:c1] += k
            if mirror and c != r:
              host[name][c0:c1, r0:r1] += np.transpose(k, perm)
    if not single:
      result = {name: jnp.asarray(k.astype(dtype)) for name, k in host.items()}
    order = list(dict.fromkeys(leaf_blocks))
    return {name: result[name] for name in order}


def as_buckets(length_buckets) -> Optional[tuple[int, ...]]:
  """Validated length buckets, or None."""
  return None if length_buckets is None else lengths_lib.check_buckets(length_buckets)


def make_engine(apply_fn: ApplyFn, *, block_of: Optional[blocks_lib.BlockOf],
                trace_axes, diagonal_axes, implementation, kind: str,
                eps: Optional[float], batch_size: Optional[int],
                memory_budget_bytes: Optional[int], on_chunk: Optional[OnChunk],
                length_buckets, mask_key: str, precision: str = "highest") -> KernelEngine:
  """The engine of one kernel function; arguments as in ``empirical_ntk_fn``.

  ``block_of=None``: the whole kernel under key :data:`WHOLE`; else one kernel
  per parameter block. ``kind``: ``"plain"`` or ``"sign"``
  (:data:`ntkft.typing.KERNEL_KINDS`; sign with smoothing ``eps``).
  """
  return KernelEngine(
      apply_fn,
      EngineConfig(layout_lib.as_axes("trace_axes", trace_axes),
                   layout_lib.as_axes("diagonal_axes", diagonal_axes),
                   as_implementation(implementation), kind,
                   None if eps is None else float(eps), batch_size,
                   memory_budget_bytes, as_buckets(length_buckets), mask_key, precision),
      block_of=block_of, on_chunk=on_chunk)
