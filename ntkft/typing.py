"""Type aliases shared across ntkft (after neural_tangents/_src/utils/typing.py).

Params are plain nested dicts of arrays whose '/'-joined paths are readable names,
e.g. ``encoder/layer_4/attention/query/kernel``. A batch is a flat dict of arrays
with fixed keys (see ``ntkft.data``):

  input_ids       int32   (B, L)
  attention_mask  int32   (B, L)   1 for real tokens, 0 for padding
  token_type_ids  int32   (B, L)
  labels          int32 (B,) for classification, float32 (B,) for regression
  weights         float32 (B,)     1 for real examples, 0 for rows padding a batch
"""
from typing import Any, Callable, Literal, Mapping

import jax

Array = jax.Array
Params = Mapping[str, Any]
Batch = Mapping[str, Any]
# apply_fn(params, batch, *extra) -> outputs (B, O)
ApplyFn = Callable[..., Array]

# Kernel kinds, one name each across ntkft (and in stored results, e.g. the κ study's keys):
#   "plain"  K(x1, x2) = J(x1) J(x2)ᵀ, the empirical NTK;
#   "sign"   K(x1, x2) = J(x1) sign(J(x2))ᵀ, the sign kernel (Malladi et al. 2023's Adam/SignGD
#            kernel), asymmetric.
KernelKind = Literal["plain", "sign"]
PLAIN: KernelKind = "plain"
SIGN: KernelKind = "sign"
KERNEL_KINDS: tuple[KernelKind, ...] = (PLAIN, SIGN)
# The kinds' former names (some modules and configs said "ntk"/"adam"), for the error only.
_RENAMED_KINDS = {"ntk": PLAIN, "adam": SIGN}


def check_kernel_kind(kind, where: str) -> KernelKind:
  """Returns ``kind`` if it is one of :data:`KERNEL_KINDS`.

  Raises:
    ValueError (one line): naming ``kind``, ``where`` it was given and the valid
      kinds; for a former name ("ntk", "adam") also the name it became.
  """
  if isinstance(kind, str) and kind in KERNEL_KINDS:
    return kind
  renamed = _RENAMED_KINDS.get(kind) if isinstance(kind, str) else None
  hint = f" (renamed to {renamed!r})" if renamed else ""
  raise ValueError(f"{where}: unknown kernel kind {kind!r}{hint}; choose from {KERNEL_KINDS}")
