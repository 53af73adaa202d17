"""Tests for ntkft.data.subset."""

import numpy as np
import pytest

from ntkft.data import readers, subset


def _examples(labels, task="sst2"):
  labels = np.asarray(labels)
  return readers.Examples(
      text_a=[f"t{i}" for i in range(len(labels))],
      text_b=None,
      labels=labels.astype(np.float32 if task == "stsb" else np.int32),
      task=task,
      split="train",
      source="memory",
  )


def test_deterministic_and_without_replacement():
  examples = _examples(np.arange(100) % 2)
  a = subset.subsample(examples, 30, seed=7)
  b = subset.subsample(examples, 30, seed=7)
  c = subset.subsample(examples, 30, seed=8)
  assert a.text_a == b.text_a
  assert a.text_a != c.text_a
  ids = [int(t[1:]) for t in a.text_a]
  assert len(set(ids)) == 30 and ids == sorted(ids)  # file order kept
  assert a.labels.tolist() == [i % 2 for i in ids]  # labels stay aligned


def test_stratified_keeps_proportions():
  labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
  examples = _examples(labels, task="mnli")
  sub = subset.subsample(examples, 10, seed=0, stratified=True)
  assert np.bincount(sub.labels, minlength=3).tolist() == [7, 2, 1]
  # Largest remainder: 15 * (0.7, 0.2, 0.1) = (10.5, 3, 1.5) -> ties go to
  # the lower class id: (11, 3, 1).
  sub = subset.subsample(examples, 15, seed=0, stratified=True)
  assert np.bincount(sub.labels, minlength=3).tolist() == [11, 3, 1]
  # The full set is a valid "subset".
  sub = subset.subsample(examples, 100, seed=3, stratified=True)
  assert sub.text_a == examples.text_a


def test_stratified_counts_sum_and_bounds():
  rng = np.random.default_rng(0)
  for _ in range(50):
    sizes = rng.integers(1, 30, size=rng.integers(2, 5))
    n = int(rng.integers(1, sizes.sum() + 1))
    counts = subset._stratified_counts(sizes, n)
    assert counts.sum() == n
    assert np.all(counts <= sizes) and np.all(counts >= 0)
    assert np.all(np.abs(counts - n * sizes / sizes.sum()) < 1)


def test_errors():
  examples = _examples(np.arange(10) % 2)
  with pytest.raises(ValueError, match=r"n=11 must be an integer in \[1, 10\]"):
    subset.subsample(examples, 11, seed=0)
  with pytest.raises(ValueError, match="n=0"):
    subset.subsample(examples, 0, seed=0)
  with pytest.raises(ValueError, match="regression"):
    subset.subsample(
        _examples(np.linspace(0, 5, 10), task="stsb"),
        3,
        seed=0,
        stratified=True,
    )
  # Non-stratified regression subsets are fine.
  assert (
      len(
          subset.subsample(
              _examples(np.linspace(0, 5, 10), task="stsb"), 3, seed=0
          )
      )
      == 3
  )
