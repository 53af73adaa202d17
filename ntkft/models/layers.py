"""Small NNX building blocks: a dense layer with an optional LoRA adapter, dropout.

The adapter follows Hu et al. 2021 (LoRA):

    y = x W + b + (alpha / r) · dropout(x) A B,     A: (d_in, r),  B: (r, d_out).

.. warning::
  With the LoRA paper's init (``init="zero_b"``: A ~ N(0, 1/d_in), B = 0) the
  Jacobian of the output with respect to A is exactly zero at initialization
  (∂y/∂A = (alpha/r) xᵀ(·)Bᵀ = 0). A *linearized* LoRA model around that point
  therefore only moves through B, and every NTK block belonging to A vanishes.
  ``init="gaussian"`` draws B ~ N(0, b_std²) too, which makes both factors
  active at θ0 (at the price of f(θ0) differing from the pretrained model).
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

LORA_INITS = ("zero_b", "gaussian")


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
  """A LoRA adapter on one dense layer.

  Attributes:
    rank: r > 0.
    alpha: scale numerator; the adapter output is multiplied by alpha / r.
    dropout: dropout rate on the adapter's input (training only; the tangent
      model and all kernels are computed with dropout off).
    init: "zero_b" (A ~ N(0, 1/d_in), B = 0) or "gaussian" (B ~ N(0, b_std²)).
    b_std: standard deviation of B for init="gaussian".
  """
  rank: int
  alpha: float = 16.0
  dropout: float = 0.0
  init: str = "zero_b"
  b_std: float = 0.02

  def __post_init__(self):
    if not isinstance(self.rank, int) or self.rank <= 0:
      raise ValueError(f"LoRA rank must be a positive int, got {self.rank!r}")
    if self.init not in LORA_INITS:
      raise ValueError(f"unknown LoRA init {self.init!r}; choose from {LORA_INITS}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when ``rng is None`` (deterministic) or rate == 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class Dense(nnx.Module):
  """``x (..., d_in) -> (..., d_out)`` with an optional LoRA adapter.

  ``use_bias=False`` drops the bias (LLaMA projections); the params then hold
  only ``kernel`` (and the adapter's ``lora_a``/``lora_b``).
  """

  def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs,
               adapter: AdapterSpec | None = None, init_std: float = 0.02,
               use_bias: bool = True):
    self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), (d_in, d_out)))
    if use_bias:
      self.bias = nnx.Param(jnp.zeros((d_out,)))
    self.use_bias = use_bias
    self.adapter = adapter
    if adapter is not None:
      self.lora_a = nnx.Param(jax.random.normal(rngs.params(), (d_in, adapter.rank))
                              / jnp.sqrt(d_in))
      if adapter.init == "zero_b":
        b = jnp.zeros((adapter.rank, d_out))
      else:
        b = adapter.b_std * jax.random.normal(rngs.params(), (adapter.rank, d_out))
      self.lora_b = nnx.Param(b)

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    y = x @ self.kernel[...]
    if self.use_bias:
      y = y + self.bias[...]
    if self.adapter is not None:
      scale = self.adapter.alpha / self.adapter.rank
      x_in = dropout(x, self.adapter.dropout, rng)
      y = y + scale * ((x_in @ self.lora_a[...]) @ self.lora_b[...])
    return y


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis with ``scale`` and ``bias`` (HF weight/bias)."""

  def __init__(self, dim: int, eps: float):
    self.scale = nnx.Param(jnp.ones((dim,)))
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class RMSNorm(nnx.Module):
  """Root-mean-square norm (Zhang & Sennrich 2019; LLaMA): x / sqrt(mean(x²) + eps) · scale."""

  def __init__(self, dim: int, eps: float):
    self.scale = nnx.Param(jnp.ones((dim,)))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    var = jnp.square(x).mean(-1, keepdims=True)
    return x * jax.lax.rsqrt(var + self.eps) * self.scale[...]


class Embed(nnx.Module):
  """Lookup table ``embedding (num, dim)``."""

  def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.embedding = nnx.Param(init_std * jax.random.normal(rngs.params(), (num, dim)))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding[...], ids, axis=0)


ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),       # BERT/RoBERTa (exact erf)
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),    # GPT-2 (tanh approximation)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,                                        # LLaMA (SwiGLU gate)
}


