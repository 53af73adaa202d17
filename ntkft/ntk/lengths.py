"""Length buckets: per-example Jacobians of padded token batches without the padding.

A batch of token sequences is padded to one length ``L``; most of it is often
padding (SST-2 sentences average ~13 MiniLM tokens, so at ``L = 64`` about 2/3
of every matmul is spent on padding). For a model whose output for an example
does not depend on how far it is padded — right padding, attention masked on
padding keys, pooling over real tokens (every encoder and decoder in
:mod:`ntkft.models`) — its Jacobian does not either. So a chunk of examples can
be split into groups by *bucket*, the smallest of ``buckets`` at least as long
as the example's real length, each group cut to its bucket length, its
Jacobians computed, and the rows put back in chunk order: the kernel is
unchanged (``tests/ntk/lengths_test.py`` checks it) and the work drops roughly
in proportion to the real lengths.

Conventions:

* The real length of example ``n`` is one past its last nonzero entry of
  ``x[mask_key][n]`` (so left padding or holes in the mask are never cut).
* Leaves whose first two axes are ``(n, L)`` (``L`` the mask's length) are cut
  along axis 1; other leaves are passed whole.
* Group sizes are padded (repeating the group's first example) to the next
  power of two, at most the chunk size, so a run compiles at most
  ``len(buckets) x log2(chunk)`` shapes.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
  """Validated ``buckets``: positive ints, strictly increasing."""
  try:
    out = tuple(int(b) for b in buckets)
  except (TypeError, ValueError):
    raise ValueError(f"length_buckets must be a sequence of ints, got {buckets!r}") from None
  if not out or any(b <= 0 for b in out) or list(out) != sorted(set(out)):
    raise ValueError(f"length_buckets must be positive and strictly increasing, got {buckets!r}")
  return out


def _mask(x, mask_key: str) -> np.ndarray:
  if not isinstance(x, dict) or mask_key not in x:
    keys = sorted(x) if isinstance(x, dict) else type(x).__name__
    raise ValueError(f"length buckets need the inputs to be a dict with a {mask_key!r} "
                     f"entry (the padding mask); got {keys}")
  mask = np.asarray(x[mask_key])
  if mask.ndim != 2:
    raise ValueError(f"x[{mask_key!r}] must be (examples, length), got shape {mask.shape}")
  return mask


def example_lengths(x, mask_key: str = "attention_mask") -> np.ndarray:
  """(n,) one past the last nonzero mask entry of each example (at least 1)."""
  mask = _mask(x, mask_key) != 0
  last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
  return np.where(mask.any(axis=1), last, 1)


def bucket_groups(lengths: np.ndarray, buckets: Sequence[int],
                  full_length: int) -> list[tuple[int, np.ndarray]]:
  """[(bucket length, example indices)] for the buckets in use, shortest first.

  Buckets longer than ``full_length`` are capped at it, and examples longer than
  every bucket go to ``full_length`` (uncut).
  """
  edges = sorted({min(b, full_length) for b in buckets} | {full_length})
  which = np.searchsorted(np.asarray(edges), lengths, side="left")
  return [(edges[k], np.nonzero(which == k)[0]) for k in np.unique(which)]


def cut(x, length: int, full_length: int, num_examples: int):
  """Leaves with leading axes (num_examples, full_length) cut to ``[:, :length]``."""

  def one(a):
    shape = np.shape(a)
    if len(shape) >= 2 and shape[0] == num_examples and shape[1] == full_length:
      return a[:, :length]
    return a

  return jax.tree.map(one, x)


def _padded_size(count: int, cap: int) -> int:
  return min(1 << (count - 1).bit_length(), cap)


def bucketed(per_example: Callable, x, buckets: Sequence[int],
             mask_key: str = "attention_mask"):
  """``per_example(x)`` evaluated bucket by bucket, rows back in the order of ``x``.

  Args:
    per_example: ``x_chunk -> pytree`` of arrays with a leading example axis
      (e.g. the per-example Jacobians of a chunk), row ``i`` depending only on
      example ``i``.
    x: the chunk, a dict of arrays with a leading example axis, holding the
      padding mask at ``mask_key``.
    buckets: the bucket lengths (see :func:`check_buckets`).
    mask_key: the padding mask's key in ``x``.

  Returns:
    The pytree ``per_example(x)`` would return, computed on length-cut groups.
  """
  mask = _mask(x, mask_key)
  n, full = mask.shape
  groups = bucket_groups(example_lengths(x, mask_key), buckets, full)
  if len(groups) == 1 and groups[0][0] == full:
    return per_example(x)
  parts, order = [], []
  for length, idx in groups:
    size = _padded_size(len(idx), n)
    rows = np.concatenate([idx, np.repeat(idx[:1], size - len(idx))])
    group = jax.tree.map(lambda a, rows=rows: a[rows], x)
    out = per_example(cut(group, length, full, size))
    keep = len(idx)
    parts.append(jax.tree.map(lambda a, k=keep: a[:k], out))
    order.append(idx)
  inverse = np.argsort(np.concatenate(order))
  return jax.tree.map(lambda *a: jnp.concatenate(a)[inverse], *parts)
