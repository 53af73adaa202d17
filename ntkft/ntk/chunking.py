"""Memory planning for chunked kernel computation.

A kernel block between an example chunk of x1 and one of x2 holds both
per-example Jacobians (or, for NTK-vector products, the equally large stack of
vector-Jacobian products of the x2 chunk and the jvp tangents), so its memory is

    jacobian_bytes = (c1 + c2) * O * P * itemsize,

with ``c1``, ``c2`` the chunk sizes, ``O`` the per-example output size and
``P`` the number of parameters differentiated at once. :func:`plan_chunks`
picks the largest example chunk ``c`` with ``2 c O P itemsize <= budget``; when
not even one example fits, :func:`plan_param_groups` splits the parameter
leaves into groups differentiated one at a time (the kernel is the sum over
groups; :func:`pack_leaves` is the one greedy packer of all the kernels).
Activations kept for the backward pass are not counted: leave headroom.

Example chunks: :func:`example_chunks` cuts N examples into ranges of the
chunk size, and :func:`take_examples` pads the last range (repeating its first
example) so every chunk has the same shapes and compiles once.
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_positive(name: str, value: int) -> int:
  """``value`` if it is an int >= 1, else ValueError naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return value


def jacobian_bytes(chunk1: int, chunk2: int, out_size: int, num_params: int,
                   itemsize: int) -> int:
  """Bytes of the two Jacobians of one kernel block: (c1 + c2) O P itemsize."""
  return (chunk1 + chunk2) * out_size * num_params * itemsize


def max_chunk(out_size: int, num_params: int, itemsize: int,
              memory_budget_bytes: int) -> int:
  """Largest c with 2 c O P itemsize <= budget (0 if even c = 1 does not fit)."""
  per_example = 2 * out_size * num_params * itemsize
  return memory_budget_bytes // max(per_example, 1)


def plan_chunks(num_examples: int, out_size: int, num_params: int,
                itemsize: int, memory_budget_bytes: int) -> int:
  """Largest example-chunk size whose two chunk Jacobians fit the budget.

  Args:
    num_examples: examples on the larger side (max(N1, N2)); caps the result.
    out_size: O, elements of one example's output (e.g. number of classes).
    num_params: P, parameters differentiated at once.
    itemsize: bytes per Jacobian element (4 for float32).
    memory_budget_bytes: budget for the two chunk Jacobians.

  Returns:
    ``c = min(num_examples, budget // (2 O P itemsize))`` >= 1.

  Raises:
    ValueError: non-positive sizes, or a single example does not fit (use
      parameter groups, :func:`plan_param_groups`).
  """
  for name, v in (("num_examples", num_examples), ("out_size", out_size),
                  ("num_params", num_params), ("itemsize", itemsize),
                  ("memory_budget_bytes", memory_budget_bytes)):
    check_positive(name, v)
  c = max_chunk(out_size, num_params, itemsize, memory_budget_bytes)
  if c < 1:
    raise ValueError(
        f"plan_chunks: one example needs {2 * out_size * num_params * itemsize}"
        f" bytes of Jacobians (2 x O={out_size} x P={num_params} x "
        f"{itemsize} B) > memory_budget_bytes={memory_budget_bytes}; split the "
        "parameters into groups")
  return min(c, num_examples)


