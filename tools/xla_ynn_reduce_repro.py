"""Minimal reproducer of the XLA:CPU YNNPACK reduce-fusion miscompile (JAX only).

Per-example Jacobians of a LayerNorm followed by a mean over tokens and a 2-output
linear head, batched with ``jax.vmap(jax.jacrev(f))`` over 32 examples of 64
tokens x 384 features, against the same Jacobians computed one example at a
time. With jaxlib 0.10.2 on CPU the batched ones are wrong (relative error
~7e-2) unless XLA's YNN reduce fusions are off::

  JAX_PLATFORMS=cpu python tools/xla_ynn_reduce_repro.py            # exit 1: miscompiled
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce \\
      JAX_PLATFORMS=cpu python tools/xla_ynn_reduce_repro.py        # exit 0

Needs nothing but jax and numpy (no ntkft), so it can go upstream as is. It
prints the versions, XLA_FLAGS and the error per output; it exits 1 when the
largest error exceeds 1e-3 of the Jacobian's largest entry.
"""
import os
import sys

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

EXAMPLES, TOKENS, FEATURES = 32, 64, 384


def f(scale, x, head):
  """One example x (TOKENS, FEATURES) -> (2,): token mean of LayerNorm(x * (1 + scale)) @ head."""
  h = x * (1 + scale)
  mean = h.mean(-1, keepdims=True)
  var = jnp.square(h - mean).mean(-1, keepdims=True)
  return ((h - mean) * jax.lax.rsqrt(var + 1e-12)).mean(0) @ head


def main():
  rng = np.random.default_rng(0)
  scale = (0.1 * rng.normal(size=FEATURES)).astype(np.float32)
  x = rng.normal(size=(EXAMPLES, TOKENS, FEATURES)).astype(np.float32)
  head = (rng.normal(size=(FEATURES, 2)) / FEATURES**0.5).astype(np.float32)

  batched = jax.jit(jax.vmap(jax.jacrev(f), in_axes=(None, 0, None)))(scale, x, head)
  one = jax.jit(jax.jacrev(f))
  reference = jnp.stack([one(scale, x[i], head) for i in range(EXAMPLES)])  # (32, 2, 384)

  largest = float(jnp.abs(reference).max())
  per_output = [float(jnp.abs(batched[:, c] - reference[:, c]).max()) / largest for c in (0, 1)]
  print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend {jax.default_backend()}")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print("max |vmap(jacrev) - jacrev one example at a time| / max |J|, per output: "
        + ", ".join(f"{e:.1e}" for e in per_output))
  wrong = max(per_output) > 1e-3
  print("MISCOMPILED" if wrong else "ok")
  return 1 if wrong else 0


if __name__ == "__main__":
  sys.exit(main())