@dataclasses.dataclass(frozen=True)
class TransformerSizes:
  """The sizes every transformer config has (names as HF config.json after renaming).

  ``bert.EncoderConfig`` and ``causal.DecoderConfig`` extend it with their
  family's fields, among them ``hidden_act`` (whose default differs per family),
  and call ``super().__post_init__()``, which checks it names an activation.
  """
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int

  def __post_init__(self):
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; known: {sorted(ACTIVATIONS)}")


def fold(rng: jax.Array | None, i: int) -> jax.Array | None:
  """Per-site dropout key ``fold_in(rng, i)``; None stays None (deterministic)."""
  return None if rng is None else jax.random.fold_in(rng, i)


class LayerStack(nnx.Module):
  """``layer_0 .. layer_{n-1}`` applied in order: ``x = layer_i(x, *args, rng=fold(rng, i))``.

  The encoder of BERT and the decoders of GPT-2 and LLaMA; ``make_layer(i)``
  builds layer i (its params live under ``layer_{i}/``).
  """

  def __init__(self, make_layer: Callable[[int], nnx.Module], num_layers: int):
    for i in range(num_layers):
      setattr(self, f"layer_{i}", make_layer(i))
    self.num_layers = num_layers

  def __call__(self, x: jax.Array, *args, rng: jax.Array | None = None, start: int = 0,
               stop: int | None = None) -> jax.Array:
    """Layers ``start .. stop-1`` (default all); layer i always gets ``fold(rng, i)``."""
    for i in range(start, self.num_layers if stop is None else stop):
      x = getattr(self, f"layer_{i}")(x, *args, rng=fold(rng, i))
    return x


class PreNormBlock(nnx.Module):
  """Pre-norm residual block (GPT-2, LLaMA): x += Attn(N(x)); x += FFN(N(x)).

  ``attention(x, mask, *attention_args, rng)`` and ``ffn(x, rng)``; the norms
  are LayerNorm (GPT-2) or RMSNorm (LLaMA).
  """

  def __init__(self, attention_norm: nnx.Module, attention: nnx.Module,
               ffn_norm: nnx.Module, ffn: nnx.Module, dropout_rate: float):
    self.attention_norm = attention_norm
    self.attention = attention
    self.ffn_norm = ffn_norm
    self.ffn = ffn
    self.dropout_rate = dropout_rate

  def __call__(self, x: jax.Array, mask: jax.Array, *attention_args,
               rng: jax.Array | None = None) -> jax.Array:
    a = self.attention(self.attention_norm(x), mask, *attention_args, fold(rng, 0))
    x = x + dropout(a, self.dropout_rate, fold(rng, 1))
    f = self.ffn(self.ffn_norm(x), fold(rng, 2))
    return x + dropout(f, self.dropout_rate, fold(rng, 3))


class FeedForward(nnx.Module):
  """``ffn_out(act(ffn_in(x)))``: the MLP of BERT and GPT-2 blocks, LoRA-capable."""

  def __init__(self, d_model: int, d_ff: int, act: str, adapters, prefix: str,
               rngs: nnx.Rngs):
    if act not in ACTIVATIONS:
      raise ValueError(f"unsupported activation {act!r}; known: {sorted(ACTIVATIONS)}")
    self.ffn_in = Dense(d_model, d_ff, rngs=rngs, adapter=adapters.get(f"{prefix}/ffn_in"))
    self.ffn_out = Dense(d_ff, d_model, rngs=rngs, adapter=adapters.get(f"{prefix}/ffn_out"))
    self.act = act

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    return self.ffn_out(ACTIVATIONS[self.act](self.ffn_in(x, fold(rng, 0))), fold(rng, 1))