def pack_leaves(leaf_sizes: Sequence[int], cap: int, leaves: Optional[Sequence[int]] = None,
                labels: Optional[Sequence[str]] = None) -> list[tuple[int, ...]]:
  """The one greedy leaf packer: consecutive leaves into groups of at most ``cap`` parameters.

  Walks ``leaves`` in order and starts a new group when the next leaf would
  take the current group above ``cap`` parameters, or when its label differs
  from the current group's. A leaf larger than ``cap`` gets a group of its own
  (callers that cannot hold it check first). Used by every kernel that
  differentiates the parameters group by group: :func:`plan_param_groups`
  (exact kernels), :func:`ntkft.ntk.budgeted.plan_budget`, the count sketch.

  Args:
    leaf_sizes: parameters per leaf, indexed by leaf.
    cap: most parameters in a group (of more than one leaf).
    leaves: the leaf indices to pack, in order (None: all, 0..len-1).
    labels: optional label per leaf (indexed like ``leaf_sizes``); a group
      never mixes labels.

  Returns:
    Tuples of leaf indices, in order, covering ``leaves`` exactly once.
  """
  groups, current, current_size, current_label = [], [], 0, None
  for i in range(len(leaf_sizes)) if leaves is None else leaves:
    label = labels[i] if labels is not None else None
    if current and (current_size + leaf_sizes[i] > cap or label != current_label):
      groups.append(tuple(current))
      current, current_size = [], 0
    current.append(i)
    current_size += leaf_sizes[i]
    current_label = label
  if current:
    groups.append(tuple(current))
  return groups


def plan_param_groups(leaf_sizes: Sequence[int], out_size: int, itemsize: int,
                      memory_budget_bytes: int,
                      leaf_names: Optional[Sequence[str]] = None,
                      boundaries: Optional[Sequence[str]] = None
                      ) -> list[tuple[int, ...]]:
  """Greedy split of consecutive leaves into groups fitting with one example.

  Each group's parameter count P_g satisfies 2 O P_g itemsize <= budget
  (:func:`pack_leaves` with that cap).

  Args:
    leaf_sizes: parameters per leaf, in leaf order.
    out_size: O.
    itemsize: bytes per element.
    memory_budget_bytes: the budget.
    leaf_names: leaf paths, for the error message.
    boundaries: optional label per leaf; a group never mixes labels (used to
      keep each group inside one block).

  Returns:
    Tuples of leaf indices, covering every leaf exactly once.

  Raises:
    ValueError: a single leaf does not fit the budget.
  """
  cap = memory_budget_bytes // (2 * out_size * itemsize)
  for i, size in enumerate(leaf_sizes):
    if size > cap:
      name = leaf_names[i] if leaf_names is not None else f"#{i}"
      raise ValueError(
          f"memory_budget_bytes={memory_budget_bytes} is too small: leaf "
          f"{name!r} alone ({size} params) needs {2 * out_size * size * itemsize}"
          " bytes of Jacobians for one example")
  return pack_leaves(leaf_sizes, cap, labels=boundaries)


def num_examples(x, name: str) -> int:
  """The common leading-axis size of the leaves of ``x``; ``name`` for errors."""
  flat, _ = jax.tree_util.tree_flatten_with_path(x)
  if not flat:
    raise ValueError(f"{name} has no array leaves")
  sizes = {}
  for path, leaf in flat:
    shape = np.shape(leaf)
    if not shape:
      raise ValueError(f"{name}{jax.tree_util.keystr(path)} is a scalar; "
                       "inputs need a leading example axis")
    sizes[jax.tree_util.keystr(path)] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(f"{name} leaves disagree on the number of examples "
                     f"(leading axis): {sizes}")
  n = next(iter(sizes.values()))
  if n == 0:
    raise ValueError(f"{name} has zero examples")
  return n


def take_examples(x, start: int, stop: int, size: int):
  """Examples [start, stop) of every leaf, padded to ``size`` with row start."""

  def take(a):
    xp = np if isinstance(a, np.ndarray) else jnp
    part = a[start:stop]
    if stop - start < size:
      pad = xp.repeat(a[start:start + 1], size - (stop - start), axis=0)
      part = xp.concatenate([part, pad], axis=0)
    return part

  return jax.tree.map(take, x)


def example_chunks(n: int, chunk: Optional[int]
                   ) -> tuple[list[tuple[int, int]], int]:
  """[start, stop) ranges of ``chunk`` examples covering n, and the chunk size.

  ``chunk=None`` (or >= n): one range (0, n) of size n.
  """
  if chunk is None or chunk >= n:
    return [(0, n)], n
  return [(s, min(s + chunk, n)) for s in range(0, n, chunk)], chunk
