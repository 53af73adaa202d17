"""Spectral predictors of a layer set's kernels: 2 kinds × 2 layouts × with/without head.

For a trainable set split into a head block and the LoRA blocks, with kernels
given untraced, K_b of shape (N, N, C, C) (``ntkft.ntk`` with ``trace_axes=()``):

* kind **plain**: K = J Jᵀ; kind **sign** (Adam): K = J sign(J)ᵀ, whose
  symmetric part (K + Kᵀ)/2 is analysed (``spectrum_stats(symmetrize=True)``);
* layout **flat**: the (N·C, N·C) matrix with row (i, c) = i·C + c, the operator
  of squared-loss gradient descent, R = 1/(2n) Σ‖f − y‖² ⇒ ṙ = −(1/n) K r;
  layout **traced**: (N, N), K[i, j] = (1/C) Σ_c K[i, j, c, c];
* **head**: K_lora + K_head; **nohead**: K_lora (both kinds are sums over
  parameters, so blocks add).

Per kernel: ``kappa``, ``lambda_min``, ``lambda_max``, ``effective_rank``
(``ntkft.spectral.stats``, λmin clamped at ``rel_floor``·λmax) and
``alignment`` = ⟨K, yyᵀ⟩_F / (‖K‖_F ‖y‖²) (``ntkft.spectral.kernel_target_alignment``)
with y the class-centred one-hot targets (flat: vec(Y); traced: Y).
"""
import math
import warnings

import numpy as np

from ntkft import targets as targets_lib
from ntkft.spectral.alignment import kernel_target_alignment
from ntkft.spectral.stats import condition_number, spectrum_stats, symmetric_kernel
from ntkft.typing import KERNEL_KINDS, SIGN

KINDS = KERNEL_KINDS          # "plain", "sign": the kernel kinds' one vocabulary
LAYOUTS = ("flat", "traced")
HEADS = ("head", "nohead")
STATS = ("kappa", "lambda_min", "lambda_max", "effective_rank", "alignment")


def kernel_name(kind: str, layout: str, head: str) -> str:
  """E.g. ``plain_flat_head``: the key of one kernel's predictors."""
  return f"{kind}_{layout}_{head}"


def flat(k: np.ndarray) -> np.ndarray:
  """(N, N, C, C) -> (N·C, N·C), row (i, c) at i·C + c."""
  k = np.asarray(k, np.float64)
  if k.ndim != 4 or k.shape[0] != k.shape[1] or k.shape[2] != k.shape[3]:
    raise ValueError(f"untraced kernel must have shape (N, N, C, C), got {k.shape}")
  n, _, c, _ = k.shape
  return k.transpose(0, 2, 1, 3).reshape(n * c, n * c)


def traced(k: np.ndarray) -> np.ndarray:
  """(N, N, C, C) -> (N, N): the mean over logits of the diagonal, (1/C) Σ_c K[:, :, c, c]."""
  k = np.asarray(k, np.float64)
  return np.einsum("ijcc->ij", k) / k.shape[2]


def centred_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(N,) class ids -> (N, C) one-hot minus its column means."""
  y = targets_lib.targets(np.asarray(labels, int), num_classes, False, np.float64)
  return y - y.mean(0, keepdims=True)


def predictors(k: np.ndarray, y: np.ndarray, symmetrize: bool,
               rel_floor: float = 1e-12) -> dict:
  """The 5 statistics of one square kernel ``k`` with targets ``y`` (rows of k)."""
  with warnings.catch_warnings():  # a clamped λmin is reported in the result
    warnings.simplefilter("ignore")
    s = spectrum_stats(k, rel_floor=rel_floor, symmetrize=symmetrize)
  sym = symmetric_kernel(k, "k", symmetrize=True) if symmetrize else k
  # The preregistered predictor (docs/preregistration.md): κ with λmin clamped
  # at rel_floor·λmax, so a singular or indefinite kernel ranks as the most
  # ill-conditioned (1/rel_floor) instead of inf (JSON null, dropped from ranks).
  floor = rel_floor * s["lambda_max"]
  kappa = condition_number([max(s["lambda_min"], floor), s["lambda_max"]])
  return {"kappa": kappa if math.isfinite(kappa) else None, "lambda_min": s["lambda_min"],
          "lambda_max": s["lambda_max"], "effective_rank": s["effective_rank"],
          "alignment": kernel_target_alignment(sym, y),
          "lambda_min_clamped": bool(s["lambda_min_below_floor"])}


def layer_set_predictors(blocks: dict, labels: np.ndarray) -> dict:
  """Predictors of all 8 kernels of a layer set.

  Args:
    blocks: {(kind, part): (N, N, C, C) kernel} for kind in KINDS and part in
      ("lora", "head").
    labels: (N,) class ids of the N examples.

  Returns:
    {kernel_name(kind, layout, head): {stat: value}}.
  """
  c = next(iter(blocks.values())).shape[2]
  y = centred_targets(labels, c)
  out = {}
  for kind in KINDS:
    for head in HEADS:
      k = blocks[(kind, "lora")] + (blocks[(kind, "head")] if head == "head" else 0.0)
      symmetrize = kind == SIGN
      out[kernel_name(kind, "flat", head)] = predictors(flat(k), y.reshape(-1), symmetrize)
      out[kernel_name(kind, "traced", head)] = predictors(traced(k), y, symmetrize)
  return out
