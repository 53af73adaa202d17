"""Evaluation: GLUE metrics (pure numpy)."""

from ntkft.evals.metrics import (
    METRICS,
    accuracy,
    compute_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    spearman,
)
