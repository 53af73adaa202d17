"""Untraced plain and sign (Adam) kernels of a trainable set, split head / LoRA.

``head_lora_kernels(apply, trainable, frozen, x)`` returns, for the N examples
``x`` and outputs of C logits,

  {("plain", "lora"): Σ_{p ∈ LoRA} J_p J_pᵀ,   ("plain", "head"): Σ_{p ∈ head} J_p J_pᵀ,
   ("sign",  "lora"): Σ_{p ∈ LoRA} J_p sign(J_p)ᵀ, ("sign", "head"): ...}

each (N, N, C, C) float64 (``ntkft.ntk`` with ``trace_axes=()``), at the given
θ0 (pass the ``trainable``/``frozen`` of ``ntkft.theta0.build_theta0``). The
predictors of ``ntkft.spectral.predictors`` are computed from these.
"""
from typing import Callable

import numpy as np

from ntkft import ntk, peft
from ntkft.models import flatten, unflatten
from ntkft.typing import Params

PARTS = ("lora", "head")


def _part_of(path: str) -> str:
  return "head" if path.startswith("head/") or path == "head" else "lora"


def split_head(trainable: Params) -> dict[str, Params]:
  """{"lora": leaves outside ``head/``, "head": the head's leaves} (nested dicts).

  Raises:
    ValueError: either part is empty.
  """
  flat = flatten(trainable)
  parts = {p: unflatten({k: v for k, v in flat.items() if _part_of(k) == p}) for p in PARTS}
  empty = [p for p in PARTS if not parts[p]]
  if empty:
    raise ValueError(f"trainable set has no {empty[0]} parameters; names: {sorted(flat)[:4]}")
  return parts


def head_lora_kernels(apply: Callable, trainable: Params, frozen: Params, x,
                      chunk_size: int = 0) -> dict:
  """The four (N, N, C, C) kernels of the module docstring.

  Args:
    apply: ``apply(trainable, x, frozen) -> (N, C)``, dropout off.
    trainable, frozen: θ0 split as in ``peft.partition``.
    x: the N examples as one padded batch (dict of arrays).
    chunk_size: examples per kernel chunk (0: one chunk).
  """
  options = dict(trace_axes=(), batch_size=chunk_size or None)
  plain = ntk.per_block_ntk_fn(apply, _part_of, **options)(x, None, trainable, frozen)
  out = {("plain", p): np.asarray(plain[p], np.float64) for p in PARTS}
  parts = split_head(trainable)
  for p in PARTS:
    other = parts["head" if p == "lora" else "lora"]
    rest = peft.combine(other, frozen)
    sign = ntk.adam_ntk_fn(apply, **options)(x, None, parts[p], rest)
    out[("sign", p)] = np.asarray(sign, np.float64)
  return out
