"""Fixed-size batches with length buckets.

A batch is a dict of numpy arrays with fixed keys::

  input_ids       int32   (B, L)  pad_id beyond each sequence
  attention_mask  int32   (B, L)  1 for real tokens, 0 for padding
  token_type_ids  int32   (B, L)  0 beyond each sequence
  labels          int32 (B,) class ids, or float32 (B,) scores
  weights         float32 (B,)    1 for real examples, 0 for padding rows
  index           int32   (B,)    position in the Encoded data; -1: padding row

Every batch has exactly ``batch_size`` rows, so jit compiles one program per
bucket length. The last, partial batch is filled with padding rows
(input_ids = pad_id, attention_mask 1 at position 0 only so that no row is
fully masked, label 0, weight 0, index -1). Losses and metrics must weight
rows by ``weights``.

L is the smallest bucket length that fits the longest example of the batch.
The effective buckets are ``sorted({b in buckets : b < max_len} | {max_len})``,
so ``max_len`` is always the last bucket; ``buckets=None`` pads everything to
``max_len`` (no bucketing).

Training order (:func:`train_batches`) is a pure function of
``(seed, epoch)``: shuffle with ``np.random.default_rng([seed, epoch])``,
sort windows of ``50 * batch_size`` shuffled examples by length, cut them into
batches, and shuffle the batch order with the same generator. The batch at a
global step is therefore recomputable (:func:`batch_at_step`,
:class:`TrainStream`), which makes resuming from a checkpoint exact.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ntkft.data.tokenization import Encoded

BATCH_KEYS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "weights",
    "index",
)
WINDOW_BATCHES = 50  # sort windows hold WINDOW_BATCHES * batch_size examples


def bucket_lengths(
    buckets: Sequence[int] | None, max_len: int
) -> tuple[int, ...]:
  """Effective buckets: ``buckets`` below ``max_len``, then ``max_len``."""
  if int(max_len) != max_len or max_len < 1:
    raise ValueError(f"max_len={max_len} must be a positive integer")
  if buckets is None:
    return (int(max_len),)
  bad = [b for b in buckets if int(b) != b or b < 1]
  if bad:
    raise ValueError(f"bucket lengths must be positive integers, got {bad}")
  return tuple(
      sorted({int(b) for b in buckets if b < max_len} | {int(max_len)})
  )


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Batches per epoch: ``ceil(n / batch_size)`` (nothing is dropped)."""
  if n < 1 or batch_size < 1:
    raise ValueError(
        f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}"
    )
  return -(-n // batch_size)


def _check(encoded: Encoded, batch_size: int, max_len: int) -> None:
  if len(encoded) == 0:
    raise ValueError("no examples to batch")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be a positive integer")
  longest = int(encoded.lengths.max())
  if longest > max_len:
    raise ValueError(
        f"an example has {longest} tokens > max_len={max_len}; "
        "encode with the same max_len"
    )
  if encoded.lengths.min() < 1:
    raise ValueError("empty token sequence in encoded data")


def make_batch(
    encoded: Encoded,
    indices: np.ndarray,
    batch_size: int,
    buckets: Sequence[int] | None,
    max_len: int,
) -> dict[str, np.ndarray]:
  """Assembles one padded batch from the examples at ``indices``.

  Args:
    encoded: the dataset.
    indices: (n,) positions into ``encoded``, 1 <= n <= batch_size.
    batch_size: rows of the batch (B); rows n..B-1 are padding rows.
    buckets: bucket lengths or None (see module docstring).
    max_len: the longest allowed sequence (last bucket).

  Returns:
    The batch dict (see module docstring).
  """
  indices = np.asarray(indices, dtype=np.int64)
  n = len(indices)
  if not 1 <= n <= batch_size:
    raise ValueError(f"a batch needs 1..{batch_size} examples, got {n}")
  longest = int(encoded.lengths[indices].max())
  seq_len = next(b for b in bucket_lengths(buckets, max_len) if b >= longest)
  input_ids = np.full((batch_size, seq_len), encoded.pad_id, dtype=np.int32)
  token_type_ids = np.zeros((batch_size, seq_len), dtype=np.int32)
  attention_mask = np.zeros((batch_size, seq_len), dtype=np.int32)
  for row, i in enumerate(indices):
    length = encoded.lengths[i]
    input_ids[row, :length] = encoded.input_ids[i]
    token_type_ids[row, :length] = encoded.token_type_ids[i]
    attention_mask[row, :length] = 1
  attention_mask[n:, 0] = 1  # padding rows: one visible (pad) token
  labels = np.zeros((batch_size,), dtype=encoded.labels.dtype)
  labels[:n] = encoded.labels[indices]
  weights = np.zeros((batch_size,), dtype=np.float32)
  weights[:n] = 1.0
  index = np.full((batch_size,), -1, dtype=np.int32)
  index[:n] = indices
  return {
      "input_ids": input_ids,
      "attention_mask": attention_mask,
      "token_type_ids": token_type_ids,
      "labels": labels,
      "weights": weights,
      "index": index,
  }


def eval_batches(
    encoded: Encoded,
    batch_size: int,
    buckets: Sequence[int] | None,
    max_len: int,
) -> list[dict[str, np.ndarray]]:
  """Every example exactly once, sorted by length (minimal padding).

  Use ``batch["index"]`` (with ``weights > 0``) to put predictions back into
  dataset order.
  """
  _check(encoded, batch_size, max_len)
  order = np.argsort(encoded.lengths, kind="stable")
  return [
      make_batch(
          encoded,
          order[start : start + batch_size],
          batch_size,
          buckets,
          max_len,
      )
      for start in range(0, len(order), batch_size)
  ]


def epoch_plan(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
  """Example indices of each batch of one training epoch (see module docstring).

  Args:
    lengths: (N,) token counts.
    batch_size: B.
    seed, epoch: non-negative ints; the plan is a pure function of them.

  Returns:
    ``ceil(N / B)`` int64 index arrays; all have B entries except one, which
    has ``N mod B`` when B does not divide N. Their union is ``range(N)``.
  """
  if seed < 0 or epoch < 0:
    raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
  lengths = np.asarray(lengths)
  rng = np.random.default_rng([int(seed), int(epoch)])
  perm = rng.permutation(len(lengths))
  window = WINDOW_BATCHES * batch_size
  batches = []
  for start in range(0, len(perm), window):
    chunk = perm[start : start + window]
    chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches.extend(
        chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)
    )
  return [batches[i] for i in rng.permutation(len(batches))]


def train_batches(
    encoded: Encoded,
    batch_size: int,
    buckets: Sequence[int] | None,
    max_len: int,
    seed: int,
    epoch: int,
) -> list[dict[str, np.ndarray]]:
  """All batches of training epoch ``epoch``; pure in (seed, epoch)."""
  _check(encoded, batch_size, max_len)
  return [
      make_batch(encoded, idx, batch_size, buckets, max_len)
      for idx in epoch_plan(encoded.lengths, batch_size, seed, epoch)
  ]


def batch_at_step(
    encoded: Encoded,
    step: int,
    batch_size: int,
    buckets: Sequence[int] | None,
    max_len: int,
    seed: int,
) -> dict[str, np.ndarray]:
  """The training batch of global step ``step`` (0-based).

  ``epoch = step // steps_per_epoch``; recomputes that epoch's plan, so use
  :class:`TrainStream` when iterating.
  """
  return TrainStream(encoded, batch_size, buckets, max_len, seed).batch(step)


class TrainStream:
  """Training batches by global step, caching the current epoch's plan.

  ``TrainStream(...).batch(step)`` equals ``batch_at_step(..., step, ...)``;
  the epoch plan is recomputed only when the epoch changes, and batches are
  assembled on demand.
  """

  def __init__(
      self,
      encoded: Encoded,
      batch_size: int,
      buckets: Sequence[int] | None,
      max_len: int,
      seed: int,
  ):
    _check(encoded, batch_size, max_len)
    bucket_lengths(buckets, max_len)  # validates
    self.encoded = encoded
    self.batch_size = int(batch_size)
    self.buckets = None if buckets is None else tuple(buckets)
    self.max_len = int(max_len)
    self.seed = int(seed)
    self.steps_per_epoch = steps_per_epoch(len(encoded), self.batch_size)
    self._epoch = None
    self._plan = None

  def plan(self, epoch: int) -> list[np.ndarray]:
    """Index arrays of the batches of ``epoch`` (cached)."""
    if epoch != self._epoch:
      self._plan = epoch_plan(
          self.encoded.lengths, self.batch_size, self.seed, epoch
      )
      self._epoch = epoch
    return self._plan

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of global step ``step`` >= 0."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    epoch, i = divmod(int(step), self.steps_per_epoch)
    return make_batch(
        self.encoded,
        self.plan(epoch)[i],
        self.batch_size,
        self.buckets,
        self.max_len,
    )

  def __iter__(self):
    """Yields batches from step 0 on, forever (break out of the loop)."""
    step = 0
    while True:
      yield self.batch(step)
      step += 1


def padding_fraction(batches: Sequence[dict[str, np.ndarray]]) -> float:
  """Fraction of token positions that are padding, over all rows of all batches.

  Padding rows count as fully padded (their visible position 0 included).
  """
  total = sum(b["attention_mask"].size for b in batches)
  real = sum(int(b["attention_mask"][b["weights"] > 0].sum()) for b in batches)
  return 1.0 - real / total
