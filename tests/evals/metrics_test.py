"""Tests for ntkft.evals.metrics: hand-computed values and scipy references."""

import numpy as np
import pytest
import scipy.stats

from ntkft.evals import metrics

PRED = np.array([1, 0, 1, 1, 0])
LABEL = np.array([1, 1, 1, 0, 0])
# TP = 2 (rows 0, 2), TN = 1 (row 4), FP = 1 (row 3), FN = 1 (row 1).


def test_accuracy():
  assert metrics.accuracy(PRED, LABEL) == pytest.approx(3 / 5)


def test_f1():
  # 2 TP / (2 TP + FP + FN) = 4 / 6.
  assert metrics.f1(PRED, LABEL) == pytest.approx(2 / 3)
  # Positive class is 1: swapping roles changes the value.
  # With 0 as positive: TP = 1, FP = 1, FN = 1 -> 2/4.
  assert metrics.f1(1 - PRED, 1 - LABEL) == pytest.approx(1 / 2)


def test_matthews_binary():
  # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
  #   = (2 - 1) / sqrt(3*3*2*2).
  assert metrics.matthews_corrcoef(PRED, LABEL) == pytest.approx(1 / 6)
  assert metrics.matthews_corrcoef(LABEL, LABEL) == pytest.approx(1.0)
  assert metrics.matthews_corrcoef(1 - LABEL, LABEL) == pytest.approx(-1.0)


def test_matthews_multiclass():
  labels = np.array([0, 1, 2, 0, 1, 2])
  preds = np.array([0, 2, 1, 0, 0, 2])
  # C = [[2,0,0],[1,0,1],[0,1,1]]; t = (2,2,2), p = (3,1,2), trace 3, s = 6:
  # (3*6 - 12) / sqrt((36 - 14) (36 - 12)) = 6 / sqrt(528).
  assert metrics.matthews_corrcoef(preds, labels) == pytest.approx(
      6 / np.sqrt(528)
  )


def test_pearson_and_spearman_by_hand():
  # dx = (-1.5,-.5,.5,1.5), dy = (-3,-1,0,4): 11 / sqrt(5 * 26).
  assert metrics.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(
      11 / np.sqrt(130)
  )
  # Average ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5).
  assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(
      np.sqrt(0.9)
  )


def test_degenerate_cases_return_zero():
  constant = np.zeros(5, dtype=int)
  assert metrics.matthews_corrcoef(constant, LABEL) == 0.0
  assert metrics.matthews_corrcoef(LABEL, constant) == 0.0
  assert metrics.pearson(np.ones(4), [1.0, 2.0, 3.0, 5.0]) == 0.0
  assert metrics.spearman([1.0, 2.0, 3.0, 5.0], np.ones(4)) == 0.0
  assert metrics.f1(constant, constant) == 0.0  # no positives at all
  assert metrics.accuracy(constant, constant) == 1.0


def test_matthews_against_pearson_of_indicators():
  # For binary labels MCC equals the Pearson correlation of the 0/1 vectors.
  rng = np.random.default_rng(1)
  p, t = rng.integers(0, 2, size=300), rng.integers(0, 2, size=300)
  assert metrics.matthews_corrcoef(p, t) == pytest.approx(
      scipy.stats.pearsonr(p, t)[0], abs=1e-12
  )


def test_compute_metrics_keys_and_values():
  assert metrics.compute_metrics("mrpc", PRED, LABEL) == pytest.approx(
      {"accuracy": 0.6, "f1": 2 / 3}
  )
  assert metrics.compute_metrics("qqp", PRED, LABEL).keys() == {
      "accuracy",
      "f1",
  }
  assert metrics.compute_metrics("cola", PRED, LABEL) == pytest.approx(
      {"matthews": 1 / 6}
  )
  assert metrics.compute_metrics("sst2", PRED, LABEL) == pytest.approx(
      {"accuracy": 0.6}
  )
  assert metrics.compute_metrics(
      "STS-B", [1, 2, 3, 4], [2, 4, 5, 9]
  ) == pytest.approx({"pearson": 11 / np.sqrt(130), "spearman": 1.0})
  from ntkft.data import get_task

  assert metrics.compute_metrics(
      get_task("mnli"), [0, 1, 2], [0, 1, 1]
  ) == pytest.approx({"accuracy": 2 / 3})


def test_compute_metrics_errors():
  with pytest.raises(ValueError, match="equal length"):
    metrics.compute_metrics("sst2", [0, 1], [0, 1, 1])
  with pytest.raises(ValueError, match="argmax"):
    metrics.compute_metrics("sst2", np.zeros((2, 2)), [0, 1])
  with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
    metrics.compute_metrics("sst2", [0, 2], [0, 1])
  with pytest.raises(ValueError, match="unknown task"):
    metrics.compute_metrics("sst5", [0], [0])
  with pytest.raises(ValueError, match="empty"):
    metrics.accuracy([], [])
