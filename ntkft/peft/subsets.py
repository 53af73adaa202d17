"""Which parameters move: LoRA adapters, BitFit biases, whole layers, the head.

A ``PeftSpec`` names the parameter subset; ``adapters_for`` turns it into the LoRA
adapters the model must be built with, and ``trainable_names`` picks the leaves
that receive gradients. ``partition``/``combine`` split a params dict into
``trainable`` and ``frozen`` dicts (disjoint leaves, same nesting) and back.

Methods (combine any of them)::

  "lora"    rank-r adapters on ``targets`` of ``layers`` (only the adapters train)
  "bitfit"  every bias inside ``layers`` (Ben Zaken et al. 2022)
  "layers"  every weight of ``layers``
  head=True the classification head (and the pooler, when there is one)

LoRA targets are named per model family (``TARGETS``; ``PeftSpec.family`` picks
the table, default "bert")::

  bert, roberta  query key value attn_out ffn_in ffn_out  encoder/layer_i/{attention,ffn}/<t>
  gpt2           c_attn (fused q/k/v) attn_out ffn_in ffn_out  decoder/layer_i/{attention,ffn}/<t>
  llama          query key value attn_out gate up down    decoder/layer_i/{attention,ffn}/<t>

.. warning::
  At the usual LoRA init (B = 0) the Jacobian with respect to A is exactly zero
  (see ``ntkft.models.layers``): a linearized LoRA model only moves through B,
  and the NTK blocks of every A vanish. Use ``init="gaussian"`` to make both
  factors active at θ0.
"""
import dataclasses
import re
from typing import Any, Iterable

import jax.numpy as jnp

from ntkft.models import gpt2, llama
from ntkft.models.bert import PROJECTIONS
from ntkft.models.functional import flatten, unflatten
from ntkft.models.layers import LORA_INITS, AdapterSpec
from ntkft.typing import Params

METHODS = ("lora", "bitfit", "layers")
# LoRA target names per model family (EncoderConfig/DecoderConfig.family).
TARGETS = {"bert": PROJECTIONS, "roberta": PROJECTIONS, "gpt2": gpt2.TARGETS,
           "llama": llama.TARGETS}
_DEFAULT_TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"),
                    "gpt2": ("c_attn",), "llama": ("query", "value")}


def targets_for(family: str) -> tuple[str, ...]:
  """The LoRA target names of a model family."""
  if family not in TARGETS:
    raise ValueError(f"unknown model family {family!r}; choose from {tuple(TARGETS)}")
  return TARGETS[family]


@dataclasses.dataclass(frozen=True)
class PeftSpec:
  """A parameter subset. ``layers=None`` means every layer.

  ``family`` names the model family whose LoRA target names ``targets`` uses
  (see ``TARGETS``); it must match the model the adapters are built for.
  """
  methods: tuple[str, ...] = ("lora",)
  layers: tuple[int, ...] | None = None
  targets: tuple[str, ...] = ("query", "value")
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  init: str = "zero_b"
  head: bool = True
  family: str = "bert"

  def __post_init__(self):
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown:
      raise ValueError(f"unknown peft method(s) {unknown}; choose from {METHODS}")
    valid = targets_for(self.family)
    bad = [t for t in self.targets if t not in valid]
    if bad and self.family in ("bert", "roberta"):
      raise ValueError(f"unknown peft target(s) {bad}; choose from {PROJECTIONS}")
    if bad:
      raise ValueError(f"unknown peft target(s) {bad} for model family {self.family!r}; "
                       f"choose from {valid}")
    if "lora" in self.methods:
      AdapterSpec(rank=self.rank, alpha=self.alpha, dropout=self.dropout, init=self.init)
    if not self.methods and not self.head:
      raise ValueError("peft selects no parameters: give methods or head=True")

  @classmethod
  def from_config(cls, cfg: Any) -> "PeftSpec":
    """From a ConfigDict/dict with the field names above (layers: tuple, 'all' or None)."""
    get = dict(cfg)
    layers = get.get("layers")
    if isinstance(layers, str):  # the config declares "all", so the CLI passes strings
      text = layers.strip()
      if text == "all":
        layers = None
      else:  # "(4, 5)", "[4,5]", "4,5", "7"
        items = [t.strip() for t in text.strip("()[] ").split(",") if t.strip()]
        try:
          layers = tuple(int(t) for t in items)
        except ValueError:
          layers = ()
        if not layers:
          raise ValueError(f"peft.layers must be a tuple of ints or 'all', got {text!r}")
    elif layers is not None:
      layers = tuple(int(i) for i in layers)
    methods = get.get("methods", ("lora",))
    if isinstance(methods, str):
      methods = (methods,)
    family = get.get("family") or "bert"
    targets = get.get("targets")
    if targets is None:
      targets = _DEFAULT_TARGETS.get(family, ("query", "value"))
    elif isinstance(targets, str):
      targets = (targets,)
    return cls(methods=tuple(methods), layers=layers, targets=tuple(targets),
               rank=int(get.get("rank", 8)), alpha=float(get.get("alpha", 16.0)),
               dropout=float(get.get("dropout", 0.0)), init=get.get("init", "zero_b"),
               head=bool(get.get("head", True)), family=family)


