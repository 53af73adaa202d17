"""The one Jacobian core of the kernels: a parameter group's model, its per-example Jacobians.

Every kernel implementation of :mod:`ntkft.ntk` differentiates a *group* of the
parameter leaves (all of them, the leaves of one block, or a group packed under a
memory budget by :func:`ntkft.ntk.chunking.pack_leaves`), holding the other
leaves (``rest``) and ``*extra`` fixed. For ``params`` flattened to
``num_leaves`` leaves and ``group`` a sorted tuple of leaf indices:

    apply_group(apply_fn, treedef, group, num_leaves, diff, rest, x, extra)
        = apply_fn(params rebuilt from diff (the group's leaves) and rest, x, *extra)

    per_example(diff, rest, x, extra, apply=...)[l] = d f(x_n) / d diff[l]
        one array (n, *S, *leaf_l) per leaf of the group, S the per-example output shape

``per_example`` is ``jax.vmap`` over the examples of ``jax.jacrev`` of the
single-example function (each example is evaluated as a batch of one, so
examples must not interact: no batch statistics).

The second entry differentiates a whole *pytree* of trainable leaves of a model
``apply(trainable, x, frozen) -> (N, *S)`` whose other leaves travel as the
argument ``frozen`` (``ntkft.peft.KernelSubset.apply_fn``; the κ study's
per-block kernels, ``ntkft.theta0.layer_sets``):

    per_example_tree(trainable, frozen, x, apply=apply)
        = pytree like ``trainable``, leaves (n, *S, *leaf) = d f(x_n) / d leaf

:func:`jitted` (group pieces) and :func:`jitted_tree` (pieces of the tree
model) are the one compile cache of the pieces built on these (the exact
kernels' Jacobians and NTK-vector products in :mod:`ntkft.ntk.engine`, the
Jacobian rows of the budgeted kernels and sketches in
:mod:`ntkft.ntk.jacobian_rows`, the per-block Jacobians of
``ntkft.theta0.layer_sets``): one compiled program per ``apply_fn``, piece,
group and static option, shared by every kernel function built on the same
``apply_fn``. The cache is keyed weakly by ``apply_fn`` and its programs do not
keep ``apply_fn`` alive; an ``apply_fn`` that cannot be weakly referenced gets
the caller's own cache instead.
"""
import functools
import weakref
from typing import Callable, Sequence

import jax

from ntkft.typing import ApplyFn

# apply_fn -> {(piece, treedef, num_leaves, group, static...): jitted piece}.
_JITTED = weakref.WeakKeyDictionary()


def apply_group(apply_fn: ApplyFn, treedef, group: Sequence[int], num_leaves: int, diff, rest,
                x, extra):
  """``apply_fn`` on params rebuilt from the group's leaves ``diff`` and the others ``rest``.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, *S)``.
    treedef: the params' tree structure; ``num_leaves`` its number of leaves.
    group: indices of the leaves in ``diff`` (in order); ``rest`` holds the
      other leaves in order.
    x: inputs (leading example axis); ``extra``: tuple passed on as ``*extra``.
  """
  in_group = set(group)
  diff_it, rest_it = iter(diff), iter(rest)
  leaves = [next(diff_it) if i in in_group else next(rest_it) for i in range(num_leaves)]
  return apply_fn(jax.tree.unflatten(treedef, leaves), x, *extra)


def per_example(diff, rest, x, extra, *, apply: Callable):
  """Per-example Jacobians: list of (n, *S, *leaf_shape), one per leaf of ``diff``.

  ``apply(diff, rest, x, extra)`` is the group's model (:func:`apply_group`
  with its first four arguments bound, as :func:`jitted` binds it).
  """

  def single(d, x_one):
    x_batch = jax.tree.map(lambda a: a[None], x_one)
    return apply(d, rest, x_batch, extra)[0]

  return jax.vmap(jax.jacrev(single), in_axes=(None, 0))(diff, x)


