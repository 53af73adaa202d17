"""Deterministic subsets of :class:`~ntkft.data.readers.Examples`."""

from __future__ import annotations

import numpy as np

from ntkft.data.readers import Examples
from ntkft.data.tasks import get_task


def _stratified_counts(class_sizes: np.ndarray, n: int) -> np.ndarray:
  """Per-class sample counts summing to n, proportional to class_sizes.

  Largest-remainder (Hamilton) rounding of ``n * size_c / N``; ties in the
  remainder go to the lower class id. Counts never exceed the class size.
  """
  total = class_sizes.sum()
  quota = n * class_sizes / total
  counts = np.floor(quota).astype(np.int64)
  remainder = quota - counts
  # Stable sort on -remainder: equal remainders keep class-id order.
  order = np.argsort(-remainder, kind="stable")
  for c in order[: n - counts.sum()]:
    counts[c] += 1
  return counts


def subsample(
    examples: Examples, n: int, seed: int, stratified: bool = False
) -> Examples:
  """Picks ``n`` examples without replacement, deterministically from ``seed``.

  The chosen examples keep their original (file) order; shuffling is the
  batcher's job.

  Args:
    examples: the pool, N examples.
    n: subset size, 1 <= n <= N.
    seed: seed of ``np.random.default_rng``.
    stratified: keep class proportions: class c gets ``n * N_c / N`` examples
      rounded by largest remainder (classification only).

  Returns:
    The subset as :class:`Examples` (``source`` unchanged).

  Raises:
    ValueError: n out of range, or ``stratified`` for a regression task.
  """
  size = len(examples)
  if isinstance(n, bool) or int(n) != n or not 1 <= n <= size:
    raise ValueError(
        f"subset size n={n} must be an integer in [1, {size}] "
        f"({examples.task} {examples.split})"
    )
  n = int(n)
  rng = np.random.default_rng(seed)
  if not stratified:
    chosen = rng.choice(size, size=n, replace=False)
    return examples.select(np.sort(chosen))
  spec = get_task(examples.task)
  if spec.is_regression or not np.issubdtype(examples.labels.dtype, np.integer):
    raise ValueError(
        "stratified subsampling needs class labels; task "
        f"{examples.task!r} is a regression task"
    )
  labels = examples.labels
  classes = np.unique(labels)
  class_sizes = np.array([(labels == c).sum() for c in classes])
  counts = _stratified_counts(class_sizes, n)
  chosen = []
  for c, count in zip(classes, counts):
    members = np.flatnonzero(labels == c)
    chosen.append(rng.choice(members, size=count, replace=False))
  return examples.select(np.sort(np.concatenate(chosen)))
