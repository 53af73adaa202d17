"""Regression test for the XLA:CPU YNNPACK reduce-fusion miscompilation.

With jaxlib 0.10.2's default CPU fusions, the Jacobian-contraction NTK of a
MiniLM-width encoder (hidden 384, 12 heads, sequence 64) batched over 32
examples and 2 classes returned wrong rows for the second class (see
``ntkft/xla_workarounds.py``; ``import ntkft`` turns those fusions off). The
test compares those per-example Jacobian rows with per-example ``jax.grad`` of
each logit, computed one example at a time, which never hit the bug.
"""
import jax
import jax.numpy as jnp
import numpy as np

from ntkft import ntk, peft
from ntkft.models import EncoderConfig, HeadConfig, init_model

N, SEQ = 32, 64


def _model_and_batch():
  config = EncoderConfig(vocab_size=200, hidden_size=384, num_layers=1, num_heads=12,
                         intermediate_size=1536, max_position_embeddings=64)
  spec = peft.PeftSpec(methods=("lora",), layers=(0,), targets=("query", "value"), rank=8,
                       init="gaussian", head=False)
  model = init_model(config, HeadConfig(num_labels=2), adapters=peft.adapters_for(spec, 1),
                     seed=0)
  trainable, frozen = peft.partition(model.params,
                                     peft.trainable_names(spec, model.params, 1))
  rng = np.random.default_rng(0)
  lengths = rng.integers(4, SEQ + 1, N)
  mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
  x = {"input_ids": rng.integers(1, 200, (N, SEQ)).astype(np.int32) * mask,
       "attention_mask": mask, "token_type_ids": np.zeros((N, SEQ), np.int32)}

  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen, x


def test_batched_jacobian_rows_match_per_example_gradients():
  apply, trainable, frozen, x = _model_and_batch()
  kernel = ntk.empirical_ntk_fn(apply, trace_axes=())(x, None, trainable, frozen)  # (N, N, 2, 2)

  # The frozen weights are a jit argument, not a closed-over constant.
  grad = jax.jit(jax.grad(lambda p, x, f, c: apply(p, x, f)[0, c]), static_argnums=3)
  rows = []
  for i in range(N):
    one = {k: v[i:i + 1] for k, v in x.items()}
    rows.append([jnp.concatenate([g.ravel() for g in
                                  jax.tree.leaves(grad(trainable, one, frozen, c))])
                 for c in (0, 1)])
  jac = jnp.stack([jnp.stack(r) for r in rows])                     # (N, 2, P)
  expected = jnp.einsum("icp,jdp->ijcd", jac, jac)
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(np.asarray(kernel), np.asarray(expected), rtol=0, atol=1e-4 * scale)
