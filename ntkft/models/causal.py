"""Shared pieces of the decoder-only (causal) language models: config, mask, pooling.

The families (``ntkft.models.gpt2``, ``ntkft.models.llama``) differ in their
blocks; they share

* ``DecoderConfig`` (fields mirror HF config.json after renaming),
* ``causal_attention``: softmax(q kᵀ / sqrt(d) + mask) v with a causal mask and
  a key-padding mask (grouped-query attention when there are fewer k/v heads),
* ``positions_from_mask``: position ids that count real tokens only, so left
  and right padding give the same positions (0, 1, ... at real tokens),
* ``pool``: the sequence representation for classification, by default the
  hidden state of the LAST real token (``attention_mask`` == 1), which works
  for left and right padding alike (HF ``*ForSequenceClassification`` picks the
  last non-pad token the same way),
* ``CausalClassifier``: pooling + the linear classification head on top of a
  family's ``hidden_states``.

Batches are the usual ``input_ids``/``attention_mask`` (B, L) dicts; token types
are ignored.
"""
import dataclasses
import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ntkft.models import layers
from ntkft.models.layers import Dense, Embed, LayerStack, TransformerSizes, dropout, fold

DECODER_FAMILIES = ("gpt2", "llama")
DECODER_POOLINGS = ("last", "mean")


def check_pooling(pooling: str) -> None:
  """Decoders pool the last real token or the mean, never the first (it sees nothing else)."""
  if pooling not in DECODER_POOLINGS:
    raise ValueError(f"decoder pooling must be one of {DECODER_POOLINGS}, got "
                     f"{pooling!r} (a causal model's first token sees nothing else)")


@dataclasses.dataclass(frozen=True)
class DecoderConfig(TransformerSizes):
  """Architecture of a decoder-only LM (GPT-2 or LLaMA layout).

  Attributes:
    family: "gpt2" (learned positions, LayerNorm, fused qkv, GELU MLP, tied LM
      head) or "llama" (rotary positions, RMSNorm, separate q/k/v/o, SwiGLU).
    num_kv_heads: key/value heads (grouped-query attention); None = num_heads.
    head_dim: per-head width; None = hidden_size // num_heads.
    norm_eps: LayerNorm / RMSNorm epsilon.
    pad_token_id: the tokenizer's pad id (may be None; masks come from the batch).
    rope_theta: rotary base (LLaMA).
    tie_word_embeddings: LM head = word embeddingᵀ (GPT-2 always).
  """
  family: str
  num_kv_heads: int | None = None
  head_dim: int | None = None
  norm_eps: float = 1e-5
  pad_token_id: int | None = None
  hidden_act: str = "gelu_new"
  rope_theta: float = 10000.0
  tie_word_embeddings: bool = True
  attention_bias: bool = False    # LLaMA q/k/v/o biases
  mlp_bias: bool = False          # LLaMA gate/up/down biases
  dropout_rate: float = 0.0

  def __post_init__(self):
    super().__post_init__()
    if self.family not in DECODER_FAMILIES:
      raise ValueError(f"unknown decoder family {self.family!r} ({', '.join(DECODER_FAMILIES)})")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"num_heads {self.num_heads} not divisible by num_kv_heads {self.kv_heads}")
    if self.family == "gpt2" and (self.kv_heads != self.num_heads
                                  or self.dim_per_head * self.num_heads != self.hidden_size):
      raise ValueError("gpt2 has num_kv_heads == num_heads and head_dim == hidden/num_heads")

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads



