"""Tangent and quadratic Taylor models against their definitions, in float64.

Two models: a small tanh MLP (pure jnp) and the 2-layer tiny BERT fixture with
LoRA adapters on query/value, differentiated with respect to the adapters and
the head (the rest enters through ``*args`` as frozen weights). With
``init="gaussian"`` both LoRA factors are non-zero at θ0, so every block of the
Jacobian is active; with the usual ``init="zero_b"`` the A blocks vanish.
"""
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import peft
from ntkft.linearize import quadratic_apply_fn, tangent_apply_fn, taylor_terms_fn
from ntkft.models import HeadConfig, flatten, load_pretrained
from tests.conftest import FIXTURES

TINY_BERT = FIXTURES / "parity" / "tiny_bert"


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _f64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _axpy(a, x, y):
  """a·x + y over pytrees."""
  return jax.tree.map(lambda u, v: a * u + v, x, y)


def _random_like(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, l.shape, jnp.float64)
                            for k, l in zip(keys, leaves)])


def _mlp():
  """f(params, x) = tanh(tanh(x W1 + b1) W2 + b2) W3; x (4, 3) -> (4, 2)."""
  rng = np.random.default_rng(0)
  params = {f"l{i}": {"kernel": rng.normal(size=s) / np.sqrt(s[0]),
                      "bias": 0.1 * rng.normal(size=s[1])}
            for i, s in enumerate([(3, 5), (5, 5), (5, 2)])}

  def apply_fn(p, x):
    h = jnp.tanh(x @ p["l0"]["kernel"] + p["l0"]["bias"])
    h = jnp.tanh(h @ p["l1"]["kernel"] + p["l1"]["bias"])
    return h @ p["l2"]["kernel"] + p["l2"]["bias"]

  return apply_fn, _f64(params), (jnp.asarray(rng.normal(size=(4, 3))),)


def _lora_bert(init):
  """(apply(trainable, frozen, batch), trainable θ0, (frozen, batch)) in float64."""
  spec = peft.PeftSpec(methods=("lora",), rank=2, alpha=4.0, init=init)
  model = load_pretrained(TINY_BERT, HeadConfig(num_labels=2), adapters=peft.adapters_for(spec, 2))
  trainable, frozen = peft.partition(_f64(model.params),
                                     peft.trainable_names(spec, model.params, 2))
  rng = np.random.default_rng(1)
  batch = {"input_ids": jnp.asarray(rng.integers(1, 99, size=(2, 5)), jnp.int32),
           "attention_mask": jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], jnp.int32),
           "token_type_ids": jnp.zeros((2, 5), jnp.int32)}

  def apply_fn(p, frozen, batch):
    return model.apply_fn(peft.combine(p, frozen), batch)

  return apply_fn, trainable, (frozen, batch)


MODELS = {"mlp": _mlp, "lora_bert": functools.partial(_lora_bert, "gaussian")}


class Fns(NamedTuple):
  """Jitted functions of one model (compiled once per module) and its θ0, args."""
  apply: Callable
  lin: Callable
  terms: Callable
  quad: Callable
  params0: dict
  args: tuple


def _fns(apply_fn, params0, args) -> Fns:
  return Fns(jax.jit(apply_fn), jax.jit(tangent_apply_fn(apply_fn)),
             jax.jit(taylor_terms_fn(apply_fn)), jax.jit(quadratic_apply_fn(apply_fn)),
             params0, args)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
  with jax.enable_x64(True):
    apply_fn, params0, args = MODELS[request.param]()
    leaves = jax.tree.leaves(params0)
    assert all(l.dtype == jnp.float64 for l in leaves)
    if request.param == "lora_bert":  # both LoRA factors are active at θ0
      lora = {k: v for k, v in flatten(params0).items() if "/lora_" in k}
      assert len(lora) == 8 and all(np.abs(np.asarray(v)).min() > 0 for v in lora.values())
    return _fns(apply_fn, params0, args)


def test_tangent_equals_model_at_base(model):
  m = model
  out = m.lin(m.params0, m.params0, *m.args)
  assert out.dtype == jnp.float64
  np.testing.assert_array_equal(np.asarray(out), np.asarray(m.apply(m.params0, *m.args)))


def test_tangent_is_exactly_affine(model):
  m = model
  d1, d2 = _random_like(m.params0, 1), _random_like(m.params0, 2)
  base = m.lin(m.params0, m.params0, *m.args)
  e1 = m.lin(m.params0, _axpy(1.0, d1, m.params0), *m.args) - base
  e2 = m.lin(m.params0, _axpy(1.0, d2, m.params0), *m.args) - base
  a, b = 0.7, -1.9
  both = m.lin(m.params0, _axpy(a, d1, _axpy(b, d2, m.params0)), *m.args) - base
  scale = float(jnp.abs(e1).max() + jnp.abs(e2).max())
  assert scale > 1e-3  # the directions move the output
  np.testing.assert_allclose(both, a * e1 + b * e2, rtol=0, atol=1e-12 * scale)
  # ... while the model itself is not affine along the same directions.
  f_both = m.apply(_axpy(a, d1, _axpy(b, d2, m.params0)), *m.args) - m.apply(m.params0, *m.args)
  assert float(jnp.abs(f_both - (a * e1 + b * e2)).max()) > 1e-4 * scale


