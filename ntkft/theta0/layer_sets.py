"""Untraced plain and sign (Adam) kernels of a trainable set, per block, in float64.

``untraced_block_kernels(apply, trainable, frozen, x, block_of)`` returns, for the
N examples ``x``, outputs of C logits and every block b of the trainable leaves,

  {("plain", b): J_b J_bᵀ,  ("sign", b): J_b sign(J_b)ᵀ}        each (N, N, C, C) float64

with J_b the (N·C, P_b) per-example Jacobian of the block's leaves at the given
θ0 (pass the ``trainable``/``frozen`` of ``ntkft.theta0.build_theta0``). The
Jacobians are computed once, in float32, chunk by chunk (``chunk_size``
examples); every Gram is formed from them in float64 (preregistration
Amendment 2, item 7): the kernel's own rounding is then ~1e-16·λmax, so λmin
carries the float32 Jacobian's relative error (~1e-7·√κ), not float32 Gram
rounding (~1e-7·λmax, which made κ above ~1e6 noise). Both kinds are sums over
parameters, so blocks add: K_S = Σ_{b∈S} K_b.

``head_lora_kernels`` is the split head / LoRA (blocks "lora", "head");
``layer_block`` the split per encoder layer + head. The predictors of
``ntkft.spectral.predictors`` are computed from these.
"""
from typing import Callable

import jax
import numpy as np

from ntkft import xla_workarounds
from ntkft.models import flatten, unflatten
from ntkft.models.blocks import encoder_layer_index
from ntkft.ntk import chunking, jacobians
from ntkft.ntk import precision as precision_lib
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


def layer_block(path: str) -> str:
  """Block of a leaf path: ``layer_<i>`` for ``encoder/layer_<i>/...``, else ``head``."""
  layer = encoder_layer_index(path)
  return "head" if layer is None else f"layer_{layer}"


def block_jacobians(apply: Callable, trainable: Params, frozen: Params, x, block_of: Callable,
                    chunk_size: int = 0) -> dict[str, np.ndarray]:
  """{block: (N·C, P_b) float32 Jacobian}, rows (i, c) at i·C + c, columns in leaf order.

  Args:
    apply: ``apply(trainable, x, frozen) -> (N, C)``, dropout off.
    trainable, frozen: θ0 split as in ``peft.partition``.
    x: the N examples as one padded batch (dict of arrays, leading axis N).
    block_of: leaf path ('/'-joined) -> block name.
    chunk_size: examples per Jacobian chunk (0: one chunk).
  """
  xla_workarounds.check_batched_jacobians()  # raises if XLA miscompiles Jacobians here
  n = chunking.num_examples(x, "x")
  names = list(flatten(trainable))
  blocks = {}
  for name in names:
    blocks.setdefault(block_of(name), []).append(name)
  rows, _ = chunking.example_chunks(n, chunk_size or None)
  parts = {b: [] for b in blocks}
  # jit(vmap(jacrev)): (trainable, frozen, x) -> per-example Jacobians, leaves (n, C, *leaf),
  # compiled once per apply in the core's cache (an apply that cannot be weakly referenced
  # compiles once per call: this call's own dict).
  jac = jacobians.jitted_tree(apply, jacobians.per_example_tree, {})
  with precision_lib.matmul_precision("highest"):
    for r0, r1 in rows:
      xc = jax.tree.map(lambda a, r0=r0, r1=r1: a[r0:r1], x)
      j = flatten(jax.device_get(jac(trainable, frozen, xc)))
      for b, leaf_names in blocks.items():
        parts[b].append(np.concatenate(
            [np.asarray(j[k]).reshape((r1 - r0) * j[k].shape[1], -1) for k in leaf_names], 1))
  return {b: np.concatenate(p, 0) for b, p in parts.items()}


def _untraced(gram: np.ndarray, n: int) -> np.ndarray:
  """(N·C, N·C) -> (N, N, C, C)."""
  c = gram.shape[0] // n
  return gram.reshape(n, c, n, c).transpose(0, 2, 1, 3)


def untraced_block_kernels(apply: Callable, trainable: Params, frozen: Params, x,
                           block_of: Callable, chunk_size: int = 0) -> dict:
  """{(kind, block): (N, N, C, C) float64} plain and sign kernels of every block.

  One Jacobian pass (:func:`block_jacobians`, arguments as there); per block
  J = J_b in float64, plain J Jᵀ and sign J sign(J)ᵀ.
  """
  n = chunking.num_examples(x, "x")
  out = {}
  for b, j32 in block_jacobians(apply, trainable, frozen, x, block_of, chunk_size).items():
    j = j32.astype(np.float64)
    out[("plain", b)] = _untraced(j @ j.T, n)
    out[("sign", b)] = _untraced(j @ np.sign(j).T, n)
  return out


def head_lora_kernels(apply: Callable, trainable: Params, frozen: Params, x,
                      chunk_size: int = 0) -> dict:
  """The four (N, N, C, C) kernels of the module docstring (blocks "lora", "head")."""
  split_head(trainable)  # both parts must exist
  return untraced_block_kernels(apply, trainable, frozen, x, _part_of, chunk_size)