def positions_from_mask(mask: jax.Array) -> jax.Array:
  """(B, L) 0/1 mask -> (B, L) int positions: 0, 1, ... over real tokens, 0 at leading pads."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                     dropout_fn=None) -> jax.Array:
  """Masked causal multi-head attention.

  Args:
    q: (B, L, N, D) queries; k, v: (B, L, K, D) with N % K == 0 (query head n
      uses key/value head n // (N / K), as HF ``repeat_kv``).
    mask: (B, L) 1 real / 0 pad.
    dropout_fn: optional callable applied to the attention probabilities.

  Returns:
    (B, L, N·D). Query l attends to keys m <= l that are real tokens; every
    query also keeps its own position, so a padding query has a well-defined
    (and strictly causal) output. Masked logits are set to the most negative
    finite float, so their softmax weight is exactly 0.
  """
  b, l, n, d = q.shape
  rep = n // k.shape[2]
  if rep > 1:
    k = jnp.repeat(k, rep, axis=2)
    v = jnp.repeat(v, rep, axis=2)
  logits = jnp.einsum("blnd,bmnd->bnlm", q, k) / jnp.sqrt(d).astype(q.dtype)
  idx = jnp.arange(l)
  causal = idx[None, :] <= idx[:, None]                      # (L, L): key m <= query l
  keep = causal[None] & (mask[:, None, :].astype(bool) | (idx[None, :] == idx[:, None])[None])
  logits = jnp.where(keep[:, None], logits, jnp.finfo(logits.dtype).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_fn is not None:
    probs = dropout_fn(probs)
  return jnp.einsum("bnlm,bmnd->blnd", probs, v).reshape(b, l, n * d)


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
  """(B, L, H) -> (B, H): hidden state of the last real token, or the masked mean."""
  if pooling == "last":
    last = jnp.argmax(jnp.arange(hidden.shape[1])[None, :] * mask, axis=1)   # (B,)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  if pooling == "mean":
    m = mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
  raise ValueError(f"decoder pooling must be one of {DECODER_POOLINGS}, got {pooling!r} "
                   "(a causal model's first token sees nothing of the sequence)")


class Embeddings(nnx.Module):
  """Word embeddings (V, H); GPT-2 also learns positions (P, H) (LLaMA rotates q, k instead)."""

  def __init__(self, cfg: DecoderConfig, rngs: nnx.Rngs):
    self.word = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
    if cfg.family == "gpt2":
      self.position = Embed(cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs)


class CausalClassifier(nnx.Module):
  """Base of the decoder classifiers: ``hidden_states`` -> ``pool`` -> linear head.

  ``__call__(batch, rng) -> (B, num_labels)``; ``hidden_states(batch, rng) -> (B, L, H)``
  (after the final norm); ``lm_logits(batch, rng) -> (B, L, V)``.

  A family subclass names its parts as class attributes, ``block``
  (``block(cfg, adapters, prefix, rngs)``, one per layer) and ``norm_type`` (the
  final norm), overrides :meth:`init_lm_head` if its LM head is not tied, and
  defines ``hidden_states`` and ``lm_logits``.
  """
  block: Callable[..., nnx.Module]
  norm_type: type

  def __init__(self, cfg: DecoderConfig, head,
               adapters: Mapping[str, layers.AdapterSpec] | None = None, *, rngs: nnx.Rngs):
    check_pooling(head.pooling)
    adapters = dict(adapters or {})
    # The order of construction is the order of the random init stream.
    self.embeddings = Embeddings(cfg, rngs)
    self.decoder = LayerStack(
        lambda i: self.block(cfg, adapters, f"decoder/layer_{i}", rngs), cfg.num_layers)
    self.final_norm = self.norm_type(cfg.hidden_size, cfg.norm_eps)
    self.init_lm_head(cfg, rngs)
    self.head = Dense(cfg.hidden_size, head.num_labels, rngs=rngs, adapter=adapters.get("head"))
    self.pooling = head.pooling
    self.dropout_rate = cfg.dropout_rate

  def init_lm_head(self, cfg: DecoderConfig, rngs: nnx.Rngs) -> None:
    """Builds an untied LM head, if the family has one (default: none)."""

  def __call__(self, batch, rng=None):
    pooled = pool(self.hidden_states(batch, rng), batch["attention_mask"], self.pooling)
    return self.head(dropout(pooled, self.dropout_rate, fold(rng, 2)), fold(rng, 3))


def convert_hf_tensors(tensors: Mapping[str, np.ndarray], prefix: str, ignored: re.Pattern,
                       rename: Callable, load_head: bool) -> tuple[dict, list]:
  """The loop the families' HF converters share.

  Each key loses ``prefix`` (``transformer.``, ``model.``); names matching
  ``ignored`` are skipped; the classifier's ``score.weight`` (nn.Linear, (C, H))
  becomes the transposed ``head/kernel`` if ``load_head``, else is skipped;
  ``rename(bare name, value)`` maps the rest to ``(ntkft name, value)``, to
  ``()`` (skip) or to None (unexpected).

  Returns:
    ({ntkft name: float32 array}, [unexpected keys as given]).
  """
  out, unexpected = {}, []
  for key, value in tensors.items():
    bare = key.removeprefix(prefix)
    if ignored.match(bare):
      continue
    if bare == "score.weight":
      if load_head:
        out["head/kernel"] = value.T
      continue
    renamed = rename(bare, value)
    if renamed is None:
      unexpected.append(key)
    elif renamed:
      out[renamed[0]] = renamed[1]
  return {k: np.asarray(v, np.float32) for k, v in out.items()}, unexpected
