"""Head/LoRA kernels of a layer set and their predictors, against explicit Jacobians."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import data, peft
from ntkft.layer_set_kernels import head_lora_kernels, split_head
from ntkft.models import EncoderConfig, HeadConfig, init_model
from ntkft.spectral import predictors as pred


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
