"""A selection of parameter blocks as ``config.peft`` fields and flags.

Block names are those of :func:`ntkft.ntk.block_names`: ``layer_<i>``,
``layer_<i>/<projection>``, ``head``, ``pooler...``. :func:`peft_fragment`
maps a list of them to :class:`ntkft.peft.PeftSpec` fields (``layers``,
``targets``, ``head``), and :func:`peft_flags` writes those as command-line
overrides for ``ntkft.run``.

Example::

  peft_fragment(["layer_5", "layer_4"])     # {"layers": (4, 5)}
  peft_flags({"layers": (4, 5)})            # "--config.peft.layers='(4,5)'"
"""
import re
from typing import Any, Mapping

from ntkft.models.bert import PROJECTIONS

_LAYER_RE = re.compile(r"^layer_(\d+)$")
_LAYER_PROJ_RE = re.compile(r"^layer_(\d+)/(\w+)$")


def peft_fragment(selected) -> dict:
  """A ``config.peft`` fragment (PeftSpec fields) for a list of block names.

  * ``layer_<i>`` blocks: ``{"layers": (i, ...)}`` (the targets stay those of
    the candidate config).
  * ``layer_<i>/<projection>`` blocks: ``{"layers": L, "targets": T}`` when the
    selection is the full product L x T. Otherwise PeftSpec (which applies the
    same targets to every layer) cannot express it: the fragment is the
    smallest product containing the selection, plus ``"note"`` saying so and
    ``"per_layer_targets"`` {layer: targets} with the actual selection.
    A whole-layer block together with projection blocks of other layers is
    also reported as inexact in the note.
  * ``head`` / ``pooler...`` blocks: ``"head": True``.

  Raises:
    ValueError: a block name of another form (e.g. ``embeddings``).
  """
  layers, per_layer, whole, head = set(), {}, set(), False
  for name in selected:
    if m := _LAYER_RE.match(name):
      layers.add(int(m.group(1)))
      whole.add(int(m.group(1)))
    elif m := _LAYER_PROJ_RE.match(name):
      layer = int(m.group(1))
      layers.add(layer)
      per_layer.setdefault(layer, set()).add(m.group(2))
    elif name == "head" or name.startswith(("head/", "pooler")):
      head = True
    else:
      raise ValueError(f"block {name!r} cannot be expressed as a peft config "
                       "(expected layer_<i>, layer_<i>/<projection>, head or "
                       "pooler...)")
  out = {}
  if layers:
    out["layers"] = tuple(sorted(layers))
  if per_layer:
    union = set().union(*per_layer.values())
    order = {p: i for i, p in enumerate(PROJECTIONS)}
    out["targets"] = tuple(sorted(union, key=lambda p: (order.get(p, 99), p)))
    full = not whole and all(t == union for t in per_layer.values())
    if not full:
      out["per_layer_targets"] = {
          layer: tuple(sorted(t, key=lambda p: (order.get(p, 99), p)))
          for layer, t in sorted(per_layer.items())}
      out["note"] = (
          "not a full layers x targets product (per-layer targets differ"
          + (", or whole layers mixed with projections" if whole else "")
          + "): peft.layers/targets above are the smallest product containing "
          "the selection, a superset of it; see per_layer_targets")
  if head:
    out["head"] = True
  return out


def peft_flags(fragment: Mapping[str, Any]) -> str:
  """Config overrides for a fragment.

  E.g. ``--config.peft.layers='(4,5)' --config.peft.targets="('query','value')"``.
  """
  parts = []
  if "layers" in fragment:
    layers = ",".join(str(i) for i in fragment["layers"])
    if len(fragment["layers"]) == 1:
      layers += ","
    parts.append(f"--config.peft.layers='({layers})'")
  if "targets" in fragment:
    targets = ",".join(f"'{t}'" for t in fragment["targets"])
    if len(fragment["targets"]) == 1:
      targets += ","
    parts.append(f'--config.peft.targets="({targets})"')
  if fragment.get("head"):
    parts.append("--config.peft.head=True")
  return " ".join(parts)
