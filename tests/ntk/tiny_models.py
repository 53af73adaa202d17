"""Tiny pure-``jax.numpy`` models for the neural-tangents reference fixture.

These models are evaluated twice: once by ``tools/make_nt_fixture.py`` under the
pinned neural-tangents env (jax 0.4.38) and again by
``tests/ntk/neural_tangents_reference_test.py`` under the current jax. To make
the two runs compute the same function they use only ``jnp`` arithmetic whose
semantics have not changed between those versions: no flax, no ``jax.random``
(parameters come from ``numpy.random.RandomState``), no ``jax.nn`` helpers
(softmax, gelu, layer norm and the swish nonlinearity are written out by hand),
no erf.

Two models:

* MLP: ``x (N, 4) -> (N, 3)``; two hidden layers of width 8 with ``tanh`` and
  ``swish(z) = z / (1 + exp(-z))``.
* Attention: ``x = {"tokens": (N, T, D), "mask": (N, T)}`` with ``T = 5``,
  ``D = 6``; one masked single-head self-attention layer with a residual
  connection, layer norm, mean-pool over real tokens (``mask == 1``) and a
  linear head to ``(N, 2)``. Exercises dict inputs, as the real models take a
  dict batch.

Both ``init_*`` functions return nested dicts of float64 numpy arrays; the apply
functions run in whatever dtype their arguments have.
"""

from typing import Any, Dict

import jax.numpy as jnp
import numpy as np

MLP_IN = 4
MLP_WIDTH = 8
MLP_OUT = 3

ATTN_TOKENS = 5
ATTN_DIM = 6
ATTN_OUT = 2
LAYER_NORM_EPS = 1e-6
# Added to the attention logits of padding keys; exp() of it underflows to 0.
MASK_LOGIT = -1e9


def _dense_init(rng: np.random.RandomState, fan_in: int, fan_out: int):
  """LeCun-normal kernel (fan_in, fan_out) and small random bias (fan_out,)."""
  kernel = rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)
  bias = 0.1 * rng.normal(size=(fan_out,))
  return {"kernel": kernel.astype(np.float64), "bias": bias.astype(np.float64)}


def _dense(p, x):
  return jnp.matmul(x, p["kernel"]) + p["bias"]


def _swish(z):
  """z * sigmoid(z), written out so that no library helper is involved."""
  return z / (1.0 + jnp.exp(-z))


# MLP ------------------------------------------------------------------


def init_mlp(seed: int) -> Dict[str, Any]:
  """Params of the tiny MLP, drawn with ``np.random.RandomState(seed)``.

  Returns:
    ``{"layer_0": {"kernel": (4, 8), "bias": (8,)}, "layer_1": {(8, 8), (8,)},
    "layer_2": {(8, 3), (3,)}}``, float64 numpy arrays.
  """
  rng = np.random.RandomState(seed)
  sizes = [MLP_IN, MLP_WIDTH, MLP_WIDTH, MLP_OUT]
  return {
      f"layer_{i}": _dense_init(rng, sizes[i], sizes[i + 1])
      for i in range(len(sizes) - 1)
  }


def mlp_apply(params, x):
  """f(x) = W2 swish(W1 tanh(W0 x + b0) + b1) + b2.

  Args:
    params: as returned by ``init_mlp``.
    x: (N, 4) inputs.

  Returns:
    (N, 3) outputs.
  """
  h = jnp.tanh(_dense(params["layer_0"], x))
  h = _swish(_dense(params["layer_1"], h))
  return _dense(params["layer_2"], h)


# attention ------------------------------------------------------------


