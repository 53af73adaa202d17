"""Task registry: GLUE tasks, IMDb and binarised Yelp.

Each task is described by a frozen :class:`TaskSpec`: where its files live,
which
columns hold the text(s) and the label, how raw labels map to class ids, and
which metrics are reported. Class ids follow the GLUE / TFDS / HuggingFace
convention (e.g. MNLI: 0=entailment, 1=neutral, 2=contradiction), so models
and evaluations trained against either source agree.

Example::

  spec = get_task("sst-2")        # aliases: case, '-' and '_' are ignored
  spec.num_labels                 # 2
  spec.file_name("dev")           # 'dev.tsv'
"""

from __future__ import annotations

import dataclasses
from typing import Union

Column = Union[str, int]

# Split -> file name, shared by the GLUE layout and the LM-BFF k-shot layout.
_GLUE_FILES = (("train", "train.tsv"), ("dev", "dev.tsv"), ("test", "test.tsv"))
# MNLI: GLUE has dev_{matched,mismatched}.tsv; k-shot folders have
# dev_matched.tsv (a second k-shot sample of train) and
# test_{matched,mismatched}.tsv.
_MNLI_FILES = (
    ("train", "train.tsv"),
    ("dev", "dev_matched.tsv"),
    ("dev_matched", "dev_matched.tsv"),
    ("dev_mismatched", "dev_mismatched.tsv"),
    ("test", "test_matched.tsv"),
    ("test_matched", "test_matched.tsv"),
    ("test_mismatched", "test_mismatched.tsv"),
)
# MNLI's evaluation splits come in (matched, mismatched) pairs; GLUE reports both.
_MNLI_MISMATCHED = (("dev", "dev_mismatched"), ("dev_matched", "dev_mismatched"),
                    ("test", "test_mismatched"), ("test_matched", "test_mismatched"))
