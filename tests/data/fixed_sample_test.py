"""ntkft.data.fixed_sample: n examples of a task as one padded batch."""
import numpy as np
import pytest

from ntkft import data
from ntkft.models import resolve_model_dir


@pytest.fixture(scope="module")
def pool():
  from tests.conftest import GLUE_DIR
  return data.load_examples("rte", "dev", GLUE_DIR / "RTE")


@pytest.fixture(scope="module")
def tokenizer():
  return data.load_tokenizer(resolve_model_dir("minilm-l6"))


def test_rows_are_the_sampled_examples_padded(pool, tokenizer):
  sample = data.fixed_sample(pool, 7, [3, 1], tokenizer, max_len=48)
  assert sample.task == "rte" and sample.split == "dev"
  assert list(sample.index) == sorted(set(sample.index)) and len(sample.index) == 7
  # Same draw as np.random.default_rng(seed).choice, sorted (the stored results' samples).
  want = np.sort(np.random.default_rng([3, 1]).choice(len(pool), 7, replace=False))
  np.testing.assert_array_equal(sample.index, want)
  np.testing.assert_array_equal(sample.labels, pool.labels[want])
  x = sample.inputs()
  alone = data.encode(tokenizer, pool.select(want), 48)
  assert x["input_ids"].shape == (7, int(alone.lengths.max()))
  np.testing.assert_array_equal(x["attention_mask"].sum(1), alone.lengths)
  for row in range(7):
    length = alone.lengths[row]
    np.testing.assert_array_equal(x["input_ids"][row, :length], alone.input_ids[row])
    np.testing.assert_array_equal(x["token_type_ids"][row, :length], alone.token_type_ids[row])
    assert np.all(x["input_ids"][row, length:] == alone.pad_id)
  # Padding to a longer length only appends masked pad tokens.
  longer = sample.inputs(sample.longest + 5)
  for key in x:
    np.testing.assert_array_equal(longer[key][:, :sample.longest], x[key])
  assert longer["attention_mask"][:, sample.longest:].sum() == 0
  with pytest.raises(ValueError, match="shorter than the longest"):
    sample.inputs(sample.longest - 1)


def test_sample_size_out_of_range_names_the_split(pool, tokenizer):
  for n in (0, len(pool) + 1):
    with pytest.raises(ValueError, match=rf"n={n} must be .* \(the rte/dev examples\)"):
      data.fixed_sample(pool, n, 0, tokenizer, 32)
