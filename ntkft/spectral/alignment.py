"""Kernel-target alignment (Cristianini et al. 2002) of a kernel and its targets.

``A(K, Y) = tr(Yᵀ K Y) / (‖K‖_F ‖Y‖_F²)`` for a kernel K (n, n) and targets (or
residuals) Y (n, C), in float64: the ``max_alignment`` criterion of
``ntkft.select`` and the ``alignment`` predictor of ``ntkft.spectral.predictors``.
"""
from typing import Any

import numpy as np


def kernel_target_alignment(kernel: Any, targets: Any) -> float:
  """``tr(Y^T K Y) / (|K|_F |Y|_F^2)``; 0 for K = 0.

  Args:
    kernel: (n, n).
    targets: (n,) or (n, C).
  """
  kernel = np.asarray(kernel, dtype=np.float64)
  y = np.asarray(targets, dtype=np.float64).reshape(kernel.shape[0], -1)
  norm_k, norm_y = np.linalg.norm(kernel), float(np.sum(y * y))
  if norm_k == 0 or norm_y == 0:
    return 0.0
  return float(np.sum(y * (kernel @ y)) / (norm_k * norm_y))