# IMDb / Yelp have no dev split: 'dev' is the test set.
_JSONL_FILES = (
    ("train", "train.jsonl"),
    ("dev", "test.jsonl"),
    ("test", "test.jsonl"),
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Static description of one classification / regression task.

  Attributes:
    name: canonical task name (a key of :data:`TASKS`).
    source: file family: ``"glue"`` (tab-separated, unquoted), ``"imdb"`` or
      ``"yelp"`` (JSON lines).
    dir_name: folder of the task under the data root (``"SST-2"``, ``"imdb"``).
    split_files: ``(split, file name)`` pairs; see :meth:`file_name`.
    text_columns: one column (single sentence) or two (sentence pair). A ``str``
      is a header name (for JSON lines: a key), an ``int`` a 0-based position
      (used for headerless files, i.e. CoLA).
    label_column: header name / key or position of the label.
    has_header: whether the first line of the TSV is a header.
    num_columns: expected number of tab-separated fields for headerless files;
      ``None`` means "as many as the header has".
    raw_labels: raw label strings in class-id order: ``raw_labels[i]`` is the
      string in the file for class ``i``. Empty for regression.
    label_names: human-readable class names in class-id order; empty for STS-B.
    num_labels: number of classes; 1 for regression.
    is_regression: True for STS-B (float score in [0, 5]).
    metrics: metric names :func:`ntkft.evals.metrics.compute_metrics` returns.
    primary_metric: the metric used for model selection (one of ``metrics``).
    mismatched_splits: ``(split, mismatched split)`` pairs (MNLI): evaluating on
      ``split`` also reports its mismatched-genre counterpart; see
      :meth:`mismatched_split`.
  """

  name: str
  source: str
  dir_name: str
  split_files: tuple[tuple[str, str], ...]
  text_columns: tuple[Column, ...]
  label_column: Column
  label_names: tuple[str, ...]
  raw_labels: tuple[str, ...]
  num_labels: int
  is_regression: bool
  metrics: tuple[str, ...]
  primary_metric: str
  has_header: bool = True
  num_columns: int | None = None
  mismatched_splits: tuple[tuple[str, str], ...] = ()

  @property
  def splits(self) -> tuple[str, ...]:
    """Split names this task knows (``train``, ``dev``, ...)."""
    return tuple(split for split, _ in self.split_files)

  @property
  def is_pair(self) -> bool:
    """Whether examples are sentence pairs."""
    return len(self.text_columns) == 2

  def mismatched_split(self, split: str) -> str | None:
    """The split evaluated beside ``split`` (MNLI ``'dev'`` -> ``'dev_mismatched'``), or None."""
    return dict(self.mismatched_splits).get(split)

  def file_name(self, split: str) -> str:
    """File name of ``split`` (e.g. ``'dev_matched.tsv'`` for MNLI ``'dev'``).

    Raises:
      ValueError: unknown split (the message lists the valid ones).
    """
    for name, file_name in self.split_files:
      if name == split:
        return file_name
    raise ValueError(
        f"task {self.name!r} has no split {split!r}; valid splits: "
        f"{', '.join(self.splits)}"
    )


def _glue(
    name,
    dir_name,
    text_columns,
    label_column,
    label_names,
    raw_labels=None,
    metrics=("accuracy",),
    primary_metric="accuracy",
    **kwargs,
) -> TaskSpec:
  return TaskSpec(
      name=name,
      source="glue",
      dir_name=dir_name,
      split_files=kwargs.pop("split_files", _GLUE_FILES),
      text_columns=tuple(text_columns),
      label_column=label_column,
      label_names=tuple(label_names),
      raw_labels=tuple(label_names if raw_labels is None else raw_labels),
      num_labels=max(len(label_names), 1),
      is_regression=not label_names,
      metrics=tuple(metrics),
      primary_metric=primary_metric,
      **kwargs,
  )


def _binary_reviews(name: str, dir_name: str) -> TaskSpec:
  """Sentiment reviews as JSON lines (``text``, ``label`` 0/1), no header."""
  return TaskSpec(
      name=name,
      source=name,
      dir_name=dir_name,
      split_files=_JSONL_FILES,
      text_columns=("text",),
      label_column="label",
      label_names=("negative", "positive"),
      raw_labels=("0", "1"),
      num_labels=2,
      is_regression=False,
      metrics=("accuracy",),
      primary_metric="accuracy",
      has_header=False,
  )


# Labels stored as "0"/"1" in the files; the F1 tasks (paraphrase) report accuracy too.
_ZERO_ONE = ("0", "1")
_F1 = {"metrics": ("accuracy", "f1"), "primary_metric": "f1"}
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    # name, folder, text columns, label column, label names (class-id order), raw labels.
    # CoLA train/dev: no header; columns: source, label, author mark, sentence.
    _glue("cola", "CoLA", (3,), 1, ("unacceptable", "acceptable"), _ZERO_ONE,
          metrics=("matthews",), primary_metric="matthews", has_header=False, num_columns=4),
    _glue("sst2", "SST-2", ("sentence",), "label", ("negative", "positive"), _ZERO_ONE),
    _glue("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality",
          ("not_equivalent", "equivalent"), _ZERO_ONE, **_F1),
    _glue("stsb", "STS-B", _PAIR, "score", (), metrics=("pearson", "spearman"),
          primary_metric="pearson"),
    _glue("qqp", "QQP", ("question1", "question2"), "is_duplicate",
          ("not_duplicate", "duplicate"), _ZERO_ONE, **_F1),
    _glue("mnli", "MNLI", _PAIR, "gold_label", ("entailment", "neutral", "contradiction"),
          split_files=_MNLI_FILES, mismatched_splits=_MNLI_MISMATCHED),
    _glue("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment")),
    _glue("rte", "RTE", _PAIR, "label", ("entailment", "not_entailment")),
    _glue("wnli", "WNLI", _PAIR, "label", ("not_entailment", "entailment"), _ZERO_ONE),
    _binary_reviews("imdb", "imdb"),
    # Yelp Review Full binarised as label = stars > 3 (stars 1-3 -> 0).
    _binary_reviews("yelp", "yelp_full"),
)}

_ALIASES = {"yelpfull": "yelp", "imdbreviews": "imdb"}


def _normalize(name: str) -> str:
  return name.lower().replace("-", "").replace("_", "")


def get_task(name: str | TaskSpec) -> TaskSpec:
  """Returns the :class:`TaskSpec` for ``name``.

  Canonical names are the keys of :data:`TASKS`; case, ``-`` and ``_`` are
  ignored (``"SST-2"``, ``"sts-b"``, ``"yelp_full"`` work). A TaskSpec is
  returned unchanged.

  Raises:
    ValueError: unknown task; the message lists the valid names.
  """
  if isinstance(name, TaskSpec):
    return name
  if not isinstance(name, str):
    raise ValueError(f"task name must be a string, got {type(name).__name__}")
  key = _normalize(name)
  key = _ALIASES.get(key, key)
  if key not in TASKS:
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
  return TASKS[key]
