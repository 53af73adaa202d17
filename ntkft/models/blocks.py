"""Parameter blocks: named groups of parameter leaves for per-block kernels.

A *block assignment* maps every leaf of a params pytree, named by its
'/'-joined path (``encoder/layer_4/attention/query/lora_b``), to a block name.
Blocks partition the leaves, so the per-block kernels add up to the full
kernel (see :func:`ntkft.ntk.per_block_ntk_fn`).

Modes understood by :func:`block_of_fn` and :func:`block_names`:

* ``"layer"``: the ``layer_<i>`` path component (``layer_4``); leaves outside a
  layer go to their top-level group (``head``, ``pooler``, ``embeddings``).
* ``"layer_projection"``: the layer plus the module just above the leaf name
  (``encoder/layer_4/attention/query/lora_b`` -> ``layer_4/query``,
  ``encoder/layer_4/ffn/ffn_in/kernel`` -> ``layer_4/ffn_in``); outside layers,
  the top-level group plus that module (``pooler/dense/bias`` ->
  ``pooler/dense``, ``head/kernel`` -> ``head``).
* ``"leaf"``: the full path (one block per leaf).

Example:
  >>> block_names({"encoder": {"layer_0": {"attention": {"query": {
  ...     "kernel": w}}}}, "head": {"kernel": h}}, by="layer")
  {'encoder/layer_0/attention/query/kernel': 'layer_0', 'head/kernel': 'head'}
"""
import re
from typing import Any, Callable, Mapping, Optional, Union

import jax
import numpy as np

from ntkft.typing import Params

BLOCK_MODES = ("layer", "layer_projection", "leaf")
_LAYER_RE = re.compile(r"^layer_\d+$")
_ENCODER_LAYER_RE = re.compile(r"^encoder/layer_(\d+)/")

# A block assignment: a mode name, a function path -> block, or a dict
# path -> block covering exactly the leaves of params.
BlockOf = Union[str, Callable[[str], str], Mapping[str, str]]


def _key_str(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def leaf_paths(params: Params) -> list[str]:
  """'/'-joined paths of the leaves of ``params``, in ``jax.tree`` leaf order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return ["/".join(_key_str(k) for k in path) for path, _ in flat]


def split_encoder_layer(path: str) -> Optional[tuple[int, str]]:
  """``(i, rest)`` of a leaf path ``encoder/layer_<i>/<rest>``; None for any other path.

  The one reading of encoder-layer paths (prefix cache, warm runs, the κ
  study's blocks, the PEFT export). Pure string logic.

  Example:
    >>> split_encoder_layer("encoder/layer_4/attention/query/lora_b")
    (4, 'attention/query/lora_b')
    >>> split_encoder_layer("head/kernel") is None
    True
  """
  m = _ENCODER_LAYER_RE.match(path)
  return (int(m.group(1)), path[m.end():]) if m else None


def encoder_layer_index(path: str) -> Optional[int]:
  """i of a leaf path ``encoder/layer_<i>/...``; None for any other path (head, pooler,
  embeddings, ``layer_<i>`` not under ``encoder/``)."""
  split = split_encoder_layer(path)
  return None if split is None else split[0]


def _layer_block(path: str) -> str:
  parts = path.split("/")
  for part in parts:
    if _LAYER_RE.match(part):
      return part
  return parts[0]


def _layer_projection_block(path: str) -> str:
  parts = path.split("/")
  module = parts[-2] if len(parts) >= 2 else parts[0]
  for part in parts[:-1]:
    if _LAYER_RE.match(part):
      return part if module == part else f"{part}/{module}"
  top = parts[0]
  return top if module == top else f"{top}/{module}"


def block_of_fn(by: str) -> Callable[[str], str]:
  """Returns ``block_of(path) -> block name`` for a mode in ``BLOCK_MODES``.

  Args:
    by: ``"layer"``, ``"layer_projection"`` or ``"leaf"`` (module docstring).

  Raises:
    ValueError: unknown mode.
  """
  if by == "layer":
    return _layer_block
  if by == "layer_projection":
    return _layer_projection_block
  if by == "leaf":
    return lambda path: path
  raise ValueError(f"block_of_fn: unknown mode {by!r}; use one of {BLOCK_MODES}")


def block_names(params: Params, by: str = "layer") -> dict[str, str]:
  """Maps each leaf path of ``params`` to its block name under mode ``by``.

  The returned dict (ordered like the leaves) can be passed as ``block_of`` to
  :func:`ntkft.ntk.per_block_ntk_fn`; ``sorted(set(d.values()))`` lists blocks.

  Raises:
    ValueError: unknown mode, or ``params`` has no leaves.
  """
  fn = block_of_fn(by)
  paths = leaf_paths(params)
  if not paths:
    raise ValueError("block_names: params has no leaves")
  return {p: fn(p) for p in paths}


def block_param_counts(params: Params, by: str = "layer") -> dict[str, int]:
  """{block name: number of parameters} under mode ``by``, blocks in leaf order."""
  counts: dict[str, int] = {}
  for block, leaf in zip(block_names(params, by).values(), jax.tree.leaves(params)):
    counts[block] = counts.get(block, 0) + int(np.size(leaf))
  return counts


def assign_blocks(params: Params, block_of: BlockOf) -> list[str]:
  """Block name of every leaf of ``params`` (in leaf order), validated.

  Args:
    params: the differentiated pytree.
    block_of: a mode name (``BLOCK_MODES``), a callable ``path -> str``, or a
      mapping ``path -> str`` whose keys are exactly the leaf paths.

  Returns:
    A list with one block name per leaf.

  Raises:
    ValueError: empty params, a mapping that misses or adds paths, unknown mode.
    TypeError: ``block_of`` returns a non-string (or empty string).
  """
  paths = leaf_paths(params)
  if not paths:
    raise ValueError("per-block kernel: params has no leaves")
  if isinstance(block_of, str):
    fn = block_of_fn(block_of)
    return [fn(p) for p in paths]
  if isinstance(block_of, Mapping):
    missing = [p for p in paths if p not in block_of]
    extra = sorted(set(block_of) - set(paths))
    if missing or extra:
      raise ValueError(
          "block_of mapping does not match the leaves of params: "
          f"missing paths {missing[:5]}{'...' if len(missing) > 5 else ''}, "
          f"unknown paths {extra[:5]}{'...' if len(extra) > 5 else ''}")
    names = [block_of[p] for p in paths]
  elif callable(block_of):
    names = [block_of(p) for p in paths]
  else:
    raise TypeError(
        "block_of must be a mode name, a callable path -> str, or a mapping "
        f"path -> str; got {type(block_of).__name__}")
  for p, name in zip(paths, names):
    if not isinstance(name, str) or not name:
      raise TypeError(
          f"block_of({p!r}) returned {name!r}; block names must be non-empty "
          "strings")
  return names
