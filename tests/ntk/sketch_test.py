"""pNTK and count-sketched kernels against the exact kernel; kernel_errors on known cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft.ntk import budgeted, sketch
from tests.ntk import tiny_models


@pytest.fixture(scope="module")
def mlp():
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(4))
    x = jnp.asarray(tiny_models.make_inputs("mlp", 10, 4))
    flat = budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, ())(x, None, params)
  return params, x, flat


def test_pntk_is_the_sum_over_output_pairs(mlp):
  params, x, flat = mlp
  with jax.enable_x64(True):
    k = sketch.pntk_fn(tiny_models.mlp_apply)(x, None, params)
  np.testing.assert_allclose(k, flat.sum((2, 3)) / 3, rtol=1e-10, atol=1e-12 * np.abs(k).max())


def test_count_sketch_is_unbiased_and_tightens_with_dim(mlp):
  """P = 139: at dim 4096 nearly collision-free; the mean of 16 sketches at dim 16 is
  closer to K than a single one (variance ~ 1/dim, unbiased)."""
  params, x, flat = mlp
  exact = np.einsum("abii->ab", flat) / 3
  with jax.enable_x64(True):
    err = lambda k: np.linalg.norm(k - exact) / np.linalg.norm(exact)
    wide = sketch.count_sketch_ntk_fn(tiny_models.mlp_apply, 4096, seed=0)(x, None, params)
    narrow = [sketch.count_sketch_ntk_fn(tiny_models.mlp_apply, 16, seed=s)(x, None, params)
              for s in range(16)]
  assert err(wide) < 0.05
  single = np.mean([err(k) for k in narrow])
  assert single > 0.1
  assert err(np.mean(narrow, axis=0)) < 0.5 * single


def test_kernel_errors_on_known_cases():
  k = np.diag([4.0, 2.0, 1.0])
  same = sketch.kernel_errors(k, k, top=2)
  assert same["rel_error"] == 0 and same["kappa_rel_error"] == 0 and same["top2_alignment"] == 1
  scaled = sketch.kernel_errors(2 * k, k, top=2)
  assert scaled["rel_error"] == pytest.approx(1.0) and scaled["kappa_rel_error"] == 0
  assert scaled["lambda_max_rel_error"] == pytest.approx(1.0)
  low_rank = sketch.kernel_errors(np.diag([4.0, 2.0, 0.0]), k, top=2)
  assert low_rank["kappa_rel_error"] is None and low_rank["top2_alignment"] == 1
  swapped = sketch.kernel_errors(np.diag([1.0, 2.0, 4.0]), k, top=1)
  assert swapped["top1_alignment"] == 0


def test_kernel_errors_analyse_the_symmetric_part():
  """An asymmetric approximation's eigen-errors are those of (A + Aᵀ)/2 (ntkft.spectral's
  one policy); its Frobenius error counts the skew part. Integer entries: exact sums."""
  k = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
  skew = np.array([[0.0, 2.0, -1.0], [-2.0, 0.0, 3.0], [1.0, -3.0, 0.0]])
  errors = sketch.kernel_errors(k + skew, k, top=2)
  assert errors["lambda_max_rel_error"] == 0 and errors["lambda_min_rel_error"] == 0
  assert errors["kappa_rel_error"] == 0 and errors["top2_alignment"] == pytest.approx(1.0)
  assert errors["rel_error"] == pytest.approx(np.linalg.norm(skew) / np.linalg.norm(k))


def test_kernel_errors_reject_non_finite_kernels():
  k = np.diag([4.0, 2.0, 1.0])
  with pytest.raises(ValueError, match="approx has non-finite entries"):
    sketch.kernel_errors(np.diag([np.nan, 2.0, 1.0]), k)
  with pytest.raises(ValueError, match="two square kernels"):
    sketch.kernel_errors(np.ones((3, 2)), np.ones((3, 2)))
