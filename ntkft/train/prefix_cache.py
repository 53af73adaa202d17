"""Do not pay for frozen layers: cache the states entering the lowest trained layer.

When every parameter below encoder layer ``s`` is frozen (embeddings and layers
0..s-1) and dropout is off, the states entering layer ``s`` are a fixed function
of each example. ``PrefixCache`` computes them once per example (one forward of
the prefix) and every later step runs forward and backward only through layers
s..L-1 and the head:

  f(θ; x) = head(layers_{s..L-1}(h_s(x)))           h_s(x) cached, (n, max_len, H)

The same holds for the tangent model: f̄(θ) = f(θ0) + J(θ0)(θ − θ0) only
differentiates the trainable parameters, all at or above layer ``s``, so
``ntkft.train.step.model_fn(mode, cache.apply_fn)`` serves both regimes.

Outputs equal the uncached model's on real rows up to float32 summation order
(padding rows, weight 0, see zeros instead of the pad token's states).

Example::

  cache = PrefixCache.build(model, trainable, params, {"train": train_enc}, ...)
  outputs_fn = step.model_fn("nonlinear", cache.apply_fn)
  loss = ...(outputs_fn(p, p0, frozen, cache.attach(batch, "train"), rng))
"""
import dataclasses
from typing import Callable, Mapping

import jax
import numpy as np

from ntkft import data
from ntkft.models import functional
from ntkft.models.blocks import encoder_layer_index
from ntkft.typing import Params


def lowest_trained_layer(trainable_names, num_layers: int) -> int:
  """Index of the lowest encoder layer with a trainable parameter (``num_layers``:
  only the head trains).

  Raises:
    ValueError: a trainable embedding (nothing can be cached then) or no names.
  """
  names = list(trainable_names)
  if not names:
    raise ValueError("prefix cache: no trainable parameters")
  layers = []
  for name in names:
    if name.startswith("embeddings/"):
      raise ValueError(f"prefix cache: trainable embedding parameter {name!r}; "
                       "nothing below layer 0 is frozen")
    layer = encoder_layer_index(name)
    if layer is not None:
      layers.append(layer)
  return min(layers, default=num_layers)


@dataclasses.dataclass(frozen=True)
class PrefixCache:
  """Cached states entering layer ``start`` for named encoded datasets.

  Attributes:
    start: the first layer that runs at every step.
    states: split name -> (n, max_len, H) float32 states of its examples (rows
      past an example's bucket length are 0).
    apply_fn: ``apply_fn(params, batch, rng=None) -> (B, C)`` for batches that
      carry ``'hidden'`` (see ``attach``): layers >= start and the head only.
  """
  start: int
  states: Mapping[str, np.ndarray]
  apply_fn: Callable

  @classmethod
  def build(cls, model: functional.Model, trainable: Params, params: Params,
            encoded: Mapping[str, data.Encoded], batch_size: int, buckets, max_len: int):
    """Runs the prefix once over every example of every split in ``encoded``.

    Args:
      model: an encoder classifier (``model.config.dropout_rate`` must be 0).
      trainable: the trainable subset (its names set ``start``).
      params: all parameters at θ0 (the frozen prefix is read from here).
      encoded: split name -> its encoded examples.
      batch_size, buckets, max_len: how the prefix is batched (any values give
        the same states up to summation order).
    """
    if model.config.dropout_rate:
      raise ValueError(f"prefix cache needs dropout 0 in the frozen layers, "
                       f"got model dropout {model.config.dropout_rate}")
    start = lowest_trained_layer(functional.flat_names(trainable), model.config.num_layers)
    prefix_fn, from_layer_fn = functional.prefix_functions(model)
    prefix = jax.jit(prefix_fn, static_argnums=2)
    states = {}
    for split, enc in encoded.items():
      out = np.zeros((len(enc.labels), max_len, model.config.hidden_size), np.float32)
      for batch in data.eval_batches(enc, batch_size, buckets, max_len):
        keep = batch["index"] >= 0
        h = np.asarray(prefix(params, _model_inputs(batch), start))
        out[batch["index"][keep], :h.shape[1]] = h[keep]
      states[split] = out

    def apply_fn(p, batch, rng=None):
      return from_layer_fn(p, batch, start, rng)

    return cls(start=start, states=states, apply_fn=apply_fn)

  def attach(self, batch: dict, split: str) -> dict:
    """``batch`` plus ``'hidden'`` (B, L, H): the cached states of its rows (0 for padding)."""
    index = batch["index"]
    seq_len = batch["input_ids"].shape[1]
    hidden = self.states[split][np.maximum(index, 0), :seq_len]  # a float32 copy
    hidden[index < 0] = 0.0
    return {**batch, "hidden": hidden}


def _model_inputs(batch):
  return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
