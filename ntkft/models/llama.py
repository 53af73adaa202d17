"""LLaMA layout decoder-only LM (Touvron et al. 2023) with a classification head, in Flax NNX.

Pre-RMSNorm blocks, rotary position embeddings (Su et al. 2021, HF
``rotate_half`` convention), separate q/k/v/o projections with grouped-query
attention, SwiGLU MLP, final RMSNorm and an (untied by default) LM head::

  x = embed[ids]
  a = CausalAttn(rope(query(n)), rope(key(n)), value(n)),  n = RMS_1(x);  x = x + attn_out(a)
  x = x + down(silu(gate(RMS_2(x))) * up(RMS_2(x)))
  h = RMS_f(x);  lm_logits = lm_head(h);  logits = head(h[last real token])

Rotary: for a head vector q of width D and position p, with
θ_j = rope_theta^(−2j/D), j < D/2: q' = q·cos(pθ) + rotate_half(q)·sin(pθ) with
cos/sin repeated twice along D and rotate_half(q) = [−q[D/2:], q[:D/2]].

Parameter names (HF LlamaModel key in brackets; nn.Linear weights transposed)::

  embeddings/word/embedding (V, H)                   [embed_tokens.weight]
  decoder/layer_{i}/attention_norm/scale             [layers.i.input_layernorm.weight]
  decoder/layer_{i}/attention/{query,key,value,attn_out}/kernel[,bias,lora_a,lora_b]
                                                     [layers.i.self_attn.{q,k,v,o}_proj]
  decoder/layer_{i}/ffn_norm/scale                   [layers.i.post_attention_layernorm.weight]
  decoder/layer_{i}/ffn/{gate,up,down}/kernel        [layers.i.mlp.{gate,up,down}_proj]
  final_norm/scale                                   [norm.weight]
  lm_head/kernel (H, V)                              [lm_head.weight]  (absent when tied)
  head/{kernel,bias}                                 [score.weight; HF has no bias]

LoRA targets (``ntkft.peft``): query, key, value, attn_out, gate, up, down.
"""
import functools
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ntkft.models import causal
from ntkft.models.causal import DecoderConfig
from ntkft.models.layers import ACTIVATIONS, Dense, PreNormBlock, RMSNorm, dropout, fold

TARGETS = ("query", "key", "value", "attn_out", "gate", "up", "down")
_FFN_TARGETS = ("gate", "up", "down")


def module_path(layer: int, target: str) -> str:
  """'decoder/layer_3/attention/query' for (3, 'query'); 'decoder/layer_3/ffn/up' for (3, 'up')."""
  group = "ffn" if target in _FFN_TARGETS else "attention"
  return f"decoder/layer_{layer}/{group}/{target}"


