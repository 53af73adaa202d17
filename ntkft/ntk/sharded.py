"""The empirical NTK with the x1 examples sharded over a device mesh.

Same kernel and output layout as :func:`ntkft.ntk.empirical_ntk_fn` (see
``ntkft.ntk.empirical``):

    K(x1_n, x2_m)[s, s'] = sum_p J(x1_n)[s, p] J(x2_m)[s', p]

(normalized trace over ``trace_axes``, diagonal over ``diagonal_axes``). Rows
are computed in parallel: each host-side row chunk of ``D * rows_per_device``
x1 examples is split along the ``"data"`` mesh axis (D devices), the x2
examples, params and ``*extra`` are replicated, and one jitted program computes
the per-example Jacobians ``J(x1)`` of each device's rows (the one Jacobian core,
:func:`ntkft.ntk.jacobians.per_example`), ``J(x2)`` and their leaf-by-leaf
contraction (:func:`ntkft.ntk.contraction.contract`); the (rows, N2,
...) block comes back replicated (gathered) and the blocks are concatenated on
the host. The last row chunk is padded (repeating its first example) so every
call has the same shapes; the padding is sliced off.

Every device computes all of ``J(x2)``; use it when x2 is small relative to x1
(e.g. K(test, train) with x1=test), or split x2 into column blocks yourself.
"""
import functools
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ntkft import xla_workarounds
from ntkft.ntk import chunking, contraction
from ntkft.ntk import jacobians as jacobians_lib
from ntkft.ntk import layout as layout_lib
from ntkft.typing import PLAIN, ApplyFn, Array, Params

DATA = "data"


def _kernel(params, x1, x2, extra, *, apply_fn, layout):
  """K block (n1, n2, ...) of x1 rows (sharded) against all of x2."""
  leaves, treedef = jax.tree.flatten(params)
  apply = functools.partial(jacobians_lib.apply_group, apply_fn, treedef,
                            tuple(range(len(leaves))), len(leaves))
  jac1 = jacobians_lib.per_example(leaves, [], x1, extra, apply=apply)
  jac2 = jacobians_lib.per_example(leaves, [], x2, extra, apply=apply)
  out = contraction.contract(jac1, jac2, layout=layout, leaf_blocks=["k"] * len(leaves),
                             kind=PLAIN, eps=None, symmetrize=False)
  return out["k"]


def sharded_ntk_fn(apply_fn: ApplyFn, mesh: jax.sharding.Mesh,
                   trace_axes=(-1,), diagonal_axes=(),
                   rows_per_device: Optional[int] = None) -> Callable[..., Array]:
  """Returns ``ntk_fn(x1, x2, params, *extra) -> K`` computed across ``mesh``.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, *S)``; examples must not
      interact.
    mesh: a mesh with a ``"data"`` axis (``ntkft.train.mesh.make_mesh``).
    trace_axes, diagonal_axes: as in ``empirical_ntk_fn``.
    rows_per_device: x1 examples per device per call (None: all of x1 in one
      call, i.e. ceil(N1 / D) per device).

  Returns:
    ``ntk_fn``; ``x2=None`` means x1. ``K`` is a numpy array with the layout
    of ``empirical_ntk_fn`` (e.g. (N1, N2) for ``trace_axes=(-1,)``).

  Raises:
    ValueError: a mesh without ``"data"``, bad sizes or axes.
  """
  xla_workarounds.check_batched_jacobians()  # raises if XLA miscompiles Jacobians here
  if DATA not in mesh.axis_names:
    raise ValueError(f"sharded_ntk_fn needs a mesh with a {DATA!r} axis, got {mesh.axis_names}")
  d = int(mesh.shape[DATA])
  if rows_per_device is not None and rows_per_device < 1:
    raise ValueError(f"rows_per_device must be >= 1, got {rows_per_device}")
  trace_axes = layout_lib.as_axes("trace_axes", trace_axes)
  diagonal_axes = layout_lib.as_axes("diagonal_axes", diagonal_axes)
  rows_shd, rep = NamedSharding(mesh, P(DATA)), NamedSharding(mesh, P())
  compiled = {}

  def ntk_fn(x1, x2, params: Params, *extra) -> np.ndarray:
    if x2 is None:
      x2 = x1
    n1 = chunking.num_examples(x1, "x1")
    chunking.num_examples(x2, "x2")
    out1 = jax.eval_shape(apply_fn, params, x1, *extra)
    out2 = jax.eval_shape(apply_fn, params, x2, *extra)
    layout = layout_lib.output_layout(out1.shape, out2.shape, trace_axes, diagonal_axes)
    per_dev = -(-n1 // d) if rows_per_device is None else rows_per_device
    chunk = per_dev * d
    if layout not in compiled:
      compiled[layout] = jax.jit(
          functools.partial(_kernel, apply_fn=apply_fn, layout=layout),
          in_shardings=(rep, rows_shd, rep, rep), out_shardings=rep)
    fn = compiled[layout]
    params_r, x2_r, extra_r = jax.device_put((params, x2, tuple(extra)), rep)
    blocks = []
    for start in range(0, n1, chunk):
      stop = min(start + chunk, n1)
      rows = chunking.take_examples(x1, start, stop, chunk)
      k = fn(params_r, jax.device_put(rows, rows_shd), x2_r, extra_r)
      blocks.append(np.asarray(k)[:stop - start])
    return np.concatenate(blocks, axis=0)

  return ntk_fn