def init_attention(seed: int) -> Dict[str, Any]:
  """Params of the tiny attention model, drawn with ``RandomState(seed)``.

  Returns:
    ``{"attention": {"query"|"key"|"value"|"output": {"kernel": (6, 6),
    "bias": (6,)}}, "layer_norm": {"scale": (6,), "bias": (6,)},
    "head": {"kernel": (6, 2), "bias": (2,)}}``, float64 numpy arrays.
  """
  rng = np.random.RandomState(seed)
  attention = {
      name: _dense_init(rng, ATTN_DIM, ATTN_DIM)
      for name in ("query", "key", "value", "output")
  }
  layer_norm = {
      "scale": (1.0 + 0.1 * rng.normal(size=(ATTN_DIM,))).astype(np.float64),
      "bias": (0.1 * rng.normal(size=(ATTN_DIM,))).astype(np.float64),
  }
  head = _dense_init(rng, ATTN_DIM, ATTN_OUT)
  return {"attention": attention, "layer_norm": layer_norm, "head": head}


def attention_apply(params, x):
  """Masked single-head self-attention + residual + layer norm + pool + head.

  With ``h = tokens`` (N, T, D) and key mask ``m`` (N, T)::

    a_nqk = softmax_k(q_nq . k_nk / sqrt(D) + (1 - m_nk) * MASK_LOGIT)
    u = LayerNorm(h + Wo (sum_k a_nqk v_nk))
    pooled_n = sum_t m_nt u_nt / sum_t m_nt
    f(x)_n = Wh pooled_n + bh

  Args:
    params: as returned by ``init_attention``.
    x: dict with ``"tokens"`` (N, T, D) float and ``"mask"`` (N, T) with 1 for
      real tokens and 0 for padding (float or int; every row needs at least
      one real token).

  Returns:
    (N, 2) outputs.
  """
  tokens = x["tokens"]
  mask = x["mask"].astype(tokens.dtype)
  p = params["attention"]
  q = _dense(p["query"], tokens)
  k = _dense(p["key"], tokens)
  v = _dense(p["value"], tokens)
  logits_nqk = jnp.einsum("nqd,nkd->nqk", q, k) / np.sqrt(ATTN_DIM)
  logits_nqk = logits_nqk + (1.0 - mask[:, None, :]) * MASK_LOGIT
  logits_nqk = logits_nqk - jnp.max(logits_nqk, axis=-1, keepdims=True)
  weights_nqk = jnp.exp(logits_nqk)
  weights_nqk = weights_nqk / jnp.sum(weights_nqk, axis=-1, keepdims=True)
  attended = jnp.einsum("nqk,nkd->nqd", weights_nqk, v)
  h = tokens + _dense(p["output"], attended)

  ln = params["layer_norm"]
  mean = jnp.mean(h, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
  h = (h - mean) / jnp.sqrt(var + LAYER_NORM_EPS) * ln["scale"] + ln["bias"]

  pooled = jnp.sum(h * mask[:, :, None], axis=1) / jnp.sum(
      mask, axis=1, keepdims=True
  )
  return _dense(params["head"], pooled)


# inputs ---------------------------------------------------------------


def make_inputs(model: str, n: int, seed: int):
  """Deterministic inputs (numpy RandomState) for ``model`` in {mlp, attention}.

  Returns:
    mlp: (n, 4) float64. attention: {"tokens": (n, 5, 6) float64,
    "mask": (n, 5) float64 0/1}, each row a prefix of real tokens of length
    1..5 (row i has ``1 + (i + seed) % 5`` real tokens).
  """
  rng = np.random.RandomState(seed)
  if model == "mlp":
    return rng.normal(size=(n, MLP_IN)).astype(np.float64)
  if model == "attention":
    tokens = rng.normal(size=(n, ATTN_TOKENS, ATTN_DIM)).astype(np.float64)
    lengths = 1 + (np.arange(n) + seed) % ATTN_TOKENS
    mask = (np.arange(ATTN_TOKENS)[None, :] < lengths[:, None]).astype(
        np.float64
    )
    return {"tokens": tokens, "mask": mask}
  raise ValueError(f"make_inputs: unknown model {model!r}; use mlp|attention")
