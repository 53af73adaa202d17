"""Untraced plain and sign (Adam) kernels of a trainable set, split head / LoRA.

``head_lora_kernels(apply, trainable, frozen, x)`` returns, for the N examples
``x`` and outputs of C logits,

  {("plain", "lora"): Σ_{p ∈ LoRA} J_p J_pᵀ,   ("plain", "head"): Σ_{p ∈ head} J_p J_pᵀ,
   ("sign",  "lora"): Σ_{p ∈ LoRA} J_p sign(J_p)ᵀ, ("sign", "head"): ...}

each (N, N, C, C) float64 (``ntkft.ntk`` with ``trace_axes=()``), at the given
θ0 (pass the ``trainable``/``frozen`` of ``ntkft.theta0.build_theta0``). The
predictors of ``ntkft.spectral.predictors`` are computed from these.
``block_kernels`` does the same for any partition of the trainable leaves
(e.g. per layer, for layer selection: both kinds add over blocks).
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


def block_kernels(apply: Callable, trainable: Params, frozen: Params, x, block_of: Callable,
                  chunk_size: int = 0) -> dict:
  """{(kind, block): (N, N, C, C)} plain and sign kernels of every block of ``trainable``.

  Args:
    apply: ``apply(trainable, x, frozen) -> (N, C)``, dropout off.
    trainable, frozen: θ0 split as in ``peft.partition``.
    x: the N examples as one padded batch (dict of arrays).
    block_of: leaf path ('/'-joined) -> block name.
    chunk_size: examples per kernel chunk (0: one chunk).
  """
  options = dict(trace_axes=(), batch_size=chunk_size or None)
  plain = ntk.per_block_ntk_fn(apply, block_of, **options)(x, None, trainable, frozen)
  out = {("plain", b): np.asarray(k, np.float64) for b, k in plain.items()}
  flat = flatten(trainable)
  for b in plain:
    mine = unflatten({k: v for k, v in flat.items() if block_of(k) == b})
    rest = peft.combine(unflatten({k: v for k, v in flat.items() if block_of(k) != b}), frozen)
    out[("sign", b)] = np.asarray(ntk.adam_ntk_fn(apply, **options)(x, None, mine, rest),
                                  np.float64)
  return out


def head_lora_kernels(apply: Callable, trainable: Params, frozen: Params, x,
                      chunk_size: int = 0) -> dict:
  """The four (N, N, C, C) kernels of the module docstring (blocks "lora", "head")."""
  split_head(trainable)  # both parts must exist
  return block_kernels(apply, trainable, frozen, x, _part_of, chunk_size)
