"""GLUE metrics (numpy; correlations from scipy.stats).

All functions take 1-D arrays of equal, non-zero length and return a Python
float. Degenerate cases return 0.0 instead of NaN (as sklearn does for MCC):

* :func:`matthews_corrcoef` when the denominator is 0 (constant predictions or
  constant labels);
* :func:`pearson` / :func:`spearman` when either input is constant;
* :func:`f1` when there are no positive predictions and no positive labels
  (precision and recall both undefined).

Example::

  compute_metrics("mrpc", np.array([1, 0, 1]), np.array([1, 1, 1]))
  # {'accuracy': 0.666..., 'f1': 0.8}
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.stats

from ntkft.data.tasks import TaskSpec, get_task


def _pair(predictions, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  if predictions.ndim != 1 or predictions.shape != labels.shape:
    raise ValueError(
        f"{name}: predictions {predictions.shape} and labels "
        f"{labels.shape} must be 1-D arrays of equal length "
        "(take the argmax of logits first)"
    )
  if predictions.size == 0:
    raise ValueError(f"{name}: empty inputs")
  return predictions, labels


def accuracy(predictions, labels) -> float:
  """Fraction of exact matches, ``mean(pred == label)``."""
  predictions, labels = _pair(predictions, labels, "accuracy")
  return float(np.mean(predictions == labels))


def f1(predictions, labels) -> float:
  """Binary F1 of the positive class 1: ``2 TP / (2 TP + FP + FN)``.

  Returns 0.0 when TP + FP + FN = 0 (no positives anywhere).
  """
  predictions, labels = _pair(predictions, labels, "f1")
  pred_pos, true_pos = predictions == 1, labels == 1
  tp = np.sum(pred_pos & true_pos)
  fp = np.sum(pred_pos & ~true_pos)
  fn = np.sum(~pred_pos & true_pos)
  denom = 2 * tp + fp + fn
  return float(2 * tp / denom) if denom else 0.0


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation coefficient (multi-class form of Gorodkin 2004).

  With confusion matrix C (rows true, cols predicted), t_k = row sums,
  p_k = column sums, c = trace(C), s = N::

    MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))

  which for two classes is
  ``(TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``.
  Returns 0.0 when the denominator is 0.
  """
  predictions, labels = _pair(predictions, labels, "matthews_corrcoef")
  classes, inverse = np.unique(
      np.concatenate([labels, predictions]), return_inverse=True
  )
  k, n = len(classes), len(labels)
  true_idx, pred_idx = inverse[:n], inverse[n:]
  confusion = np.zeros((k, k), dtype=np.float64)
  np.add.at(confusion, (true_idx, pred_idx), 1.0)
  t = confusion.sum(axis=1)
  p = confusion.sum(axis=0)
  c = np.trace(confusion)
  s = float(n)
  cov_tp = c * s - p @ t
  cov_pp = s * s - p @ p
  cov_tt = s * s - t @ t
  denom = cov_pp * cov_tt
  return float(cov_tp / np.sqrt(denom)) if denom > 0 else 0.0


def _constant(a: np.ndarray) -> bool:
  return bool(np.all(a == a.flat[0]))


def pearson(predictions, labels) -> float:
  """Pearson correlation (``scipy.stats.pearsonr``); 0.0 if either input is constant."""
  x, y = _pair(predictions, labels, "pearson")
  if _constant(x) or _constant(y):
    return 0.0
  return float(scipy.stats.pearsonr(x.astype(np.float64), y.astype(np.float64)).statistic)


def spearman(predictions, labels) -> float:
  """Spearman rank correlation (``scipy.stats.spearmanr``: average ranks for
  ties); 0.0 if either input is constant."""
  x, y = _pair(predictions, labels, "spearman")
  if _constant(x) or _constant(y):
    return 0.0
  return float(scipy.stats.spearmanr(x, y).statistic)


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(
    task: str | TaskSpec, predictions, labels
) -> dict[str, float]:
  """All metrics of ``task`` (``spec.metrics``), keyed by metric name.

  Args:
    task: task name or spec.
    predictions: (N,) predicted class ids, or scores for regression.
    labels: (N,) true class ids / scores.

  Returns:
    e.g. ``{"accuracy": ..., "f1": ...}`` (MRPC, QQP), ``{"matthews": ...}``
    (CoLA), ``{"pearson": ..., "spearman": ...}`` (STS-B).
  """
  spec = get_task(task)
  predictions, labels = _pair(predictions, labels, spec.name)
  if not spec.is_regression:
    for name, array in (("predictions", predictions), ("labels", labels)):
      bad = array[
          (array < 0) | (array >= spec.num_labels) | (array != np.round(array))
      ]
      if bad.size:
        raise ValueError(
            f"{spec.name}: {name} must be class ids in "
            f"[0, {spec.num_labels}), got e.g. {bad[:5].tolist()}"
        )
  return {name: METRICS[name](predictions, labels) for name in spec.metrics}
