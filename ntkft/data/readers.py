"""Readers for GLUE TSVs, LM-BFF k-shot folders and IMDb/Yelp JSON lines.

Folder convention for ``load_examples(task, split, data_dir)``: the file is
looked up at ``data_dir / spec.dir_name / file`` when that task folder exists,
else at ``data_dir / file``. So ``data_dir`` may be

* the folder holding the task folders: ``.../data/glue`` (reads
  ``glue/SST-2/dev.tsv``), or for IMDb/Yelp the data root ``.../data``
  (reads ``data/imdb/train.jsonl``);
* the task folder itself: ``.../glue/SST-2``, ``.../data/imdb``,
  ``.../data/yelp_full``;
* a few-shot folder ``.../k-shot-1k-test/<TASK>/<k>-<seed>`` (see
  :func:`kshot_dir`); its TSVs have the GLUE column layout.

TSVs are split on tabs only: they contain literal double quotes, so csv
quoting must never be applied. A UTF-8 BOM (MRPC) is dropped. Every error
is a :class:`DataFormatError` naming the file and the 1-based line number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ntkft.data.tasks import TaskSpec, get_task


class DataFormatError(ValueError):
  """A data file is missing or malformed (message names file and line)."""


@dataclasses.dataclass(frozen=True)
class Examples:
  """A list of labelled (single or paired) texts.

  Attributes:
    text_a: first sentence of each example, length N.
    text_b: second sentence of each example (length N), or None for
      single-sentence tasks.
    labels: (N,) int32 class ids, or float32 scores for regression (STS-B).
    task: canonical task name.
    split: split name as requested (``train``, ``dev``, ...).
    source: path of the file the examples were read from (or a description).
  """

  text_a: list[str]
  text_b: list[str] | None
  labels: np.ndarray
  task: str
  split: str
  source: str

  def __post_init__(self):
    n = len(self.text_a)
    if self.text_b is not None and len(self.text_b) != n:
      raise ValueError(f"text_b has {len(self.text_b)} entries, text_a {n}")
    if np.shape(self.labels) != (n,):
      raise ValueError(
          f"labels must have shape ({n},), got {np.shape(self.labels)}"
      )

  def __len__(self) -> int:
    return len(self.text_a)

  def select(self, indices: Sequence[int] | np.ndarray) -> "Examples":
    """Returns the examples at ``indices`` (in that order)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (
        indices.min() < -len(self) or indices.max() >= len(self)
    ):
      raise IndexError(f"indices out of range for {len(self)} examples")
    return dataclasses.replace(
        self,
        text_a=[self.text_a[i] for i in indices],
        text_b=None
        if self.text_b is None
        else [self.text_b[i] for i in indices],
        labels=self.labels[indices],
    )


# ---------------------------------------------------------------------------
# Paths.


def kshot_dir(
    data_root: str | os.PathLike, task: str | TaskSpec, k: int, seed: int
) -> Path:
  """Folder of an LM-BFF few-shot split: ``k-shot-1k-test/<TASK>/<k>-<seed>``.

  Args:
    data_root: the data root (holding ``k-shot-1k-test/``) or the
      ``k-shot-1k-test`` folder itself.
    task: task name or spec (only the GLUE tasks have k-shot folders).
    k: examples per class (16 or 512 are staged).
    seed: sampling seed (13, 21, 42, 87 or 100 are staged).

  Raises:
    DataFormatError: the folder does not exist (lists what is there).
  """
  spec = get_task(task)
  root = Path(data_root)
  if (root / "k-shot-1k-test").is_dir():
    root = root / "k-shot-1k-test"
  path = root / spec.dir_name / f"{k}-{seed}"
  if not path.is_dir():
    parent = path.parent
    have = sorted(os.listdir(parent)) if parent.is_dir() else []
    raise DataFormatError(
        f"few-shot folder {path} not found; {parent} holds: "
        f"{', '.join(have) if have else '(nothing / missing)'}"
    )
  return path