def test_jvp_matches_central_finite_difference(model):
  m = model
  v = _random_like(m.params0, 3)
  jv = m.lin(m.params0, _axpy(1.0, v, m.params0), *m.args) - m.lin(m.params0, m.params0, *m.args)
  eps = 1e-5
  fd = (m.apply(_axpy(eps, v, m.params0), *m.args)
        - m.apply(_axpy(-eps, v, m.params0), *m.args)) / (2 * eps)
  np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-6 * float(jnp.abs(fd).max()))


def test_taylor_terms_match_finite_differences(model):
  m = model
  v = _random_like(m.params0, 4)
  theta = _axpy(1.0, v, m.params0)
  f0, jd, dhd = m.terms(m.params0, theta, *m.args)
  np.testing.assert_array_equal(f0, m.apply(m.params0, *m.args))
  np.testing.assert_allclose(jd, m.lin(m.params0, theta, *m.args) - f0, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(m.quad(m.params0, theta, *m.args), f0 + jd + 0.5 * dhd,
                             rtol=1e-13, atol=1e-13)
  eps = 1e-4
  fd2 = (m.apply(_axpy(eps, v, m.params0), *m.args) - 2 * f0
         + m.apply(_axpy(-eps, v, m.params0), *m.args)) / eps**2
  assert float(jnp.abs(dhd).max()) > 1e-3  # a genuinely curved direction
  np.testing.assert_allclose(dhd, fd2, rtol=1e-5, atol=1e-5 * float(jnp.abs(fd2).max()))


def test_taylor_errors_shrink_at_second_and_third_order(model):
  m = model
  d = _random_like(m.params0, 5)
  norm = np.sqrt(sum(float(jnp.sum(jnp.square(l))) for l in jax.tree.leaves(d)))
  d = jax.tree.map(lambda x: x / norm, d)
  lin_err, quad_err = [], []
  for eps in (0.04, 0.02, 0.01):
    params = _axpy(eps, d, m.params0)
    exact = m.apply(params, *m.args)
    lin_err.append(float(jnp.abs(m.lin(m.params0, params, *m.args) - exact).max()))
    quad_err.append(float(jnp.abs(m.quad(m.params0, params, *m.args) - exact).max()))
  lin_ratio = np.array(lin_err[:-1]) / np.array(lin_err[1:])
  quad_ratio = np.array(quad_err[:-1]) / np.array(quad_err[1:])
  assert np.all((lin_ratio > 3.5) & (lin_ratio < 4.5)), (lin_err, lin_ratio)   # O(ε²)
  assert np.all((quad_ratio > 7.0) & (quad_ratio < 9.0)), (quad_err, quad_ratio)  # O(ε³)
  assert quad_err[-1] < lin_err[-1] / 10


def test_lora_zero_b_init_gives_zero_gradient_for_every_a():
  """At B = 0 the tangent model cannot move A: ∂f̄/∂A = ∂f/∂A(θ0) = 0 exactly."""
  apply_fn, params0, args = _lora_bert("zero_b")
  f_lin = tangent_apply_fn(apply_fn)
  weights = jnp.asarray([1.0, -2.0])

  @jax.jit
  def grads(params0, theta, frozen, batch):
    lin = jax.grad(lambda p: jnp.sum(f_lin(params0, p, frozen, batch) * weights))(theta)
    full = jax.grad(lambda p: jnp.sum(apply_fn(p, frozen, batch) * weights))(theta)
    return lin, full

  theta = _axpy(0.1, _random_like(params0, 6), params0)  # f̄ is affine: same gradient anywhere
  grad_lin, grad_full = map(flatten, grads(params0, theta, *args))
  a_names = [n for n in grad_lin if n.endswith("lora_a")]
  b_names = [n for n in grad_lin if n.endswith("lora_b")]
  assert len(a_names) == len(b_names) == 4  # query/value of 2 layers
  for name in a_names:
    assert np.all(np.asarray(grad_lin[name]) == 0.0), name
    assert np.abs(np.asarray(grad_full[name])).max() > 1e-6, name  # f itself moves A off θ0
  for name in b_names + ["head/kernel"]:
    assert np.abs(np.asarray(grad_lin[name])).max() > 1e-6, name
