"""A fixed random sample of n examples of a task, as one padded batch.

Kernels at θ0 and the closed-form regimes see every example at once: the n
examples form a single batch, padded to the longest of them (or to a given
length, so two samples share one compiled program).
"""
import dataclasses

import numpy as np

from ntkft.data.readers import Examples
from ntkft.data.tokenization import Encoded, Tokenizer, encode


@dataclasses.dataclass(frozen=True)
class FixedSample:
  """n tokenized examples and where they came from.

  Attributes:
    encoded: the n examples, tokenized, unpadded (``encoded.labels`` (n,)).
    index: (n,) ascending positions of the examples in the split.
    task: task name.
    split: split name.
  """
  encoded: Encoded
  index: np.ndarray
  task: str
  split: str

  @property
  def labels(self) -> np.ndarray:
    return self.encoded.labels

  @property
  def longest(self) -> int:
    """Tokens of the longest example (the default padded length)."""
    return int(self.encoded.lengths.max())

  def inputs(self, length: int | None = None) -> dict[str, np.ndarray]:
    """The model inputs of all n examples as one batch (:func:`one_padded_batch`),
    row i the example at ``index[i]``."""
    return one_padded_batch(self.encoded, length)


def one_padded_batch(encoded: Encoded, length: int | None = None) -> dict[str, np.ndarray]:
  """The model inputs of all N examples of ``encoded`` as one batch.

  Args:
    encoded: N tokenized examples.
    length: padded length T >= the longest example (None: the longest).

  Returns:
    {``input_ids``, ``attention_mask``, ``token_type_ids``}: (N, T) int32, row i
    example i, padded with the pad id (mask 0).

  Raises:
    ValueError: ``length`` shorter than the longest example.
  """
  longest = int(encoded.lengths.max())
  length = longest if length is None else int(length)
  if length < longest:
    raise ValueError(f"padded length {length} is shorter than the longest example "
                     f"({longest} tokens)")
  n = len(encoded)
  out = {"input_ids": np.full((n, length), encoded.pad_id, np.int32),
         "attention_mask": np.zeros((n, length), np.int32),
         "token_type_ids": np.zeros((n, length), np.int32)}
  for row, (ids, types) in enumerate(zip(encoded.input_ids, encoded.token_type_ids)):
    out["input_ids"][row, :len(ids)] = ids
    out["token_type_ids"][row, :len(ids)] = types
    out["attention_mask"][row, :len(ids)] = 1
  return out


def fixed_sample(examples: Examples, n: int, seed, tokenizer: Tokenizer,
                 max_len: int) -> FixedSample:
  """n examples drawn without replacement, in split order, tokenized.

  Args:
    examples: the pool (a split of a task), N examples.
    n: sample size, 1 <= n <= N.
    seed: seed of ``np.random.default_rng`` (an int or a sequence of ints,
      e.g. ``[seed, salt]`` for a second independent sample).
    tokenizer: from ``ntkft.data.load_tokenizer``.
    max_len: truncation length (``ntkft.data.encode``).

  Raises:
    ValueError: n outside [1, N], naming the task and split.
  """
  size = len(examples)
  if isinstance(n, bool) or int(n) != n or not 1 <= n <= size:
    raise ValueError(f"sample size n={n} must be an integer in [1, {size}] (the "
                     f"{examples.task}/{examples.split} examples)")
  index = np.sort(np.random.default_rng(seed).choice(size, int(n), replace=False))
  return FixedSample(encode(tokenizer, examples.select(index), max_len), index, examples.task,
                     examples.split)
