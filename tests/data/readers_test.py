"""Tests for ntkft.data.readers: staged files and malformed temp files."""

import re

import numpy as np
import pytest

from ntkft.data import readers
from ntkft.data.readers import DataFormatError

# Rows per (task, split), from /work/shared/data/MANIFEST.tsv.
ROWS = {
    ("cola", "train"): 8551,
    ("cola", "dev"): 1043,
    ("sst2", "train"): 67349,
    ("sst2", "dev"): 872,
    ("mrpc", "train"): 3668,
    ("mrpc", "dev"): 408,
    ("stsb", "train"): 5749,
    ("stsb", "dev"): 1500,
    ("qqp", "train"): 10117,
    ("qqp", "dev"): 1000,
    ("mnli", "train"): 15130,
    ("mnli", "dev"): 1000,
    ("mnli", "dev_matched"): 1000,
    ("mnli", "dev_mismatched"): 1000,
    ("qnli", "train"): 9833,
    ("qnli", "dev"): 5463,
    ("rte", "train"): 2490,
    ("rte", "dev"): 277,
    ("wnli", "train"): 635,
    ("wnli", "dev"): 71,
    ("imdb", "train"): 25000,
    ("imdb", "dev"): 25000,
    ("yelp", "train"): 5000,
    ("yelp", "dev"): 1000,
}
# Label counts published in the data README (complete files).
LABEL_COUNTS = {
    ("sst2", "train"): [29780, 37569],
    ("cola", "train"): [2528, 6023],
    ("mrpc", "train"): [1194, 2474],
    ("imdb", "train"): [12500, 12500],
}


def _data_dir(task, data_root):
  if task == "imdb":
    return data_root / "imdb"
  if task == "yelp":
    return data_root / "yelp_full"
  return data_root / "glue"


@pytest.mark.parametrize("task,split", sorted(ROWS))
def test_row_counts(task, split, data_root):
  examples = readers.load_examples(task, split, _data_dir(task, data_root))
  assert len(examples) == ROWS[task, split]
  assert len(examples.labels) == len(examples)
  spec = readers.get_task(task)
  assert (examples.text_b is not None) == spec.is_pair
  if spec.is_regression:
    assert examples.labels.dtype == np.float32
    assert examples.labels.min() >= 0 and examples.labels.max() <= 5
  else:
    assert examples.labels.dtype == np.int32
    assert set(np.unique(examples.labels)) <= set(range(spec.num_labels))
    if (task, split) in LABEL_COUNTS:
      assert np.bincount(examples.labels).tolist() == LABEL_COUNTS[task, split]
  assert all(t.strip() for t in examples.text_a)


def test_file_quirks(glue_dir, data_root):
  mrpc = readers.load_examples("mrpc", "train", glue_dir)
  assert mrpc.labels[0] == 1  # header with BOM was skipped, not read as a row
  assert mrpc.text_a[0].startswith("Amrozi accused his brother")
  # Literal double quotes survive (no csv quoting).
  assert mrpc.text_b[0].startswith('Referring to him as only "the witness"')
  cola = readers.load_examples("cola", "dev", glue_dir)  # no trailing newline
  assert cola.text_a[-1] == "John talked to Bill about himself."
  mnli = readers.load_examples("mnli", "train", glue_dir)
  assert mnli.text_a[0].startswith("And to show just how fast Japan")
  # The data root also works for IMDb/Yelp (data_root/imdb exists).
  yelp = readers.load_examples("yelp", "dev", data_root)
  assert len(yelp) == 1000 and yelp.source.endswith("yelp_full/test.jsonl")


@pytest.mark.parametrize(
    "task,split,rows",
    [
        ("sst2", "train", 32),
        ("sst2", "test", 872),
        ("mrpc", "test", 408),
        ("stsb", "train", 32),
        ("qqp", "test", 1000),
        ("qnli", "dev", 32),
        ("rte", "test", 277),
        ("mnli", "train", 48),
        ("mnli", "dev", 48),
        ("mnli", "test_mismatched", 1000),
        ("cola", "train", 32),
    ],
)
def test_kshot_files(task, split, rows, data_root):
  folder = readers.kshot_dir(data_root, task, 16, 42)
  assert (
      folder
      == data_root
      / "k-shot-1k-test"
      / readers.get_task(task).dir_name
      / "16-42"
  )
  assert len(readers.load_examples(task, split, folder)) == rows


def test_kshot_cola_merged_line_is_split(data_root):
  folder = readers.kshot_dir(data_root, "cola", 16, 13)
  examples = readers.load_examples("cola", "test", folder)
  assert len(examples) == 1000  # 999 lines, one holding two examples
  i = examples.text_a.index("John talked to Bill about himself.")
  assert examples.text_a[i + 1] == (
      "Each candidate who has interest in "
      "semantics will be admitted to the department."
  )
  assert examples.labels[i : i + 2].tolist() == [1, 1]
  # The sample is drawn from GLUE CoLA dev.
  dev = set(readers.load_examples("cola", "dev", data_root / "glue").text_a)
  assert set(examples.text_a) <= dev


