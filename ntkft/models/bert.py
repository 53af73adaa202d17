"""BERT-family encoders (BERT, RoBERTa, MiniLM) with classification heads, in Flax NNX.

Post-LayerNorm transformer with absolute learned positions and token types
(Devlin et al. 2019). RoBERTa (Liu et al. 2019) differs only in position ids,
which start after the padding index (``position_offset = pad_token_id + 1``:
real tokens get ``pad+1, pad+2, ...`` and padding gets ``pad``, derived from
``input_ids != pad_token_id`` exactly as Hugging Face does), and in having a
single token type.

Parameter names (the '/'-joined paths of the params dict)::

  embeddings/{word,position,token_type}/embedding, embeddings/layer_norm/{scale,bias}
  encoder/layer_{i}/attention/{query,key,value,attn_out}/{kernel,bias[,lora_a,lora_b]}
  encoder/layer_{i}/attention_norm/{scale,bias}
  encoder/layer_{i}/ffn/{ffn_in,ffn_out}/{kernel,bias[,lora_a,lora_b]}
  encoder/layer_{i}/ffn_norm/{scale,bias}
  pooler/dense/{kernel,bias}          (pooling="cls" only: dense + tanh on [CLS])
  head/{kernel,bias}                  (num_labels outputs; 1 for regression)

Kernels are stored (d_in, d_out), i.e. transposed with respect to PyTorch.

Padding is masked exactly: masked attention logits are set to the most negative
finite float, so their softmax weights are exactly 0 and outputs at real tokens do
not depend on how much padding follows (up to the summation order of XLA's dot).
"""
import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ntkft.models.layers import (
  AdapterSpec,
  Dense,
  Embed,
  FeedForward,
  LayerNorm,
  LayerStack,
  TransformerSizes,
  dropout,
  fold,
)

PROJECTIONS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
POOLINGS = ("cls", "mean", "last")


@dataclasses.dataclass(frozen=True)
class EncoderConfig(TransformerSizes):
  """Architecture of a BERT-family encoder (fields mirror HF config.json)."""
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  family: str = "bert"           # "bert" | "roberta"
  hidden_act: str = "gelu"       # exact (erf) GELU, as HF "gelu"
  dropout_rate: float = 0.0      # hidden and attention-probability dropout (training only)

  def __post_init__(self):
    super().__post_init__()
    if self.family not in ("bert", "roberta"):
      raise ValueError(f"unknown encoder family {self.family!r} (bert, roberta)")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} not divisible by "
                       f"num_heads {self.num_heads}")

  @property
  def position_offset(self) -> int:
    return self.pad_token_id + 1 if self.family == "roberta" else 0


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """Sequence classification / regression head.

  pooling="cls": HF-style pooler (dense + tanh on the first token) then a linear
  layer (BERT's ``pooler`` + ``classifier``, RoBERTa's ``classifier.dense`` +
  ``classifier.out_proj``): what HF's ``*ForSequenceClassification`` compute.
  The pooler is loaded from the checkpoint when it has one (the shipped MiniLM
  does: ``pooler.dense``); the linear layer is new unless the checkpoint is a
  classifier with ``num_labels`` outputs. pooling="mean" (the default, unlike
  HF): masked mean of the last hidden states then a linear layer
  (sentence-transformers style, how all-MiniLM-L6-v2 was trained; a checkpoint's
  pooler is then unused and not loaded).
  pooling="last": the hidden state of the last real token then a linear layer
  (the decoder-only default, ``ntkft.models.causal``; also valid for encoders).
  """
  num_labels: int
  pooling: str = "mean"

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; choose from {POOLINGS}")
    if self.num_labels < 1:
      raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")