def resolve_layers(spec: PeftSpec, num_layers: int) -> tuple[int, ...]:
  """The spec's layer indices, checked against the model's depth."""
  if spec.layers is None:
    return tuple(range(num_layers))
  bad = [i for i in spec.layers if not 0 <= i < num_layers]
  if bad:
    raise ValueError(f"peft.layers {bad} out of range: the model has {num_layers} layers "
                     f"(valid indices 0..{num_layers - 1})")
  return tuple(sorted(set(spec.layers)))


def module_path(layer: int, target: str, family: str = "bert") -> str:
  """'encoder/layer_4/attention/query' for (4, 'query'); decoders: 'decoder/layer_4/...'."""
  if target not in targets_for(family):
    raise ValueError(f"unknown peft target {target!r} for model family {family!r}; "
                     f"choose from {targets_for(family)}")
  if family == "gpt2":
    return gpt2.module_path(layer, target)
  if family == "llama":
    return llama.module_path(layer, target)
  group = "ffn" if target.startswith("ffn") else "attention"
  return f"encoder/layer_{layer}/{group}/{target}"


def adapters_for(spec: PeftSpec, num_layers: int) -> dict[str, AdapterSpec]:
  """LoRA adapters (module path -> AdapterSpec) the model must be built with."""
  if "lora" not in spec.methods:
    return {}
  adapter = AdapterSpec(rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout,
                        init=spec.init)
  return {module_path(i, t, spec.family): adapter
          for i in resolve_layers(spec, num_layers) for t in spec.targets}


def trainable_names(spec: PeftSpec, params: Params, num_layers: int) -> list[str]:
  """Sorted '/'-joined names of the leaves that receive gradients."""
  layers = resolve_layers(spec, num_layers)
  in_layers = re.compile(rf"^(encoder|decoder)/layer_({'|'.join(map(str, layers))})/")
  names = []
  for name in flatten(params):
    leaf = name.rsplit("/", 1)[-1]
    chosen = (
        ("lora" in spec.methods and leaf.startswith("lora_")) or
        ("bitfit" in spec.methods and leaf == "bias" and in_layers.match(name)) or
        ("layers" in spec.methods and in_layers.match(name) and not leaf.startswith("lora_")) or
        (spec.head and name.startswith(("head/", "pooler/"))))
    if chosen:
      names.append(name)
  if not names:
    raise ValueError(f"peft spec {spec} selects no parameter of this model")
  return sorted(names)


def partition(params: Params, names: Iterable[str]) -> tuple[dict, dict]:
  """Splits params into (trainable, frozen) nested dicts by leaf name."""
  names = set(names)
  flat = flatten(params)
  missing = sorted(names - set(flat))
  if missing:
    raise ValueError(f"unknown parameter name(s): {missing[:5]}")
  trainable = {k: v for k, v in flat.items() if k in names}
  frozen = {k: v for k, v in flat.items() if k not in names}
  return unflatten(trainable), unflatten(frozen)


def combine(trainable: Params, frozen: Params) -> dict:
  """Inverse of ``partition``: one nested dict with the leaves of both."""
  flat = flatten(frozen)
  flat.update(flatten(trainable))
  return unflatten(flat)


def merge_lora(params: Params, adapters: dict[str, AdapterSpec]) -> dict:
  """Folds every adapter into its dense kernel: W' = W + (alpha/r) A B; drops A, B.

  The merged params run on a model built without adapters and give the same
  outputs (dropout off), e.g. for export.
  """
  flat = dict(flatten(params))
  for path, adapter in adapters.items():
    a, b = flat.pop(f"{path}/lora_a"), flat.pop(f"{path}/lora_b")
    flat[f"{path}/kernel"] = flat[f"{path}/kernel"] + (adapter.alpha / adapter.rank) * (a @ b)
  return unflatten(flat)


def count(params: Params) -> int:
  return int(sum(jnp.size(v) for v in flatten(params).values()))


def describe(trainable: Params, frozen: Params) -> str:
  """One line per trainable group with parameter counts, plus totals."""
  groups: dict[str, int] = {}
  for name, v in flatten(trainable).items():
    key = name.rsplit("/", 1)[0]
    groups[key] = groups.get(key, 0) + int(jnp.size(v))
  n_train, n_frozen = count(trainable), count(frozen)
  lines = [f"  {k}: {v:,}" for k, v in sorted(groups.items())]
  pct = 100.0 * n_train / max(n_train + n_frozen, 1)
  return "\n".join([f"trainable {n_train:,} / total {n_train + n_frozen:,} ({pct:.3f}%)"]
                   + lines)


__all__ = ["PeftSpec", "TARGETS", "targets_for", "adapters_for", "trainable_names", "partition",
           "combine",
           "merge_lora", "count", "describe", "resolve_layers", "module_path", "METHODS",
           "LORA_INITS"]
