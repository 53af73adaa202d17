"""Tests for ntkft.data.batching on synthetic encoded data."""

import numpy as np
import pytest

from ntkft.data import batching
from ntkft.data.tokenization import Encoded

PAD = 7


def _encoded(lengths, regression=False, seed=0):
  rng = np.random.default_rng(seed)
  ids = [rng.integers(100, 200, size=n).astype(np.int32) for n in lengths]
  types = [(np.arange(n) >= n // 2).astype(np.int32) for n in lengths]
  labels = (
      rng.normal(size=len(lengths)).astype(np.float32)
      if regression
      else (np.arange(len(lengths)) % 3).astype(np.int32)
  )
  return Encoded(
      input_ids=ids,
      token_type_ids=types,
      labels=labels,
      lengths=np.asarray(lengths, dtype=np.int32),
      pad_id=PAD,
  )


def _check_batch(batch, enc, batch_size, buckets, max_len):
  assert set(batch) == set(batching.BATCH_KEYS)
  seq_len = batch["input_ids"].shape[1]
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    assert batch[key].shape == (batch_size, seq_len)
    assert batch[key].dtype == np.int32
  assert batch["weights"].dtype == np.float32
  assert batch["index"].dtype == np.int32
  assert batch["labels"].dtype == enc.labels.dtype
  real = batch["index"] >= 0
  np.testing.assert_array_equal(batch["weights"], real.astype(np.float32))
  # Real rows first, then padding rows.
  assert not np.any(np.diff(real.astype(int)) > 0)
  longest = 0
  for row in np.flatnonzero(real):
    i = batch["index"][row]
    n = enc.lengths[i]
    longest = max(longest, n)
    np.testing.assert_array_equal(batch["input_ids"][row, :n], enc.input_ids[i])
    np.testing.assert_array_equal(
        batch["token_type_ids"][row, :n], enc.token_type_ids[i]
    )
    assert np.all(batch["input_ids"][row, n:] == PAD)
    assert np.all(batch["token_type_ids"][row, n:] == 0)
    assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (
        seq_len - n
    )
    assert batch["labels"][row] == enc.labels[i]
  for row in np.flatnonzero(~real):
    assert np.all(batch["input_ids"][row] == PAD)
    assert batch["attention_mask"][row].tolist() == [1] + [0] * (seq_len - 1)
    assert batch["labels"][row] == 0
  # Minimal bucket: fits the longest, and no smaller bucket would.
  allowed = batching.bucket_lengths(buckets, max_len)
  assert seq_len in allowed and seq_len >= longest
  assert all(b < longest for b in allowed if b < seq_len)
  return batch["index"][real]


def test_bucket_lengths():
  assert batching.bucket_lengths((32, 64, 128), 128) == (32, 64, 128)
  assert batching.bucket_lengths((64, 32, 256), 128) == (32, 64, 128)
  assert batching.bucket_lengths(None, 100) == (100,)
  with pytest.raises(ValueError, match="positive integers"):
    batching.bucket_lengths((0, 32), 64)


def test_steps_per_epoch():
  assert batching.steps_per_epoch(10, 4) == 3
  assert batching.steps_per_epoch(8, 4) == 2
  assert batching.steps_per_epoch(1, 32) == 1


@pytest.mark.parametrize("buckets", [(4, 8, 16), None])
def test_eval_batches(buckets):
  lengths = np.random.default_rng(1).integers(2, 17, size=23)
  enc = _encoded(lengths)
  batches = batching.eval_batches(enc, 5, buckets, 16)
  assert len(batches) == 5
  seen = np.concatenate([_check_batch(b, enc, 5, buckets, 16) for b in batches])
  assert sorted(seen.tolist()) == list(range(23))  # each example exactly once
  assert np.all(np.diff(lengths[seen]) >= 0)  # sorted by length
  assert batches[-1]["weights"].tolist() == [1, 1, 1, 0, 0]
  if buckets is None:
    assert {b["input_ids"].shape[1] for b in batches} == {16}


def test_eval_batches_regression_labels():
  enc = _encoded([3, 5, 4], regression=True)
  (batch,) = batching.eval_batches(enc, 4, (8,), 8)
  _check_batch(batch, enc, 4, (8,), 8)
  assert batch["labels"].dtype == np.float32 and batch["labels"][3] == 0.0


def test_train_batches_cover_each_example_once_and_are_deterministic():
  lengths = np.random.default_rng(2).integers(2, 33, size=1003)
  enc = _encoded(lengths)
  buckets = (8, 16, 32)
  epoch0 = batching.train_batches(enc, 8, buckets, 32, seed=3, epoch=0)
  assert len(epoch0) == batching.steps_per_epoch(1003, 8) == 126
  seen = np.concatenate([_check_batch(b, enc, 8, buckets, 32) for b in epoch0])
  assert sorted(seen.tolist()) == list(range(1003))
  again = batching.train_batches(enc, 8, buckets, 32, seed=3, epoch=0)
  for a, b in zip(epoch0, again):
    for key in batching.BATCH_KEYS:
      np.testing.assert_array_equal(a[key], b[key])
  epoch1 = batching.train_batches(enc, 8, buckets, 32, seed=3, epoch=1)
  other_seed = batching.train_batches(enc, 8, buckets, 32, seed=4, epoch=0)
  order = lambda bs: np.concatenate([b["index"] for b in bs])
  assert not np.array_equal(order(epoch0), order(epoch1))
  assert not np.array_equal(order(epoch0), order(other_seed))
  assert sorted(order(epoch1)[order(epoch1) >= 0].tolist()) == list(range(1003))
  # Exactly one partial batch (1003 = 125 * 8 + 3).
  partial = [b for b in epoch0 if b["weights"].sum() < 8]
  assert len(partial) == 1 and partial[0]["weights"].sum() == 3


def test_windows_reduce_padding():
  lengths = np.random.default_rng(5).integers(2, 129, size=2000)
  enc = _encoded(lengths)
  bucketed = batching.train_batches(enc, 16, range(8, 129, 8), 128, 0, 0)
  flat = batching.train_batches(enc, 16, None, 128, 0, 0)
  # Window sorting puts similar lengths together: with buckets every 8 tokens
  # about 4 of ~65 tokens are padding, versus ~0.5 for padding to max_len
  # (uniform lengths).
  assert batching.padding_fraction(bucketed) < 0.1
  assert batching.padding_fraction(flat) > 0.45
  # Within a window-sorted batch, lengths span a narrow range.
  spans = [np.ptp(lengths[b["index"][b["index"] >= 0]]) for b in bucketed]
  assert np.median(spans) < 10


def test_padding_fraction_closed_form():
  enc = _encoded([2, 4])
  (batch,) = batching.eval_batches(enc, 3, None, 4)
  # 3 x 4 positions, 6 real tokens.
  assert batching.padding_fraction([batch]) == pytest.approx(0.5)


def test_batch_at_step_and_stream_match_train_batches():
  lengths = np.random.default_rng(3).integers(2, 17, size=37)
  enc = _encoded(lengths)
  spe = batching.steps_per_epoch(37, 4)
  stream = batching.TrainStream(enc, 4, (8, 16), 16, seed=11)
  for epoch in (0, 1, 2):
    expected = batching.train_batches(enc, 4, (8, 16), 16, seed=11, epoch=epoch)
    for i in (0, 5, spe - 1):
      step = epoch * spe + i
      for got in (
          stream.batch(step),
          batching.batch_at_step(enc, step, 4, (8, 16), 16, seed=11),
      ):
        for key in batching.BATCH_KEYS:
          np.testing.assert_array_equal(got[key], expected[i][key])
  it = iter(stream)
  index = np.concatenate([next(it)["index"] for _ in range(spe)])
  assert sorted(index[index >= 0].tolist()) == list(range(37))


def test_errors():
  enc = _encoded([3, 20])
  with pytest.raises(ValueError, match="20 tokens > max_len=16"):
    batching.eval_batches(enc, 2, None, 16)
  with pytest.raises(ValueError, match="batch_size=0"):
    batching.eval_batches(_encoded([3]), 0, None, 16)
  with pytest.raises(ValueError, match="step must be >= 0"):
    batching.TrainStream(_encoded([3]), 2, None, 8, 0).batch(-1)
