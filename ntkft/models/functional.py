"""The one place that handles NNX objects: models become pure functions over dicts.

``as_functions(module)`` splits an NNX module once and returns

  apply_fn(params, batch, rng=None) -> logits (B, num_labels)
  hidden_fn(params, batch)          -> last hidden states (B, L, H)
  lm_logits_fn(params, batch)       -> next-token logits (B, L, V)  (decoders only)

and ``prefix_functions(model)`` splits an encoder at a layer (frozen-prefix cache).

where ``params`` is a plain nested dict of arrays (``nnx.to_pure_dict``). With
``rng=None`` the model is deterministic (dropout off), which is what the tangent
model and every kernel use.
"""
import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

from ntkft.models.bert import EncoderConfig, HeadConfig, SequenceClassifier
from ntkft.models.causal import DecoderConfig
from ntkft.models.gpt2 import GPT2Classifier
from ntkft.models.layers import AdapterSpec
from ntkft.models.llama import LlamaClassifier
from ntkft.typing import Params


@dataclasses.dataclass(frozen=True)
class Model:
  """A model as pure functions plus its initial parameters.

  Attributes:
    apply_fn: ``apply_fn(params, batch, rng=None) -> (B, num_labels)``.
    hidden_fn: ``hidden_fn(params, batch) -> (B, L, H)``.
    params: nested dict of arrays (pretrained weights where loaded; fresh init
      for the head, missing poolers and LoRA adapters).
    config, head: the architecture (EncoderConfig or DecoderConfig).
    adapters: module path -> AdapterSpec of the LoRA adapters in the model.
    newly_initialized: '/'-joined names of tensors not loaded from a checkpoint.
    source: checkpoint folder, or None for a randomly initialized model.
    lm_logits_fn: ``lm_logits_fn(params, batch) -> (B, L, V)`` for decoder-only
      models (causal-LM head), None for encoders.
  """
  apply_fn: Callable[..., jax.Array]
  hidden_fn: Callable[..., jax.Array]
  params: Params
  config: EncoderConfig | DecoderConfig
  head: HeadConfig
  adapters: dict[str, AdapterSpec]
  newly_initialized: tuple[str, ...] = ()
  source: Any = None
  lm_logits_fn: Callable[..., jax.Array] | None = None

  @property
  def family(self) -> str:
    return self.config.family


def build_module(config, head: HeadConfig, adapters, rngs: nnx.Rngs) -> nnx.Module:
  """The NNX classifier of a config's family (bert/roberta, gpt2, llama)."""
  if isinstance(config, EncoderConfig):
    return SequenceClassifier(config, head, adapters, rngs=rngs)
  if isinstance(config, DecoderConfig):
    cls = {"gpt2": GPT2Classifier, "llama": LlamaClassifier}[config.family]
    return cls(config, head, adapters, rngs=rngs)
  raise TypeError(f"unknown model config type {type(config).__name__}")


def lm_logits_fn_of(module: nnx.Module):
  """``lm_logits_fn(params, batch) -> (B, L, V)`` of a decoder module; None for encoders."""
  if not hasattr(module, "lm_logits"):
    return None
  graphdef, _, _ = nnx.split(module, nnx.Param, ...)

  def lm_logits_fn(params: Params, batch):
    return nnx.merge(graphdef, params).lm_logits(batch)

  return lm_logits_fn


def as_functions(module: nnx.Module):
  """Returns ``(apply_fn, hidden_fn, params)`` for an NNX classifier (any family)."""
  graphdef, state, rest = nnx.split(module, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("models used as pure functions must hold only nnx.Param state")

  def apply_fn(params: Params, batch, rng=None):
    return nnx.merge(graphdef, params)(batch, rng)

  def hidden_fn(params: Params, batch):
    return nnx.merge(graphdef, params).hidden_states(batch)

  return apply_fn, hidden_fn, nnx.to_pure_dict(state)


def init_model(config: EncoderConfig, head: HeadConfig,
               adapters: dict[str, AdapterSpec] | None = None, seed: int = 0) -> Model:
  """A randomly initialized model (weights N(0, 0.02²), LayerNorm 1/0, biases 0)."""
  adapters = dict(adapters or {})
  module = build_module(config, head, adapters, nnx.Rngs(params=seed))
  apply_fn, hidden_fn, params = as_functions(module)
  return Model(apply_fn=apply_fn, hidden_fn=hidden_fn, params=params, config=config,
               head=head, adapters=adapters, newly_initialized=tuple(flat_names(params)),
               lm_logits_fn=lm_logits_fn_of(module))


def abstract_model(config: EncoderConfig, head: HeadConfig,
                   adapters: dict[str, AdapterSpec] | None = None) -> Model:
  """Like ``init_model`` but params are ``jax.ShapeDtypeStruct``s (nothing allocated)."""
  adapters = dict(adapters or {})
  module = nnx.eval_shape(lambda: build_module(config, head, adapters, nnx.Rngs(params=0)))
  apply_fn, hidden_fn, params = as_functions(module)
  return Model(apply_fn=apply_fn, hidden_fn=hidden_fn, params=params, config=config,
               head=head, adapters=adapters, lm_logits_fn=lm_logits_fn_of(module))


def prefix_functions(model: Model) -> tuple[Callable, Callable]:
  """Split an encoder classifier at a layer, for caching the frozen prefix.

  Returns ``(prefix_fn, from_layer_fn)``:

    prefix_fn(params, batch, start)          -> (B, L, H) states entering layer ``start``
                                                (embeddings + layers < start, no dropout)
    from_layer_fn(params, batch, start, rng) -> (B, num_labels) logits from
                                                ``batch['hidden']`` through layers >= start

  so ``from_layer_fn(params, {**batch, 'hidden': prefix_fn(params, batch, s)}, s)
  == model.apply_fn(params, batch)``. ``start`` is static (a Python int).

  Raises:
    ValueError: for decoder-only families (only BERT-family encoders split here).
  """
  if not isinstance(model.config, EncoderConfig):
    raise ValueError(f"prefix caching supports BERT-family encoders, not {model.family!r}")
  module = nnx.eval_shape(lambda: build_module(model.config, model.head, model.adapters,
                                               nnx.Rngs(params=0)))
  graphdef, _, _ = nnx.split(module, nnx.Param, ...)

  def prefix_fn(params: Params, batch, start: int):
    return nnx.merge(graphdef, params).prefix_states(batch, start)

  def from_layer_fn(params: Params, batch, start: int, rng=None):
    return nnx.merge(graphdef, params).from_layer(batch, start, rng)

  return prefix_fn, from_layer_fn


def flatten(params: Params, prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  out = {}
  for k, v in params.items():
    name = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, dict):
      out.update(flatten(v, name))
    else:
      out[name] = v
  return out


def unflatten(flat: dict[str, Any]) -> dict:
  """{'a/b/c': leaf} -> nested dict."""
  out: dict = {}
  for name, v in flat.items():
    node = out
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def flat_names(params: Params) -> list[str]:
  return list(flatten(params))
