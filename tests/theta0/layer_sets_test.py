"""Layer-set kernels and their predictors against explicit Jacobians; float64 Grams at κ ≈ 1e8."""
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import data, peft
from ntkft.models import EncoderConfig, HeadConfig, init_model
from ntkft.ntk import jacobians
from ntkft.spectral import predictors as pred
from ntkft.theta0.layer_sets import (
  block_jacobians,
  head_lora_kernels,
  layer_block,
  split_head,
  untraced_block_kernels,
)


@pytest.fixture(scope="module")
def setup():
  cfg = EncoderConfig(vocab_size=30, hidden_size=8, num_layers=2, num_heads=2,
                      intermediate_size=16, max_position_embeddings=8)
  spec = peft.PeftSpec(methods=("lora",), layers=(1,), targets=("query", "value"), rank=2)
  model = init_model(cfg, HeadConfig(num_labels=2), peft.adapters_for(spec, 2), seed=0)
  trainable, frozen = peft.partition(model.params, peft.trainable_names(spec, model.params, 2))
  # Move LoRA B off 0 so every factor has a nonzero Jacobian.
  trainable = jax.tree.map(lambda t: t + 0.1 * jnp.cos(jnp.arange(t.size)).reshape(t.shape),
                           trainable)
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 7, size=5)
  enc = data.Encoded([rng.integers(1, 30, n).astype(np.int32) for n in lengths],
                     [np.zeros(n, np.int32) for n in lengths],
                     np.array([0, 1, 1, 0, 1], np.int32), lengths.astype(np.int32), 0)
  x = data.eval_batches(enc, 5, None, 6)[0]
  x = {k: x[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

  def apply(p, xx, fr):
    return model.apply_fn(peft.combine(p, fr), xx)

  return apply, trainable, frozen, x, enc.labels, head_lora_kernels(apply, trainable, frozen, x)


def _jacobian(apply, trainable, frozen, x, part):
  """(N, C, P_part) Jacobian of the part's leaves, by jax.jacrev, in float64."""
  parts = split_head(trainable)
  rest = peft.combine(parts["head" if part == "lora" else "lora"], frozen)
  jac = jax.jacrev(lambda q: apply(q, x, rest))(parts[part])
  leaves = [np.asarray(j, np.float64).reshape(j.shape[0], j.shape[1], -1)
            for j in jax.tree.leaves(jac)]
  return np.concatenate(leaves, axis=-1)


def test_kernels_equal_explicit_jacobian_products(setup):
  apply, trainable, frozen, x, _, kernels = setup
  for part in ("lora", "head"):
    j = _jacobian(apply, trainable, frozen, x, part)
    want_plain = np.einsum("icp,jdp->ijcd", j, j)
    want_sign = np.einsum("icp,jdp->ijcd", j, np.sign(j))
    for kind, want in (("plain", want_plain), ("sign", want_sign)):
      got = kernels[(kind, part)]
      assert got.shape == (5, 5, 2, 2)
      np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_layouts_and_predictors(setup):
  apply, trainable, frozen, x, labels, kernels = setup
  k = kernels[("plain", "lora")] + kernels[("plain", "head")]
  f = pred.flat(k)
  j = np.concatenate([_jacobian(apply, trainable, frozen, x, p) for p in ("lora", "head")], -1)
  np.testing.assert_allclose(f, j.reshape(10, -1) @ j.reshape(10, -1).T,
                             atol=2e-5 * np.abs(f).max())
  np.testing.assert_allclose(pred.traced(k), (f[0::2, 0::2] + f[1::2, 1::2]) / 2)
  out = pred.layer_set_predictors(kernels, labels)
  assert set(out) == {pred.kernel_name(a, b, c) for a in pred.KINDS for b in pred.LAYOUTS
                      for c in pred.HEADS}
  eig = np.linalg.eigvalsh(f)
  top = out["plain_flat_head"]
  assert top["lambda_max"] == pytest.approx(eig[-1], rel=1e-9)
  assert top["kappa"] == pytest.approx(eig[-1] / eig[0], rel=1e-6)
  y = pred.centred_targets(labels, 2).reshape(-1)
  assert top["alignment"] == pytest.approx(y @ f @ y / (np.linalg.norm(f) * y @ y), rel=1e-9)
  # The head adds a PSD block: λmax with head ≥ without.
  assert top["lambda_max"] >= out["plain_flat_nohead"]["lambda_max"]


def test_bad_shapes_and_missing_parts():
  with pytest.raises(ValueError, match=r"\(N, N, C, C\)"):
    pred.flat(np.zeros((3, 3)))
  with pytest.raises(ValueError, match="no head"):
    split_head({"encoder": {"layer_0": {"w": np.zeros(2)}}})


def _planted_kappa_1e8():
  """A linear model whose float32 Jacobian is exact and whose kernel has κ ≈ 1.3e8.

  f(x)_c = x·W[:, c] + b_c on N = 8 examples of P = 12 features, C = 2: the
  Jacobian row (i, c) is (x_i ⊗ e_c, e_c), exactly the float32 inputs. Example 7
  is example 0 moved by 3e-4 along a random direction: that near-collinear pair
  plants λmin ≈ 2.9e-7 against λmax ≈ 37. Returns (apply, params, x, the float64
  Jacobian of the same float32 inputs, rows (i, c) at i·C + c as block_jacobians).
  """
  rng = np.random.default_rng(0)
  n, p, c = 8, 12, 2
  xs = rng.normal(size=(n, p))
  xs[-1] = xs[0] + 3e-4 * rng.normal(size=p)
  xs = xs.astype(np.float32).astype(np.float64)  # what the model sees, exactly
  eye = np.eye(c)
  j64 = np.stack([np.concatenate([np.kron(xs[i], eye[k]), eye[k]])
                  for i in range(n) for k in range(c)])
  params = {"encoder": {"layer_0": {"kernel": jnp.zeros((p, c), jnp.float32)}},
            "head": {"bias": jnp.zeros((c,), jnp.float32)}}

  def apply(q, x, frozen):
    del frozen
    return x["x"] @ q["encoder"]["layer_0"]["kernel"] + q["head"]["bias"]

  return apply, params, {"x": jnp.asarray(xs, jnp.float32)}, j64


def test_untraced_block_kernels_resolve_lambda_min_at_kappa_1e8():
  """Amendment 2, item 7: float64 Grams from the float32 Jacobian keep λmin at κ ≈ 1e8
  within 1e-3 relative; a float32 Gram of the same Jacobian does not."""
  apply, params, x, j64 = _planted_kappa_1e8()
  ref = np.linalg.eigvalsh(j64 @ j64.T)
  assert 5e7 < ref[-1] / ref[0] < 5e8  # the planted κ ≈ 1e8
  kernels = untraced_block_kernels(apply, params, {}, x, layer_block, chunk_size=4)
  assert {b for _, b in kernels} == {"layer_0", "head"}
  assert all(k.dtype == np.float64 for k in kernels.values())
  eig = np.linalg.eigvalsh(pred.flat(kernels[("plain", "layer_0")] + kernels[("plain", "head")]))
  assert eig[0] == pytest.approx(ref[0], rel=1e-3)
  assert eig[-1] == pytest.approx(ref[-1], rel=1e-6)
  # The same float32 Jacobian (here exact), Gram formed in float32: λmin is rounding.
  jac = block_jacobians(apply, params, {}, x, layer_block, chunk_size=4)
  j32 = np.concatenate([jac["layer_0"], jac["head"]], axis=1)
  assert j32.dtype == np.float32
  np.testing.assert_array_equal(j32, j64)
  eig32 = np.linalg.eigvalsh((j32 @ j32.T).astype(np.float64))
  assert abs(eig32[0] - ref[0]) > 0.1 * ref[0]  # 100× the tolerance above (0.93 here)


def test_block_jacobians_compile_in_the_core_cache_and_release_apply():
  """The Jacobian program lives in the one weakly keyed cache (ntkft.ntk.jacobians): a second
  call reuses it, and it does not keep ``apply`` (nor its compiled programs) alive."""
  apply, params, x, _ = _planted_kappa_1e8()
  first = block_jacobians(apply, params, {}, x, layer_block, chunk_size=4)
  program = jacobians.jitted_tree(apply, jacobians.per_example_tree, {})
  again = block_jacobians(apply, params, {}, x, layer_block)
  assert jacobians.jitted_tree(apply, jacobians.per_example_tree, {}) is program
  for b in first:
    np.testing.assert_array_equal(again[b], first[b])
  alive = weakref.ref(apply)
  del apply, program
  gc.collect()
  assert alive() is None
