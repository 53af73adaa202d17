"""Per-example Jacobian rows of a parameter group, in microbatches, length-cut.

The building block of the memory-budgeted kernels (:mod:`ntkft.ntk.budgeted`)
and of the sketches (:mod:`ntkft.ntk.sketch`): for a model
``f(params, x, *extra) -> (N, O)`` and a group of parameter leaves it returns

    rows(x) : (n * O, width)   row n * O + o = transform(d f(x_n)_o / d group)

computed ``microbatch`` examples at a time by the one Jacobian core
(:func:`ntkft.ntk.jacobians.per_example`, compiled once per apply_fn by
:func:`ntkft.ntk.jacobians.jitted`),
each microbatch cut to the shortest length bucket holding its real tokens
(:mod:`ntkft.ntk.lengths`; examples are processed in the order of
:func:`length_order`, so every microbatch has similar lengths), written in place
into one preallocated array (buffer donation: no second copy). ``transform``
maps a microbatch's flattened Jacobian ``(m, O, P_group)`` (and arrays passed
as jit arguments) to ``(m, O, width)``
(identity for exact kernels, a count sketch for :mod:`ntkft.ntk.sketch`).
:func:`rows_gram` contracts two blocks of rows into a kernel block, in the
layout of ``trace_axes`` (-1,) or () (:func:`ntkft.ntk.layout.is_traced`).

Sparse lookup tables (word embeddings): the Jacobian of ``f(x)`` with respect
to a table ``E (V, d)`` read as ``E[ids]`` is nonzero only in the rows of the
example's tokens: ``d f / d E[v] = sum_{t: ids_t = v} g_t`` with ``g_t`` the
gradient with respect to the looked-up vector at position ``t``.
:meth:`JacobianRows.lookup_gradients` returns ``g`` (n, O, T, d) by
differentiating the model with the table replaced by the example's own rows
``E[ids_n]`` (T, d) and the ids by ``0..T-1``; :func:`scatter_rows` then sums
``g`` into the rows of a block of vocabulary ids. Exact if the model uses
``x[ids_key]`` only through that lookup (checked on the first microbatch).

All tracing happens under ``jax.default_matmul_precision(precision)``, so every
``dot_general`` of the model and of the contraction carries that precision.
"""
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ntkft import xla_workarounds
from ntkft.ntk import jacobians as jacobians_lib
from ntkft.ntk import lengths as lengths_lib
from ntkft.ntk.precision import check_precision, matmul_precision


def length_order(x, buckets: Optional[Sequence[int]], mask_key: str) -> np.ndarray:
  """Example order used for the rows: by length bucket (stable), or 0..n-1."""
  n = jax.tree.leaves(x)[0].shape[0]
  if buckets is None:
    return np.arange(n)
  lengths = lengths_lib.example_lengths(x, mask_key)
  full = np.asarray(x[mask_key]).shape[1]
  edges = np.asarray(sorted({min(b, full) for b in buckets} | {full}))
  return np.argsort(np.searchsorted(edges, lengths, side="left"), kind="stable")


def _dense_piece(diff, rest, x, extra, transform_args, *, apply, transform):
  """(m, O, width): per-example Jacobians of the group, flattened and transformed."""
  jac = jacobians_lib.per_example(diff, rest, x, extra, apply=apply)
  m, o = jac[0].shape[:2]
  flat = jnp.concatenate([j.reshape(m, o, -1) for j in jac], axis=-1)
  return flat if transform is None else transform(flat, *transform_args)


def _lookup_piece(table, rest, x, extra, *, apply, ids_key):
  """(m, O, T, d): gradients with respect to the looked-up rows E[ids_t]."""
  rows = jnp.take(table, x[ids_key], axis=0)          # (m, T, d)
  positions = jnp.arange(x[ids_key].shape[1], dtype=x[ids_key].dtype)

  def single(r, x_one):
    xb = jax.tree.map(lambda a: a[None], x_one)
    xb = {**xb, ids_key: positions[None]}
    return apply([r], rest, xb, extra)[0]

  return jax.vmap(jax.jacrev(single))(rows, x)


