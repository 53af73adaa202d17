"""Matmul precision of the kernel computations.

Every kernel function takes ``precision`` (default ``"highest"``) and traces its
jitted pieces under ``jax.default_matmul_precision(precision)``, so every
``dot_general`` of the model and of the contraction carries it. On CPUs float32
matmuls are exact float32 at any setting (the kernel is unchanged); on GPUs
JAX's default runs float32 matmuls in TF32 (10-bit mantissa), which moves the
small eigenvalues of a kernel and hence its condition number.
"""
import contextlib

import jax

PRECISIONS = ("default", "high", "highest")


def check_precision(precision: str) -> str:
  """``precision`` validated: one of :data:`PRECISIONS` (jax matmul precision names)."""
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  return precision


def matmul_precision(precision: str):
  """Context in which traced matmuls use ``precision`` ("default": leave JAX's)."""
  if check_precision(precision) == "default":
    return contextlib.nullcontext()
  return jax.default_matmul_precision(precision)
