"""Evaluation: GLUE metrics (pure numpy)."""

from ntkft.evals.metrics import METRICS
from ntkft.evals.metrics import accuracy
from ntkft.evals.metrics import compute_metrics
from ntkft.evals.metrics import f1
from ntkft.evals.metrics import matthews_corrcoef
from ntkft.evals.metrics import pearson
from ntkft.evals.metrics import spearman