def resolve_path(
    spec: TaskSpec, split: str, data_dir: str | os.PathLike
) -> Path:
  """Path of ``split`` of ``spec`` under ``data_dir`` (see module docstring).

  Raises:
    ValueError: unknown split.
    DataFormatError: the file does not exist (lists the folder's contents).
  """
  file_name = spec.file_name(split)
  data_dir = Path(data_dir)
  task_dir = data_dir / spec.dir_name
  folder = task_dir if task_dir.is_dir() else data_dir
  path = folder / file_name
  if not path.is_file():
    if folder.is_dir():
      have = ", ".join(sorted(os.listdir(folder))) or "(empty)"
      raise DataFormatError(
          f"{spec.name} {split}: file {path} not found; {folder} holds: {have}"
      )
    raise DataFormatError(
        f"{spec.name} {split}: file {path} not found; "
        f"folder {folder} does not exist"
    )
  return path


# ---------------------------------------------------------------------------
# TSV.

# CoLA source codes look like 'gj04', 'b_73', 'r-67', 'sgww85'.
_COLA_MERGED = re.compile(r"^(.*[^A-Za-z0-9_\-])([a-z]+[_\-]?[0-9]+)$")


def _read_lines(path: Path) -> list[str]:
  try:
    text = path.read_text(encoding="utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataFormatError(f"{path}: not valid UTF-8 ({e})") from None
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # trailing newline; a missing one (CoLA dev) is fine too
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _split_cola_merged(
    fields: list[str], path: Path, lineno: int
) -> list[list[str]]:
  """Splits a CoLA line holding two examples (7 fields) into two rows.

  LM-BFF's generator wrote CoLA dev's last line (no trailing newline) straight
  before the next one, giving ``code, label, mark, sentence+code2, label2,
  mark2, sentence2``.
  """
  match = _COLA_MERGED.match(fields[3])
  if match is None:
    raise DataFormatError(
        f"{path}:{lineno}: expected 4 tab-separated fields, got 7, and field 4 "
        f"{fields[3]!r} is not '<sentence><source code>' (two merged lines)"
    )
  return [fields[:3] + [match.group(1)], [match.group(2)] + fields[4:]]


def _read_tsv(
    spec: TaskSpec, path: Path
) -> tuple[list[list[str]], list[int], dict[str, int]]:
  """Rows (lists of fields), their 1-based line numbers and the header index."""
  lines = _read_lines(path)
  if not lines:
    raise DataFormatError(f"{path}: file is empty")
  header: dict[str, int] = {}
  start = 0
  if spec.has_header:
    names = lines[0].split("\t")
    header = {name.strip(): i for i, name in enumerate(names)}
    num_columns = len(names)
    wanted = list(spec.text_columns) + [spec.label_column]
    missing = [c for c in wanted if c not in header]
    if missing:
      hint = (
          " (unlabeled GLUE test file?)"
          if missing == [spec.label_column]
          else ""
      )
      raise DataFormatError(
          f"{path}:1: header lacks column(s) {missing}{hint}; header is {names}"
      )
    start = 1
  else:
    num_columns = spec.num_columns
    if lines[0].startswith("index\t"):
      raise DataFormatError(
          f"{path}:1: {spec.name} files have no header, but line 1 is "
          f"{lines[0]!r} (the unlabeled GLUE test file is not supported)"
      )
  rows, linenos = [], []
  for lineno, line in enumerate(lines[start:], start=start + 1):
    fields = line.split("\t")
    if len(fields) == 2 * num_columns - 1 and spec.name == "cola":
      for row in _split_cola_merged(fields, path, lineno):
        rows.append(row)
        linenos.append(lineno)
      continue
    if len(fields) != num_columns:
      raise DataFormatError(
          f"{path}:{lineno}: expected {num_columns} tab-separated fields, got "
          f"{len(fields)}"
      )
    rows.append(fields)
    linenos.append(lineno)
  return rows, linenos, header


def _load_tsv(spec: TaskSpec, split: str, path: Path) -> Examples:
  rows, linenos, header = _read_tsv(spec, path)

  def col(column):
    return header[column] if isinstance(column, str) else column

  text_cols = [col(c) for c in spec.text_columns]
  label_col = col(spec.label_column)
  texts = [[] for _ in text_cols]
  labels = []
  label_ids = {raw: i for i, raw in enumerate(spec.raw_labels)}
  for fields, lineno in zip(rows, linenos):
    for out, c in zip(texts, text_cols):
      text = fields[c]
      if not text.strip():
        raise DataFormatError(f"{path}:{lineno}: empty text in column {c + 1}")
      out.append(text)
    raw = fields[label_col].strip()
    if spec.is_regression:
      try:
        score = float(raw)
      except ValueError:
        raise DataFormatError(
            f"{path}:{lineno}: score {raw!r} is not a float"
        ) from None
      if not np.isfinite(score):
        raise DataFormatError(f"{path}:{lineno}: score {raw!r} is not finite")
      labels.append(score)
    else:
      if raw not in label_ids:
        raise DataFormatError(
            f"{path}:{lineno}: unknown label {raw!r}; expected one of "
            f"{list(spec.raw_labels)}"
        )
      labels.append(label_ids[raw])
  dtype = np.float32 if spec.is_regression else np.int32
  return Examples(
      text_a=texts[0],
      text_b=texts[1] if len(texts) > 1 else None,
      labels=np.asarray(labels, dtype=dtype).reshape(-1),
      task=spec.name,
      split=split,
      source=str(path),
  )


# ---------------------------------------------------------------------------
# JSON lines (IMDb, Yelp).


def _load_jsonl(spec: TaskSpec, split: str, path: Path) -> Examples:
  texts, labels = [], []
  (text_key,) = spec.text_columns
  with open(path, encoding="utf-8-sig") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        raise DataFormatError(f"{path}:{lineno}: empty line")
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{lineno}: invalid JSON ({e})") from None
      if not isinstance(record, dict):
        raise DataFormatError(f"{path}:{lineno}: expected a JSON object")
      for key in (text_key, spec.label_column):
        if key not in record:
          raise DataFormatError(f"{path}:{lineno}: missing key {key!r}")
      text = record[text_key]
      if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{path}:{lineno}: empty text")
      label = record[spec.label_column]
      if isinstance(label, bool) or label not in (0, 1):
        raise DataFormatError(
            f"{path}:{lineno}: unknown label {label!r}; expected 0 or 1"
        )
      stars = record.get("stars")
      if spec.source == "yelp" and stars is not None:
        if not isinstance(stars, (int, float)) or int(stars > 3) != label:
          raise DataFormatError(
              f"{path}:{lineno}: label {label} disagrees with stars "
              f"{record['stars']} (label must be stars > 3)"
          )
      texts.append(text)
      labels.append(int(label))
  return Examples(
      text_a=texts,
      text_b=None,
      labels=np.asarray(labels, dtype=np.int32).reshape(-1),
      task=spec.name,
      split=split,
      source=str(path),
  )


# ---------------------------------------------------------------------------
# Entry point.


def load_examples(
    task: str | TaskSpec, split: str, data_dir: str | os.PathLike
) -> Examples:
  """Reads one split of one task.

  Args:
    task: task name (see :data:`ntkft.data.tasks.TASKS`) or spec.
    split: ``train``, ``dev`` or ``test`` (MNLI also ``dev_matched``,
      ``dev_mismatched``, ``test_matched``, ``test_mismatched``). For IMDb and
      Yelp ``dev`` is the test set. GLUE's unlabeled test files are rejected.
    data_dir: see the module docstring, e.g. ``/work/shared/data/glue``,
      ``/work/shared/data/imdb`` or ``kshot_dir(root, "rte", 16, 42)``.

  Returns:
    :class:`Examples` in file order, labels as class ids (int32) or STS-B
    scores (float32).

  Raises:
    ValueError: unknown task or split.
    DataFormatError: missing file, wrong column count, unknown label, empty
      text, non-float score (each naming the file and line).
  """
  spec = get_task(task)
  path = resolve_path(spec, split, data_dir)
  if spec.source == "glue":
    return _load_tsv(spec, split, path)
  return _load_jsonl(spec, split, path)


_DATA_SUBDIRS = {"glue": "glue", "imdb": "imdb", "yelp": "yelp_full"}


def default_data_root() -> Path:
  """``$NTKFT_DATA``, else ``../shared/data`` beside the repository checkout."""
  env = os.environ.get("NTKFT_DATA")
  if env:
    return Path(env)
  return Path(__file__).resolve().parents[3] / "shared" / "data"


def task_data_dir(task: str | TaskSpec, root: str | os.PathLike | None = None) -> Path:
  """The folder :func:`load_examples` expects for ``task`` under a data root
  (``root/glue``, ``root/imdb`` or ``root/yelp_full``; root defaults to
  :func:`default_data_root`)."""
  spec = get_task(task)
  base = Path(root) if root else default_data_root()
  return base / _DATA_SUBDIRS[spec.source]