def rotary(x, positions, theta: float):
  """x: (B, L, N, D), positions: (B, L) -> x rotated (HF LLaMA rotate_half convention)."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))   # (D/2,)
  freqs = positions[..., None].astype(jnp.float32) * inv_freq                 # (B, L, D/2)
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]                # (B, L, 1, D)
  cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
  rotated = jnp.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
  return x * cos + rotated * sin


class Attention(nnx.Module):

  def __init__(self, cfg: DecoderConfig, adapters, prefix: str, rngs: nnx.Rngs):
    h, d = cfg.hidden_size, cfg.dim_per_head
    widths = {"query": cfg.num_heads * d, "key": cfg.kv_heads * d, "value": cfg.kv_heads * d}
    for name, w in widths.items():
      setattr(self, name, Dense(h, w, rngs=rngs, adapter=adapters.get(f"{prefix}/{name}"),
                                use_bias=cfg.attention_bias))
    self.attn_out = Dense(cfg.num_heads * d, h, rngs=rngs,
                          adapter=adapters.get(f"{prefix}/attn_out"), use_bias=cfg.attention_bias)
    self.num_heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.kv_heads, d
    self.theta = cfg.rope_theta
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, x, mask, positions, rng=None):
    b, l, _ = x.shape
    q = self.query(x, fold(rng, 0)).reshape(b, l, self.num_heads, self.head_dim)
    k = self.key(x, fold(rng, 1)).reshape(b, l, self.kv_heads, self.head_dim)
    v = self.value(x, fold(rng, 2)).reshape(b, l, self.kv_heads, self.head_dim)
    q, k = rotary(q, positions, self.theta), rotary(k, positions, self.theta)
    ctx = causal.causal_attention(
        q, k, v, mask, lambda p: dropout(p, self.dropout_rate, fold(rng, 3)))
    return self.attn_out(ctx, fold(rng, 4))


class MLP(nnx.Module):
  """SwiGLU: down(act(gate(x)) * up(x))."""

  def __init__(self, cfg: DecoderConfig, adapters, prefix: str, rngs: nnx.Rngs):
    h, i = cfg.hidden_size, cfg.intermediate_size
    for name, d_in, d_out in (("gate", h, i), ("up", h, i), ("down", i, h)):
      setattr(self, name, Dense(d_in, d_out, rngs=rngs, adapter=adapters.get(f"{prefix}/{name}"),
                                use_bias=cfg.mlp_bias))
    self.act = cfg.hidden_act

  def __call__(self, x, rng=None):
    g = ACTIVATIONS[self.act](self.gate(x, fold(rng, 0)))
    return self.down(g * self.up(x, fold(rng, 1)), fold(rng, 2))


def block(cfg: DecoderConfig, adapters, prefix: str, rngs: nnx.Rngs) -> PreNormBlock:
  """Pre-RMSNorm block: x = x + Attn(N(x), positions); x = x + SwiGLU(N(x))."""
  return PreNormBlock(
      RMSNorm(cfg.hidden_size, cfg.norm_eps),
      Attention(cfg, adapters, f"{prefix}/attention", rngs),
      RMSNorm(cfg.hidden_size, cfg.norm_eps), MLP(cfg, adapters, f"{prefix}/ffn", rngs),
      cfg.dropout_rate)


class LlamaClassifier(causal.CausalClassifier):
  """LLaMA (final RMSNorm, LM head tied or not) + pooling + linear head."""
  block = staticmethod(block)
  norm_type = RMSNorm

  def init_lm_head(self, cfg: DecoderConfig, rngs: nnx.Rngs) -> None:
    self.tied = cfg.tie_word_embeddings
    if not self.tied:
      self.lm_head = Dense(cfg.hidden_size, cfg.vocab_size, rngs=rngs, use_bias=False)

  def hidden_states(self, batch, rng=None):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    x = dropout(self.embeddings.word(ids), self.dropout_rate, fold(rng, 0))
    x = self.decoder(x, mask, causal.positions_from_mask(mask), rng=fold(rng, 1))
    return self.final_norm(x)

  def lm_logits(self, batch, rng=None):
    h = self.hidden_states(batch, rng)
    return h @ self.embeddings.word.embedding[...].T if self.tied else self.lm_head(h)


# ----------------------------------------------------------------------------- HF conversion

_LAYER_RULES = {
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attention/query", "self_attn.k_proj": "attention/key",
    "self_attn.v_proj": "attention/value", "self_attn.o_proj": "attention/attn_out",
    "mlp.gate_proj": "ffn/gate", "mlp.up_proj": "ffn/up", "mlp.down_proj": "ffn/down",
}
_IGNORED = re.compile(r"^(layers\.\d+\.self_attn\.rotary_emb\.inv_freq|rotary_emb\.inv_freq)$")


def convert_hf_tensors(tensors: Mapping[str, np.ndarray], load_head: bool = True,
                       tied: bool = False):
  """HF LLaMA tensors (``model.``-prefixed or bare) -> ({ntkft name: array}, [unexpected]).

  nn.Linear weights (d_out, d_in) are transposed; ``lm_head.weight`` is skipped
  when the embeddings are tied; rotary ``inv_freq`` buffers are skipped.
  """
  return causal.convert_hf_tensors(tensors, "model.", _IGNORED,
                                   functools.partial(_rename, tied=tied), load_head)


def _rename(bare: str, value: np.ndarray, tied: bool):
  """A bare LLaMA tensor name -> (ntkft name, value), () to skip, or None if not one of ours."""
  if bare == "lm_head.weight":
    return () if tied else ("lm_head/kernel", value.T)
  if bare == "embed_tokens.weight":
    return "embeddings/word/embedding", value
  if bare == "norm.weight":
    return "final_norm/scale", value
  m = re.match(r"^layers\.(\d+)\.(.+)\.(weight|bias)$", bare)
  if not (m and m.group(2) in _LAYER_RULES):
    return None
  path = f"decoder/layer_{m.group(1)}/{_LAYER_RULES[m.group(2)]}"
  if path.endswith("norm"):
    return (f"{path}/scale", value) if m.group(3) == "weight" else None
  if m.group(3) == "weight":
    return f"{path}/kernel", value.T
  return f"{path}/bias", value


def config_from_hf(hf: dict, dropout_rate: float = 0.0) -> DecoderConfig:
  """DecoderConfig from a LLaMA config.json dict (``rope_theta`` or ``rope_parameters``)."""
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"llama config: rope type {rope_type!r} is not supported (default only)")
  if hf.get("pretraining_tp", 1) != 1:
    raise ValueError("llama config: pretraining_tp != 1 is not supported")
  return DecoderConfig(
      family="llama", vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
      num_kv_heads=hf.get("num_key_value_heads"), head_dim=hf.get("head_dim"),
      intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf.get("max_position_embeddings", 2048),
      norm_eps=hf.get("rms_norm_eps", 1e-6), pad_token_id=hf.get("pad_token_id"),
      hidden_act=hf.get("hidden_act", "silu"),
      rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      attention_bias=bool(hf.get("attention_bias", False)),
      mlp_bias=bool(hf.get("mlp_bias", False)), dropout_rate=dropout_rate)