def per_example_tree(trainable, frozen, x, *, apply: Callable):
  """Per-example Jacobians w.r.t. every leaf of ``trainable``: pytree like
  ``trainable``, leaves (n, *S, *leaf_shape).

  ``jax.vmap`` over the examples of ``x`` (``trainable`` and ``frozen`` shared)
  of ``jax.jacrev`` of the single-example function; ``frozen`` is an argument of
  the vmapped function, not a closure.

  Args:
    trainable: the differentiated leaves (any pytree).
    frozen: the model's other leaves, passed through to ``apply``.
    x: inputs (pytree of arrays, leading example axis n).
    apply: ``apply(trainable, x, frozen) -> (N, *S)`` (as :func:`jitted_tree` binds it).
  """

  def single(p, frozen, x_one):
    return apply(p, jax.tree.map(lambda a: a[None], x_one), frozen)[0]

  return jax.vmap(jax.jacrev(single), in_axes=(None, None, 0))(trainable, frozen, x)


def _call_weak(fn_ref, *args):
  """The function behind the weak reference ``fn_ref``, called on ``args``."""
  return fn_ref()(*args)


def _cache_and_model(apply_fn: ApplyFn, fallback_cache: dict) -> tuple[dict, Callable]:
  """(the programs cached for ``apply_fn``, ``apply_fn`` as the programs call it).

  Weakly keyed by ``apply_fn``, whose programs call it through a weak reference
  (the cached programs must not keep the key alive); ``fallback_cache`` and
  ``apply_fn`` itself when ``apply_fn`` cannot be weakly referenced.
  """
  try:
    cache = _JITTED.setdefault(apply_fn, {})
    model = functools.partial(_call_weak, weakref.ref(apply_fn))
  except TypeError:                                   # not weak-referenceable
    cache, model = fallback_cache, apply_fn
  return cache, model


def jitted(apply_fn: ApplyFn, piece: Callable, fallback_cache: dict, *, treedef,
           num_leaves: int, group: tuple[int, ...], **static) -> Callable:
  """``jax.jit(partial(piece, apply=<the group's model>, **static))``, compiled once.

  Args:
    apply_fn: the model; the cache key (weakly).
    piece: a function of arrays taking ``apply=`` (the group's model, i.e.
      :func:`apply_group` bound to apply_fn, treedef, group, num_leaves) and
      the keyword arguments ``static``.
    fallback_cache: the caller's dict, used when ``apply_fn`` cannot be
      weakly referenced.
    treedef, num_leaves, group: as in :func:`apply_group`.
    **static: further static (hashable) keyword arguments of ``piece``.

  Returns:
    The jitted piece, shared by every caller with the same apply_fn and key.
  """
  cache, model = _cache_and_model(apply_fn, fallback_cache)
  group = tuple(group)
  key = (piece, treedef, num_leaves, group) + tuple(sorted(static.items()))
  if key not in cache:
    apply = functools.partial(apply_group, model, treedef, group, num_leaves)
    cache[key] = jax.jit(functools.partial(piece, apply=apply, **static))
  return cache[key]


def jitted_tree(apply_fn: ApplyFn, piece: Callable, fallback_cache: dict,
                **static) -> Callable:
  """``jax.jit(partial(piece, apply=apply_fn, **static))``, compiled once.

  The tree model's counterpart of :func:`jitted`, in the same cache: ``piece``
  (e.g. :func:`per_example_tree`) takes ``apply=`` the model itself,
  ``apply_fn(trainable, x, frozen)``, called through a weak reference.

  Args:
    apply_fn: the model; the cache key (weakly).
    piece: a function of arrays taking ``apply=`` and the keyword arguments ``static``.
    fallback_cache: the caller's dict, used when ``apply_fn`` cannot be
      weakly referenced.
    **static: further static (hashable) keyword arguments of ``piece``.

  Returns:
    The jitted piece, shared by every caller with the same apply_fn and key.
  """
  cache, model = _cache_and_model(apply_fn, fallback_cache)
  key = ("tree", piece) + tuple(sorted(static.items()))
  if key not in cache:
    cache[key] = jax.jit(functools.partial(piece, apply=model, **static))
  return cache[key]
