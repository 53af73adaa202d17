"""Optional source: the same tasks read through TensorFlow Datasets.

Uses ``tfds.data_source`` (random-access ArrayRecord files, decoded with numpy),
which works without TensorFlow installed: ``pip install tensorflow-datasets``
suffices to *read* prepared datasets, but preparing (downloading and
converting) them with ``download_and_prepare`` needs network access and, for
most builders, TensorFlow. Only tasks with an identical TFDS counterpart are
mapped: ``glue/<task>`` and ``imdb_reviews``. Yelp is not: TFDS's
``yelp_polarity_reviews`` (Zhang et al. 2015: stars 1-2 negative, 3-4
positive) is not this project's binarisation of Yelp Review Full (stars > 3).

TFDS GLUE label ids equal ours (checked against the builder's class names at
load time). GLUE test splits have label -1 and are rejected.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from ntkft.data.readers import DataFormatError, Examples
from ntkft.data.tasks import TaskSpec, get_task

# task -> (TFDS name, text feature keys)
TFDS_NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cola": ("glue/cola", ("sentence",)),
    "sst2": ("glue/sst2", ("sentence",)),
    "mrpc": ("glue/mrpc", ("sentence1", "sentence2")),
    "stsb": ("glue/stsb", ("sentence1", "sentence2")),
    "qqp": ("glue/qqp", ("question1", "question2")),
    "mnli": ("glue/mnli", ("premise", "hypothesis")),
    "qnli": ("glue/qnli", ("question", "sentence")),
    "rte": ("glue/rte", ("sentence1", "sentence2")),
    "wnli": ("glue/wnli", ("sentence1", "sentence2")),
    "imdb": ("imdb_reviews", ("text",)),
}

# TFDS class names where they differ from ours (same class-id order).
_TFDS_LABEL_NAMES = {"imdb": ("neg", "pos")}


def tfds_split(spec: TaskSpec, split: str) -> str:
  """Our split name -> the TFDS split name."""
  if spec.name == "imdb":
    table = {"train": "train", "dev": "test", "test": "test"}
  elif spec.name == "mnli":
    table = {
        "train": "train",
        "dev": "validation_matched",
        "dev_matched": "validation_matched",
        "dev_mismatched": "validation_mismatched",
        "test": "test_matched",
        "test_matched": "test_matched",
        "test_mismatched": "test_mismatched",
    }
  else:
    table = {"train": "train", "dev": "validation", "test": "test"}
  if split not in table:
    raise ValueError(
        f"task {spec.name!r} has no TFDS split for {split!r}; "
        f"valid: {', '.join(table)}"
    )
  return table[split]


def _import_tfds():
  try:
    tfds = importlib.import_module("tensorflow_datasets")
  except ImportError as e:
    raise ImportError(
        "ntkft.data.tfds_source needs tensorflow-datasets: "
        "`pip install tensorflow-datasets` (or `pip install -e .[tfds]`); "
        "TensorFlow itself is not needed to read prepared datasets"
    ) from e
  try:  # Without TensorFlow the GLUE builder is not registered on import.
    importlib.import_module("tensorflow_datasets.text.glue")
  except ImportError:
    pass
  return tfds


def _as_text(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    value = value.decode("utf-8")
  return str(value)


def load_examples_tfds(
    task: str | TaskSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Examples:
  """Reads ``split`` of ``task`` with ``tfds.data_source``.

  Args:
    task: one of :data:`TFDS_NAMES`' keys (GLUE tasks and ``imdb``).
    split: as in :func:`ntkft.data.readers.load_examples` (``dev`` ->
      ``validation``; MNLI ``dev`` -> ``validation_matched``; IMDb ``dev`` ->
      ``test``).
    data_dir: TFDS data dir (default: TFDS's, ``~/tensorflow_datasets``).
    download: let TFDS download and prepare missing data.

  Returns:
    :class:`Examples` whose ``source`` is ``"tfds:<name>/<split>"``.

  Raises:
    ImportError: tensorflow-datasets is not installed.
    ValueError: task or split without a TFDS counterpart.
    DataFormatError: an unlabeled split (GLUE test) or a bad label.
  """
  spec = get_task(task)
  if spec.name not in TFDS_NAMES:
    raise ValueError(
        f"task {spec.name!r} has no TFDS counterpart; TFDS tasks: "
        f"{', '.join(TFDS_NAMES)}"
    )
  name, text_keys = TFDS_NAMES[spec.name]
  split_name = tfds_split(spec, split)
  tfds = _import_tfds()
  source = tfds.data_source(
      name, split=split_name, data_dir=data_dir, download=download
  )
  where = f"tfds:{name}/{split_name}"
  if not spec.is_regression:
    names = tuple(
        tfds.builder(name, data_dir=data_dir).info.features["label"].names
    )
    expected = _TFDS_LABEL_NAMES.get(spec.name, spec.label_names)
    if names != expected:
      raise DataFormatError(
          f"{where}: TFDS label names {names} differ from "
          f"the expected {expected}"
      )
  texts = [[] for _ in text_keys]
  labels = []
  for i in range(len(source)):
    record = source[i]
    for out, key in zip(texts, text_keys):
      out.append(_as_text(record[key]))
    labels.append(np.asarray(record["label"]).item())
  dtype = np.float32 if spec.is_regression else np.int32
  labels = np.asarray(labels, dtype=dtype).reshape(-1)
  if not spec.is_regression:
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_labels))
    if bad.size:
      raise DataFormatError(
          f"{where}: example {bad[0]} has label {labels[bad[0]]} outside "
          f"[0, {spec.num_labels}) (unlabeled GLUE test split?)"
      )
  return Examples(
      text_a=texts[0],
      text_b=texts[1] if len(texts) > 1 else None,
      labels=labels,
      task=spec.name,
      split=split,
      source=where,
  )
