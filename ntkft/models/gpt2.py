"""GPT-2 layout decoder-only LM (Radford et al. 2019) with a classification head, in Flax NNX.

Pre-LayerNorm blocks, learned absolute positions, fused q/k/v projection,
GELU (tanh approximation, HF ``gelu_new``) MLP, final LayerNorm and an LM head
tied to the word embedding::

  x = wte[ids] + wpe[pos]
  x = x + attn_out(CausalAttn(c_attn(LN_1(x))))     (per layer)
  x = x + ffn_out(gelu(ffn_in(LN_2(x))))
  h = LN_f(x);  lm_logits = h wteᵀ;  logits = head(h[last real token])

Position ids count real tokens (``causal.positions_from_mask``), so left- and
right-padded batches give the same outputs at real tokens.

Parameter names (HF GPT2Model key in brackets; HF ``Conv1D`` already stores
weights (d_in, d_out), so kernels are copied without transposing)::

  embeddings/word/embedding (V, H)              [wte.weight]
  embeddings/position/embedding (P, H)          [wpe.weight]
  decoder/layer_{i}/attention_norm/{scale,bias}     [h.i.ln_1]
  decoder/layer_{i}/attention/c_attn/{kernel (H, 3H),bias[,lora_a,lora_b]}  [h.i.attn.c_attn]
  decoder/layer_{i}/attention/attn_out/...      [h.i.attn.c_proj]
  decoder/layer_{i}/ffn_norm/{scale,bias}       [h.i.ln_2]
  decoder/layer_{i}/ffn/ffn_in/...              [h.i.mlp.c_fc]
  decoder/layer_{i}/ffn/ffn_out/...             [h.i.mlp.c_proj]
  final_norm/{scale,bias}                       [ln_f]
  head/{kernel,bias}                            [score.weight (transposed); HF has no bias]

LoRA targets (``ntkft.peft``): c_attn, attn_out, ffn_in, ffn_out.
"""
import re
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ntkft.models import causal
from ntkft.models.causal import DecoderConfig
from ntkft.models.layers import Dense, FeedForward, LayerNorm, PreNormBlock, dropout, fold

TARGETS = ("c_attn", "attn_out", "ffn_in", "ffn_out")


def module_path(layer: int, target: str) -> str:
  """'decoder/layer_3/attention/c_attn' for (3, 'c_attn')."""
  group = "ffn" if target.startswith("ffn") else "attention"
  return f"decoder/layer_{layer}/{group}/{target}"


class Attention(nnx.Module):

  def __init__(self, cfg: DecoderConfig, adapters, prefix: str, rngs: nnx.Rngs):
    h = cfg.hidden_size
    self.c_attn = Dense(h, 3 * h, rngs=rngs, adapter=adapters.get(f"{prefix}/c_attn"))
    self.attn_out = Dense(h, h, rngs=rngs, adapter=adapters.get(f"{prefix}/attn_out"))
    self.num_heads = cfg.num_heads
    self.dropout_rate = cfg.dropout_rate

  def __call__(self, x, mask, rng=None):
    """x: (B, L, H); mask: (B, L). Returns (B, L, H)."""
    b, l, h = x.shape
    qkv = self.c_attn(x, fold(rng, 0))
    q, k, v = (t.reshape(b, l, self.num_heads, h // self.num_heads)
               for t in jnp.split(qkv, 3, axis=-1))
    ctx = causal.causal_attention(
        q, k, v, mask, lambda p: dropout(p, self.dropout_rate, fold(rng, 1)))
    return self.attn_out(ctx, fold(rng, 2))


def block(cfg: DecoderConfig, adapters, prefix: str, rngs: nnx.Rngs) -> PreNormBlock:
  """Pre-LN block: x = x + Attn(LN(x)); x = x + FFN(LN(x))."""
  return PreNormBlock(
      LayerNorm(cfg.hidden_size, cfg.norm_eps),
      Attention(cfg, adapters, f"{prefix}/attention", rngs),
      LayerNorm(cfg.hidden_size, cfg.norm_eps),
      FeedForward(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, adapters,
                  f"{prefix}/ffn", rngs),
      cfg.dropout_rate)


class GPT2Classifier(causal.CausalClassifier):
  """GPT-2 (final LayerNorm, LM head tied to the word embeddings) + pooling + linear head."""
  block = staticmethod(block)
  norm_type = LayerNorm

  def hidden_states(self, batch, rng=None):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = causal.positions_from_mask(mask)
    x = self.embeddings.word(ids) + self.embeddings.position(pos)
    x = dropout(x, self.dropout_rate, fold(rng, 0))
    return self.final_norm(self.decoder(x, mask, rng=fold(rng, 1)))

  def lm_logits(self, batch, rng=None):
    return self.hidden_states(batch, rng) @ self.embeddings.word.embedding[...].T


# ----------------------------------------------------------------------------- HF conversion

_LAYER_RULES = {
    "ln_1": "attention_norm", "attn.c_attn": "attention/c_attn",
    "attn.c_proj": "attention/attn_out", "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn/ffn_in", "mlp.c_proj": "ffn/ffn_out",
}
_IGNORED = re.compile(r"^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")


def convert_hf_tensors(tensors: Mapping[str, np.ndarray], load_head: bool = True):
  """HF GPT-2 tensors (``transformer.``-prefixed or bare) -> ({ntkft name: array}, [unexpected]).

  Conv1D weights are already (d_in, d_out); the classifier's ``score.weight``
  (nn.Linear, (C, H)) is transposed. The tied ``lm_head.weight`` and the causal-
  mask buffers ``attn.bias``/``attn.masked_bias`` are skipped.
  """
  return causal.convert_hf_tensors(tensors, "transformer.", _IGNORED, _rename, load_head)


def _rename(bare: str, value: np.ndarray):
  """A bare GPT-2 tensor name -> (ntkft name, value), or None if it is not one of ours."""
  if bare == "wte.weight":
    return "embeddings/word/embedding", value
  if bare == "wpe.weight":
    return "embeddings/position/embedding", value
  m = re.match(r"^(?:h\.(\d+)\.(.+)|(ln_f))\.(weight|bias)$", bare)
  if not m:
    return None
  leaf = m.group(4)
  path = "final_norm" if m.group(3) else (
      f"decoder/layer_{m.group(1)}/{_LAYER_RULES[m.group(2)]}"
      if m.group(2) in _LAYER_RULES else None)
  if path is None:
    return None
  is_norm = path.endswith("norm")
  return f"{path}/{('scale' if is_norm else 'kernel') if leaf == 'weight' else 'bias'}", value


def config_from_hf(hf: dict, dropout_rate: float = 0.0) -> DecoderConfig:
  """DecoderConfig from a GPT-2 config.json dict."""
  for field, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
    if hf.get(field, ok) != ok:
      raise ValueError(f"gpt2 config: {field}={hf[field]!r} is not supported (only {ok})")
  h = hf["n_embd"]
  return DecoderConfig(
      family="gpt2", vocab_size=hf["vocab_size"], hidden_size=h, num_layers=hf["n_layer"],
      num_heads=hf["n_head"], intermediate_size=hf.get("n_inner") or 4 * h,
      max_position_embeddings=hf["n_positions"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      pad_token_id=hf.get("pad_token_id"), hidden_act=hf.get("activation_function", "gelu_new"),
      tie_word_embeddings=True, dropout_rate=dropout_rate)
