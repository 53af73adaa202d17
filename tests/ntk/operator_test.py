"""ntk_vp_fn against the dense kernel: products, Lanczos extremes, kernel ridge by CG."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import spectral
from ntkft.ntk import budgeted, operator
from tests.ntk import tiny_models


@pytest.fixture(scope="module")
def problem():
  """Attention model, 7 examples, float64: (params, x, {traced: dense K as a matrix})."""
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, tiny_models.init_attention(3))
    x = jax.tree.map(jnp.asarray, tiny_models.make_inputs("attention", 7, 3))
    dense = {}
    for traced in (True, False):
      k = budgeted.budgeted_ntk_fn(tiny_models.attention_apply, (-1,) if traced else ())(
          x, None, params)
      dense[traced] = k if traced else np.transpose(k, (0, 2, 1, 3)).reshape(14, 14)
  return params, x, dense


@pytest.mark.parametrize("traced", [True, False])
def test_products_and_lanczos_match_dense(problem, traced):
  params, x, dense = problem
  k = dense[traced]
  with jax.enable_x64(True):
    matvec, dim = operator.ntk_vp_fn(tiny_models.attention_apply, (-1,) if traced else (),
                                     batch_size=3)(x, params)
    assert dim == k.shape[0]
    v = np.random.default_rng(0).standard_normal(dim)
    np.testing.assert_allclose(matvec(v), k @ v, rtol=1e-9, atol=1e-12 * np.abs(k @ v).max())
    top, _ = spectral.lanczos_eigs(matvec, dim, k=1, num_iters=min(dim, 10), which="top")
  lam_max = np.linalg.eigvalsh(k)[-1]
  assert abs(top[0] - lam_max) <= 1e-3 * lam_max


def test_kernel_ridge_cg_solves_the_dense_system(problem):
  params, x, dense = problem
  k = dense[True]
  y = np.random.default_rng(1).standard_normal((7, 2))
  with jax.enable_x64(True):
    matvec, dim = operator.ntk_vp_fn(tiny_models.attention_apply)(x, params)
    alpha = operator.kernel_ridge_cg(matvec, dim, y, ridge=1e-2, rtol=1e-12)
  np.testing.assert_allclose(alpha, np.linalg.solve(k + 1e-2 * np.eye(7), y), rtol=1e-7)


def test_bad_arguments():
  with pytest.raises(ValueError, match="trace_axes"):
    operator.ntk_vp_fn(tiny_models.mlp_apply, trace_axes=(0,))
  with pytest.raises(ValueError, match="batch_size must be a positive int"):
    operator.ntk_vp_fn(tiny_models.mlp_apply, batch_size=0)
  with pytest.raises(ValueError, match="ridge"):
    operator.kernel_ridge_cg(lambda v: v, 3, np.ones(3), ridge=0.0)
