"""Tests for ntkft.data.tfds_source, offline through tfds.testing.mock_data.

Needs only `pip install tensorflow-datasets` (no TensorFlow): the source reads
through `tfds.data_source`, which mock_data patches with random examples
generated from the builders' feature specs.
"""

import importlib.util

import numpy as np
import pytest

from ntkft.data import tfds_source

HAVE_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None


@pytest.mark.skipif(HAVE_TFDS, reason="tensorflow-datasets is installed")
def test_missing_tfds_gives_install_hint():
  with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
    tfds_source.load_examples_tfds("sst2", "train")


def test_unmapped_tasks_and_splits():
  with pytest.raises(ValueError, match="no TFDS counterpart"):
    tfds_source.load_examples_tfds("yelp", "train")
  with pytest.raises(ValueError, match="no TFDS split for 'dev_mismatched'"):
    tfds_source.load_examples_tfds("rte", "dev_mismatched")
  spec = tfds_source.get_task
  assert tfds_source.tfds_split(spec("mnli"), "dev") == "validation_matched"
  assert tfds_source.tfds_split(spec("imdb"), "dev") == "test"
  assert tfds_source.tfds_split(spec("cola"), "dev") == "validation"


@pytest.mark.parametrize(
    "task,split,pair",
    [
        ("sst2", "train", False),
        ("cola", "dev", False),
        ("mnli", "dev_mismatched", True),
        ("qnli", "dev", True),
        ("stsb", "dev", True),
        ("imdb", "dev", False),
    ],
)
def test_mock_data(task, split, pair):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    examples = tfds_source.load_examples_tfds(task, split)
  spec = tfds_source.get_task(task)
  assert len(examples) == 6
  assert (examples.text_b is not None) == pair
  assert all(isinstance(t, str) for t in examples.text_a)
  assert examples.task == spec.name and examples.split == split
  assert examples.source.startswith("tfds:")
  if spec.is_regression:
    assert examples.labels.dtype == np.float32
  else:
    assert examples.labels.dtype == np.int32
    assert (
        examples.labels.min() >= 0 and examples.labels.max() < spec.num_labels
    )