def test_kshot_dir_missing_lists_folder(data_root):
  with pytest.raises(DataFormatError, match="16-7 not found.*16-13"):
    readers.kshot_dir(data_root, "rte", 16, 7)


def test_unlabeled_glue_test_is_rejected(glue_dir):
  with pytest.raises(
      DataFormatError, match=r"RTE/test.tsv:1: .*label.*unlabeled"
  ):
    readers.load_examples("rte", "test", glue_dir)
  with pytest.raises(DataFormatError, match=r"CoLA/test.tsv:1: .*no header"):
    readers.load_examples("cola", "test", glue_dir)


# ----------------------------------------------------------------------------
# Malformed files.


def _write(tmp_path, task_dir, name, text):
  folder = tmp_path / task_dir
  folder.mkdir(exist_ok=True)
  path = folder / name
  path.write_text(text, encoding="utf-8")
  return path


def test_small_valid_pair_file(tmp_path):
  _write(
      tmp_path,
      "RTE",
      "dev.tsv",
      'index\tsentence1\tsentence2\tlabel\n0\tA "quoted\tB\tentailment\n'
      "1\tC\tD\tnot_entailment",
  )
  examples = readers.load_examples("rte", "dev", tmp_path)
  assert examples.text_a == ['A "quoted', "C"]
  assert examples.text_b == ["B", "D"]
  assert examples.labels.tolist() == [0, 1]


_STSB_HEADER = "\t".join(["index", "genre", "filename", "year", "old_index", "source1", "source2",
                          "sentence1", "sentence2", "score"])
_STSB_ROW = "0\tg\tf\ty\t0\tn\tn\tA.\tB.\t"


@pytest.mark.parametrize("task, split, task_dir, text, error", [
    ("rte", "train", "RTE",
     "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tentailment\n1\tA\tB\textra\tentailment\n",
     ":3: expected 4 .*got 5"),
    ("sst2", "dev", "SST-2", "sentence\tlabel\ngood\t1\nbad\t2\n", ":3: unknown label '2'"),
    ("cola", "train", "CoLA", "gj04\t1\t\tFine.\ngj04\t0\t*\t  \n", ":2: empty text"),
    ("stsb", "dev", "STS-B", f"{_STSB_HEADER}\n{_STSB_ROW}4.5\n{_STSB_ROW}high\n",
     ":3: score 'high' is not a float"),
], ids=["column_count", "unknown_label", "empty_text", "stsb_score"])
def test_malformed_tsv_names_file_and_line(tmp_path, task, split, task_dir, text, error):
  path = _write(tmp_path, task_dir, f"{split}.tsv", text)
  with pytest.raises(DataFormatError, match=re.escape(str(path)) + error):
    readers.load_examples(task, split, tmp_path)


def test_bad_jsonl_names_file_and_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text('{"text": "ok", "label": 1}\n{"text": "", "label": 0}\n')
  with pytest.raises(
      DataFormatError, match=rf"{re.escape(str(path))}:2: empty text"
  ):
    readers.load_examples("imdb", "train", tmp_path)
  path.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": 3}\n')
  with pytest.raises(
      DataFormatError, match=rf"{re.escape(str(path))}:2: unknown label 3"
  ):
    readers.load_examples("imdb", "train", tmp_path)
  path.write_text('{"text": "ok", "stars": 4, "label": 0}\n')
  with pytest.raises(
      DataFormatError,
      match=rf"{re.escape(str(path))}:1: label 0 disagrees with stars 4",
  ):
    readers.load_examples("yelp", "train", tmp_path)


def test_missing_file_lists_folder(tmp_path):
  _write(tmp_path, "QNLI", "train.tsv", "index\tquestion\tsentence\tlabel\n")
  with pytest.raises(
      DataFormatError, match=r"QNLI/dev.tsv not found; .*QNLI holds: train.tsv"
  ):
    readers.load_examples("qnli", "dev", tmp_path)
  with pytest.raises(ValueError, match="no split 'val'"):
    readers.load_examples("qnli", "val", tmp_path)


def test_select_and_len(glue_dir):
  examples = readers.load_examples("wnli", "dev", glue_dir)
  sub = examples.select([3, 0])
  assert len(sub) == 2
  assert sub.text_a == [examples.text_a[3], examples.text_a[0]]
  assert sub.text_b == [examples.text_b[3], examples.text_b[0]]
  assert sub.labels.tolist() == [examples.labels[3], examples.labels[0]]
