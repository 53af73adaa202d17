"""peft.kernel_subset on the tiny BERT fixture, against Jacobians of the raveled subset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft import peft
from ntkft.models import HeadConfig, load_pretrained
from tests.conftest import FIXTURES

TINY_BERT = FIXTURES / "parity" / "tiny_bert"
LAYERS = 2


def _model(spec):
  return load_pretrained(TINY_BERT, HeadConfig(num_labels=2), adapters=peft.adapters_for(
      spec, LAYERS), seed=1)


def _inputs(n, seed):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 99, size=(n, 7))
  mask = np.ones((n, 7), np.int32)
  mask[::2, 5:] = 0
  return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask),
          "token_type_ids": jnp.zeros((n, 7), jnp.int32)}


def _jacobian(model, names, x):
  """(N, C, P) Jacobian of the outputs w.r.t. the named leaves only (raveled)."""
  trainable, frozen = peft.partition(model.params, names)
  flat, unravel = ravel_pytree(trainable)
  # Jitted: op-by-op (eager) reverse mode through BERT takes ~3x longer than compiling it.
  return jax.jit(jax.jacobian(lambda v: model.apply_fn(peft.combine(unravel(v), frozen), x)))(
      flat)


def test_plain_and_sign_kernels_are_those_of_the_chosen_leaves():
  spec = peft.PeftSpec(targets=("query", "value"), init="gaussian", head=False)
  model = _model(spec)
  sub = peft.kernel_subset(model, spec)
  assert sub.names and all("lora_" in n for n in sub.names)
  assert sub.num_params == 2 * 2 * (32 * 8 + 8 * 32)  # layers x (q, v) x (A + B)
  x1, x2 = _inputs(5, 0), _inputs(3, 1)
  # One Jacobian of both batches (one compile); its rows are per example.
  j = _jacobian(model, sub.names, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), x1, x2))
  j1, j2 = j[:5], j[5:]
  # Mean over the two logits (neural-tangents' normalized trace).
  want_plain = np.einsum("ncp,mcp->nm", j1, j2) / 2
  want_sign = np.einsum("ncp,mcp->nm", j1, np.sign(j2)) / 2
  scale = np.abs(want_plain).max()
  np.testing.assert_allclose(sub.ntk_fn()(x1, x2), want_plain, rtol=1e-4, atol=1e-5 * scale)
  np.testing.assert_allclose(sub.ntk_fn("plain")(x1, x2), want_plain, rtol=1e-4,
                             atol=1e-5 * scale)
  np.testing.assert_allclose(sub.ntk_fn("sign")(x1, x2), want_sign, rtol=1e-4,
                             atol=1e-5 * np.abs(want_sign).max())
  out = jax.jit(model.apply_fn)(model.params, x1)
  np.testing.assert_allclose(sub.outputs(x1), out, rtol=1e-5, atol=1e-5 * np.abs(out).max())


def test_names_and_spec_give_the_same_subset_and_head_is_opt_in():
  with_head = peft.PeftSpec(targets=("value",), head=True)
  model = _model(with_head)
  by_spec = peft.kernel_subset(model, with_head)
  assert "head/kernel" in by_spec.names
  by_names = peft.kernel_subset(model, list(by_spec.names))
  assert by_names.names == by_spec.names
  no_head = peft.kernel_subset(model, peft.PeftSpec(targets=("value",), head=False))
  assert not any(n.startswith("head/") for n in no_head.names)
  x = _inputs(4, 2)
  k_all, k_no_head = by_spec.ntk_fn()(x), no_head.ntk_fn()(x)
  # The head's kernel block is PSD, so adding it can only raise the diagonal.
  assert np.all(np.diag(k_all) > np.diag(k_no_head))


def test_bad_subsets_raise():
  model = _model(peft.PeftSpec(targets=("value",)))
  with pytest.raises(ValueError, match="unknown parameter name"):
    peft.kernel_subset(model, ["encoder/layer_0/attention/nope/kernel"])
  with pytest.raises(TypeError, match="not one string"):
    peft.kernel_subset(model, "head/kernel")
  with pytest.raises(ValueError, match="KernelSubset.ntk_fn: unknown kernel kind 'rbf'"):
    peft.kernel_subset(model, ["head/kernel"]).ntk_fn("rbf")