class Attention(nnx.Module):

  def __init__(self, cfg: EncoderConfig, adapters: Mapping[str, AdapterSpec], prefix: str,
               rngs: nnx.Rngs):
    h = cfg.hidden_size
    for name in ("query", "key", "value", "attn_out"):
      setattr(self, name, Dense(h, h, rngs=rngs, adapter=adapters.get(f"{prefix}/{name}")))
    self.num_heads = cfg.num_heads
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, x, mask, rng=None):
    """x: (B, L, H); mask: (B, L) 1 real / 0 pad. Returns (B, L, H)."""
    b, l, h = x.shape
    nh = self.num_heads
    split = lambda t: t.reshape(b, l, nh, h // nh)
    q = split(self.query(x, fold(rng, 0)))
    k = split(self.key(x, fold(rng, 1)))
    v = split(self.value(x, fold(rng, 2)))
    logits = jnp.einsum("blnd,bmnd->bnlm", q, k) / jnp.sqrt(h // nh).astype(x.dtype)
    keep = mask[:, None, None, :].astype(bool)
    logits = jnp.where(keep, logits, jnp.finfo(logits.dtype).min)
    probs = dropout(jax.nn.softmax(logits, axis=-1), self.dropout_rate, fold(rng, 3))
    ctx = jnp.einsum("bnlm,bmnd->blnd", probs, v).reshape(b, l, h)
    return self.attn_out(ctx, fold(rng, 4))


class Layer(nnx.Module):
  """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

  def __init__(self, cfg: EncoderConfig, adapters, prefix: str, rngs: nnx.Rngs):
    self.attention = Attention(cfg, adapters, f"{prefix}/attention", rngs)
    self.attention_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.ffn = FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, adapters,
                           f"{prefix}/ffn", rngs)
    self.ffn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, x, mask, rng=None):
    a = dropout(self.attention(x, mask, fold(rng, 0)), self.dropout_rate, fold(rng, 1))
    x = self.attention_norm(x + a)
    f = dropout(self.ffn(x, fold(rng, 2)), self.dropout_rate, fold(rng, 3))
    return self.ffn_norm(x + f)


class Embeddings(nnx.Module):

  def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
    self.word = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
    self.position = Embed(cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs)
    self.token_type = Embed(cfg.type_vocab_size, cfg.hidden_size, rngs=rngs)
    self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
    self.family = cfg.family
    self.pad_token_id = cfg.pad_token_id
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, input_ids, token_type_ids, rng=None):
    if self.family == "roberta":
      not_pad = (input_ids != self.pad_token_id).astype(jnp.int32)
      positions = jnp.cumsum(not_pad, axis=1) * not_pad + self.pad_token_id
    else:
      positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
    return dropout(self.layer_norm(x), self.dropout_rate, rng)


class Pooler(nnx.Module):

  def __init__(self, hidden: int, rngs: nnx.Rngs):
    self.dense = Dense(hidden, hidden, rngs=rngs)

  def __call__(self, first_token):
    return jnp.tanh(self.dense(first_token))


class SequenceClassifier(nnx.Module):
  """Encoder + pooling + linear head. ``__call__(batch, rng) -> logits (B, num_labels)``."""

  def __init__(self, cfg: EncoderConfig, head: HeadConfig,
               adapters: Mapping[str, AdapterSpec] | None = None, *, rngs: nnx.Rngs):
    adapters = dict(adapters or {})
    self.embeddings = Embeddings(cfg, rngs)
    self.encoder = LayerStack(
        lambda i: Layer(cfg, adapters, f"encoder/layer_{i}", rngs), cfg.num_layers)
    if head.pooling == "cls":
      self.pooler = Pooler(cfg.hidden_size, rngs)
    self.head = Dense(cfg.hidden_size, head.num_labels, rngs=rngs,
                      adapter=adapters.get("head"))
    self.pooling = head.pooling
    self.type_vocab_size = cfg.type_vocab_size
    self.dropout_rate = cfg.dropout_rate

  def embed(self, batch, rng=None):
    """Embedding output (B, L, H), the input of layer 0."""
    ids = batch["input_ids"]
    types = batch.get("token_type_ids")
    if types is None or self.type_vocab_size == 1:
      types = jnp.zeros_like(ids)
    return self.embeddings(ids, types, fold(rng, 0))

  def hidden_states(self, batch, rng=None):
    """Last hidden states (B, L, H) for batch['input_ids'|'attention_mask'|'token_type_ids']."""
    return self.encoder(self.embed(batch, rng), batch["attention_mask"], rng=fold(rng, 1))

  def prefix_states(self, batch, start: int):
    """Hidden states (B, L, H) into layer ``start`` (embeddings + layers < start); no dropout."""
    return self.encoder(self.embed(batch), batch["attention_mask"], stop=start)

  def pool(self, hidden, mask):
    """(B, L, H) -> (B, H): tanh-pooler on the first token, or masked mean."""
    if self.pooling == "cls":
      return self.pooler(hidden[:, 0])
    if self.pooling == "last":
      last = jnp.argmax(jnp.arange(hidden.shape[1])[None, :] * mask, axis=1)
      return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    m = mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)

  def classify(self, hidden, mask, rng=None):
    """Last hidden states (B, L, H) -> logits (B, num_labels): pooling, dropout, head."""
    pooled = dropout(self.pool(hidden, mask), self.dropout_rate, fold(rng, 2))
    return self.head(pooled, fold(rng, 3))

  def from_layer(self, batch, start: int, rng=None):
    """Logits from ``batch['hidden']`` (B, L, H), the states entering layer ``start``.

    Equals ``__call__`` when ``batch['hidden'] == prefix_states(batch, start)`` and
    layers < start are frozen and dropout-free (same per-layer dropout keys).
    """
    mask = batch["attention_mask"]
    hidden = self.encoder(batch["hidden"], mask, rng=fold(rng, 1), start=start)
    return self.classify(hidden, mask, rng)

  def __call__(self, batch, rng=None):
    return self.classify(self.hidden_states(batch, rng), batch["attention_mask"], rng)