def _lookup_forward(table, rest, x, extra, *, apply, ids_key):
  """f(x) with the table replaced by each example's rows (the check of the trick)."""
  rows = jnp.take(table, x[ids_key], axis=0)
  positions = jnp.arange(x[ids_key].shape[1], dtype=x[ids_key].dtype)

  def single(r, x_one):
    xb = {**jax.tree.map(lambda a: a[None], x_one), ids_key: positions[None]}
    return apply([r], rest, xb, extra)[0]

  return jax.vmap(single)(rows, x)


def _write(store, piece, start):
  """store[start:start + m] = piece (in place: the store is donated)."""
  return jax.lax.dynamic_update_slice(store, piece.astype(store.dtype),
                                      (start,) + (0,) * (store.ndim - 1))


_write_jit = jax.jit(_write, donate_argnums=0)
_PIECES = {"dense": _dense_piece, "lookup": _lookup_piece, "lookup_forward": _lookup_forward}


class JacobianRows:
  """Per-example Jacobian rows of ``apply_fn`` for fixed params, extra and options.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, O)``; examples independent.
    params: the differentiated pytree; ``extra``: passed through.
    precision: matmul precision of every traced matmul (:data:`PRECISIONS`).
    length_buckets: bucket lengths for cutting padding, or None.
    mask_key: padding-mask key of dict inputs (for ``length_buckets``).
  """

  def __init__(self, apply_fn: Callable, params, extra: tuple, precision: str,
               length_buckets: Optional[Sequence[int]], mask_key: str):
    xla_workarounds.check_batched_jacobians()  # raises if XLA miscompiles Jacobians here
    self.apply_fn = apply_fn
    self.leaves, self.treedef = jax.tree.flatten(params)
    self.extra = tuple(extra)
    self.precision = check_precision(precision)
    self.buckets = None if length_buckets is None else lengths_lib.check_buckets(length_buckets)
    self.mask_key = mask_key
    self._jitted = {}                  # the compile cache if apply_fn is not weak-referenceable

  def _fn(self, kind: str, group: Sequence[int], **static):
    """Jitted piece of a leaf group, shared by every user of the same apply_fn (compiled once)."""
    return jacobians_lib.jitted(self.apply_fn, _PIECES[kind], self._jitted,
                                treedef=self.treedef, num_leaves=len(self.leaves),
                                group=tuple(group), **static)

  def _microbatches(self, x, order: np.ndarray, microbatch: int):
    """Yields (start, count, x_mb) over ``order``: padded to ``microbatch``, cut to a bucket."""
    n = len(order)
    full = None
    if self.buckets is not None:
      full = np.asarray(x[self.mask_key]).shape[1]
      lengths = lengths_lib.example_lengths(x, self.mask_key)
    for start in range(0, n, microbatch):
      idx = order[start:start + microbatch]
      count = len(idx)
      idx = np.concatenate([idx, np.repeat(idx[:1], microbatch - count)])
      xb = jax.tree.map(lambda a, idx=idx: jnp.asarray(a)[idx], x)
      if full is not None:
        longest = int(lengths[idx].max())
        length = min([b for b in self.buckets if b >= longest] + [full])
        xb = lengths_lib.cut(xb, length, full, microbatch)
      yield start, count, xb

  def dense(self, x, order: np.ndarray, group: Sequence[int], microbatch: int,
            transform: Optional[Callable] = None, width: Optional[int] = None,
            out_size: int = 1, dtype=jnp.float32, transform_args: tuple = ()) -> jax.Array:
    """Rows ``(len(order) padded up to a multiple of microbatch) * O x width``.

    Row block ``i`` holds example ``order[i]``; the padded tail repeats an
    example and must be sliced off by the caller. ``transform``/``width``:
    see the module docstring (None: the plain Jacobian, width = P_group);
    ``transform(flat, *transform_args)``, the arrays passed as jit arguments.
    """
    group = tuple(group)
    diff = [self.leaves[i] for i in group]
    rest = [leaf for i, leaf in enumerate(self.leaves) if i not in set(group)]
    width = sum(int(np.size(d)) for d in diff) if width is None else width
    padded = -(-len(order) // microbatch) * microbatch
    fn = self._fn("dense", group, transform=transform)
    with matmul_precision(self.precision):
      store = jnp.zeros((padded, out_size, width), dtype)
      for start, _, xb in self._microbatches(x, order, microbatch):
        store = _write_jit(store, fn(diff, rest, xb, self.extra, transform_args), start)
    return store.reshape(padded * out_size, width)

  def lookup_gradients(self, x, order: np.ndarray, leaf: int, ids_key: str, microbatch: int,
                       out_size: int, check: bool = True) -> np.ndarray:
    """(len(order), O, T, d) ``g`` (table dtype): gradients w.r.t. looked-up rows, 0 past a cut."""
    if not isinstance(x, dict) or ids_key not in x:
      raise ValueError(f"sparse table needs dict inputs with key {ids_key!r}")
    table = self.leaves[leaf]
    rest = [l for i, l in enumerate(self.leaves) if i != leaf]
    length = np.asarray(x[ids_key]).shape[1]
    out = np.zeros((len(order), out_size, length, table.shape[-1]), table.dtype)
    fn = self._fn("lookup", (leaf,), ids_key=ids_key)
    with matmul_precision(self.precision):
      for start, count, xb in self._microbatches(x, order, microbatch):
        if check:
          self._check_lookup(table, rest, xb, leaf, ids_key)
          check = False
        g = np.asarray(fn(table, rest, xb, self.extra))[:count]
        out[start:start + count, :, :g.shape[2]] = g
    return out

  def _check_lookup(self, table, rest, xb, leaf, ids_key):
    params = jax.tree.unflatten(self.treedef, self.leaves)
    want = np.asarray(self.apply_fn(params, xb, *self.extra), np.float64)
    got = np.asarray(self._fn("lookup_forward", (leaf,), ids_key=ids_key)(
        table, rest, xb, self.extra), np.float64)
    scale = max(np.abs(want).max(), 1e-30)
    if np.abs(got - want).max() > 1e-3 * scale:
      raise ValueError(
          f"sparse table leaf #{leaf}: the model reads x[{ids_key!r}] other than through "
          "the table lookup (outputs change when the ids are replaced by positions); "
          "differentiate that table densely instead")


def scatter_rows(g: np.ndarray, ids: np.ndarray, vocab_block: np.ndarray) -> jax.Array:
  """Jacobian rows of a table restricted to ``vocab_block``: (n * O, len(block) * d).

  ``J[n, o, u, :] = sum_{t: ids[n, t] = vocab_block[u]} g[n, o, t, :]``.

  Args:
    g: (n, O, T, d) gradients with respect to the looked-up rows.
    ids: (n, T) token ids of the same examples.
    vocab_block: sorted unique ids.
  """
  n, o, t, d = g.shape
  pos = np.searchsorted(vocab_block, ids)
  pos = np.minimum(pos, len(vocab_block) - 1)
  hit = vocab_block[pos] == ids
  pos = np.where(hit, pos, len(vocab_block))          # misses go to a dump row
  return _scatter(jnp.asarray(g), jnp.asarray(pos), len(vocab_block))


@functools.partial(jax.jit, static_argnums=2)
def _scatter(g, pos, num_rows):
  n, o, t, d = g.shape
  rows = jnp.zeros((n, num_rows + 1, o, d), g.dtype)
  rows = rows.at[jnp.arange(n)[:, None], pos].add(jnp.transpose(g, (0, 2, 1, 3)))
  return jnp.transpose(rows[:, :num_rows], (0, 2, 1, 3)).reshape(n * o, num_rows * d)


_PRECISION = {"default": None, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}


def _rows_gram(a, b, *, out_size, traced, precision):
  """Kernel block of two blocks of Jacobian rows (jitted as :data:`rows_gram`).

  Args:
    a: (na O, P) rows, row n O + o of example n, output o; b: (nb O, P).
    out_size: O. traced: the layout (:func:`ntkft.ntk.layout.is_traced`).
    precision: the matmul precision name (:data:`ntkft.ntk.precision.PRECISIONS`).

  Returns:
    (na, nb) = (1/O) sum_o a[n, o] . b[m, o] if traced, else (na, nb, O, O)
    a[n, o] . b[m, o']; in a's dtype.
  """
  k = jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=_PRECISION[precision],
                          preferred_element_type=a.dtype)
  k = k.reshape(a.shape[0] // out_size, out_size, b.shape[0] // out_size, out_size)
  if traced:
    return jnp.einsum("aobo->ab", k, precision=_PRECISION[precision]) / out_size
  return jnp.transpose(k, (0, 2, 1, 3))


rows_gram = jax.jit(_rows_gram, static_argnames=("out_size", "traced", "precision"))
