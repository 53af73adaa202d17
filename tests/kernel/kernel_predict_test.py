"""Tests for ntkft.kernel: closed forms vs explicit training of tangent models.

All in float64 with rank promotion raising. The kernels are the exact
empirical NTKs of tiny models, computed directly as J J^T from ``jax.jacobian``
of the raveled parameters (independent of ``ntkft.ntk``).
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft.kernel import gradient_descent_mse_ntk, kernel_ridge
from ntkft.linearize import tangent_apply_fn

N_TRAIN, N_TEST, D_IN, WIDTH, N_OUT = 6, 4, 3, 5, 2


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True), jax.numpy_rank_promotion("raise"):
    yield


def _mlp_apply(params, x):
  # Explicit [None]: the tests run with rank promotion raising.
  layer_0, layer_1 = params["layer_0"], params["layer_1"]
  h = jnp.tanh(x @ layer_0["kernel"] + layer_0["bias"][None])
  return h @ layer_1["kernel"] + layer_1["bias"][None]


def _linear_head_apply(params, x):
  """Linear head on fixed features: its NTK is K_feat (x) I_O exactly."""
  return jnp.tanh(x @ jnp.linspace(-1.0, 1.0, D_IN * WIDTH).reshape(
      D_IN, WIDTH)) @ params["head"]["kernel"]


def _problem(model: str, seed: int = 0):
  rng = np.random.RandomState(seed)
  if model == "mlp":
    apply_fn = _mlp_apply
    params0 = {
        "layer_0": {"kernel": rng.normal(size=(D_IN, WIDTH)),
                    "bias": 0.3 * rng.normal(size=(WIDTH,))},
        "layer_1": {"kernel": rng.normal(size=(WIDTH, N_OUT)) / np.sqrt(WIDTH),
                    "bias": 0.3 * rng.normal(size=(N_OUT,))},
    }
  else:
    apply_fn = _linear_head_apply
    params0 = {"head": {"kernel": rng.normal(size=(WIDTH, N_OUT))}}
  params0 = jax.tree.map(jnp.asarray, params0)
  x_train = jnp.asarray(rng.normal(size=(N_TRAIN, D_IN)))
  x_test = jnp.asarray(rng.normal(size=(N_TEST, D_IN)))
  y_train = jnp.asarray(rng.normal(size=(N_TRAIN, N_OUT)))
  return apply_fn, params0, x_train, x_test, y_train


def _jacobian(apply_fn, params0, x):
  """(n O, P) Jacobian, rows ordered (example, output) row-major."""
  flat0, unravel = ravel_pytree(params0)
  jac = jax.jacobian(lambda flat: apply_fn(unravel(flat), x).reshape(-1))(flat0)
  return jac


def _flat_kernels(apply_fn, params0, x_train, x_test):
  jac_train = _jacobian(apply_fn, params0, x_train)
  jac_test = _jacobian(apply_fn, params0, x_test)
  return jac_train @ jac_train.T, jac_test @ jac_train.T, jac_train


def _objective_fn(apply_fn, params0, x_train, y_train, lam):
  f_lin = tangent_apply_fn(apply_fn)
  n = x_train.shape[0]

  def objective(params):
    resid = f_lin(params0, params, x_train) - y_train
    pull = sum(jnp.sum((p - p0)**2) for p, p0 in zip(
        jax.tree.leaves(params), jax.tree.leaves(params0)))
    return jnp.sum(resid**2) / (2 * n) + 0.5 * lam * pull

  return objective


# ------------------------------------------------------- (a) GD vs explicit


@pytest.mark.parametrize("model,layout", [("mlp", "flat"),
                                          ("linear_head", "shared"),
                                          ("linear_head", "flat")])
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_gd_closed_form_matches_explicit_gd_of_tangent_model(model, layout,
                                                             lam):
  apply_fn, params0, x_train, x_test, y_train = _problem(model)
  k_tt, k_st, _ = _flat_kernels(apply_fn, params0, x_train, x_test)
  if layout == "shared":
    # Exact for a linear head: the flat kernel is K_shared (x) I_O.
    k_shared_tt, k_shared_st = k_tt[::N_OUT, ::N_OUT], k_st[::N_OUT, ::N_OUT]
    np.testing.assert_allclose(k_tt, np.kron(k_shared_tt, np.eye(N_OUT)),
                               atol=1e-12)
    k_tt, k_st = k_shared_tt, k_shared_st
  f_lin = tangent_apply_fn(apply_fn)
  fx_train_0 = apply_fn(params0, x_train)
  fx_test_0 = apply_fn(params0, x_test)

  # Step size so that the top modes have eta * a in (1, 2): exercises q < 0.
  a_max = np.linalg.eigvalsh(np.asarray(k_tt) / N_TRAIN).max() + lam
  eta = 1.6 / a_max
  num_steps = 50
  grad_fn = jax.grad(_objective_fn(apply_fn, params0, x_train, y_train, lam))

  def step(params, _):
    outputs = (f_lin(params0, params, x_train), f_lin(params0, params, x_test))
    params = jax.tree.map(lambda p, g: p - eta * g, params, grad_fn(params))
    return params, outputs

  # Plain full-batch GD on the tangent model, one explicit update per step.
  _, (train_path, test_path) = jax.lax.scan(step, params0, None,
                                            length=num_steps + 1)
  # The explicit run actually moved (the comparison is not between constants).
  assert float(jnp.max(jnp.abs(train_path[-1] - train_path[0]))) > 0.1

  predict_fn = gradient_descent_mse_ntk(k_tt, y_train, fx_train_0, k_st,
                                        fx_test_0, lam=lam, learning_rate=eta)
  fx_train, fx_test = predict_fn(jnp.arange(num_steps + 1))
  assert fx_train.shape == (num_steps + 1, N_TRAIN, N_OUT)
  assert fx_test.shape == (num_steps + 1, N_TEST, N_OUT)
  np.testing.assert_allclose(fx_train, train_path, rtol=0, atol=1e-10)
  np.testing.assert_allclose(fx_test, test_path, rtol=0, atol=1e-10)
  # Scalar t gives the same as the corresponding slice.
  fx_train_7, fx_test_7 = predict_fn(7)
  np.testing.assert_allclose(fx_train_7, fx_train[7], atol=1e-12)
  np.testing.assert_allclose(fx_test_7, fx_test[7], atol=1e-12)


def test_shared_and_flat_layouts_agree_on_kron_kernel():
  rng = np.random.RandomState(3)
  feats = rng.normal(size=(N_TRAIN + N_TEST, 4))
  k_all = feats @ feats.T
  k_tt, k_st = k_all[:N_TRAIN, :N_TRAIN], k_all[N_TRAIN:, :N_TRAIN]
  eye = np.eye(N_OUT)
  y = rng.normal(size=(N_TRAIN, N_OUT))
  f0, f0_test = rng.normal(size=y.shape), rng.normal(size=(N_TEST, N_OUT))
  shared = kernel_ridge(k_tt, y, f0, k_st, f0_test, ridge=0.1)
  flat = kernel_ridge(np.kron(k_tt, eye), y, f0, np.kron(k_st, eye), f0_test,
                      ridge=0.1)
  for a, b in zip(shared, flat):
    np.testing.assert_allclose(a, b, atol=1e-12)
  t = jnp.array([0.0, 0.5, 3.0])
  shared = gradient_descent_mse_ntk(k_tt, y, f0, k_st, f0_test, lam=0.1)(t)
  flat = gradient_descent_mse_ntk(np.kron(k_tt, eye), y, f0,
                                  np.kron(k_st, eye), f0_test, lam=0.1)(t)
  for a, b in zip(shared, flat):
    assert a.shape == (3,) + b.shape[1:]
    np.testing.assert_allclose(a, b, atol=1e-12)


# ---------------------------------------------------------------- (b) flow


def _flow_problem(lam):
  apply_fn, params0, x_train, x_test, y_train = _problem("mlp", seed=1)
  k_tt, k_st, _ = _flat_kernels(apply_fn, params0, x_train, x_test)
  fx_train_0 = apply_fn(params0, x_train)
  fx_test_0 = apply_fn(params0, x_test)
  predict_fn = gradient_descent_mse_ntk(k_tt, y_train, fx_train_0, k_st,
                                        fx_test_0, lam=lam)
  return predict_fn, k_tt, k_st, y_train, fx_train_0, fx_test_0


def test_flow_at_zero_returns_f0_and_at_infinity_kernel_ridge():
  lam = 0.1
  predict_fn, k_tt, k_st, y, f0, f0_test = _flow_problem(lam)
  fx_train, fx_test = predict_fn(0.0)
  np.testing.assert_array_equal(fx_train, f0)
  np.testing.assert_array_equal(fx_test, f0_test)
  # exp(-lam t) = exp(-1e3): converged to float64 precision.
  fx_train, fx_test = predict_fn(1e4)
  ridge_train, ridge_test = kernel_ridge(k_tt, y, f0, k_st, f0_test, ridge=lam)
  np.testing.assert_allclose(fx_train, ridge_train, rtol=0, atol=1e-10)
  np.testing.assert_allclose(fx_test, ridge_test, rtol=0, atol=1e-10)
  # And it did move away from f0.
  assert float(jnp.max(jnp.abs(fx_train - f0))) > 0.1


def test_flow_without_pull_interpolates_at_infinity():
  predict_fn, k_tt, k_st, y, f0, f0_test = _flow_problem(0.0)
  assert np.linalg.eigvalsh(np.asarray(k_tt)).min() > 1e-6  # PD here.
  fx_train, fx_test = predict_fn(1e6)
  np.testing.assert_allclose(fx_train, y, atol=1e-8)
  _, ridge_test = kernel_ridge(k_tt, y, f0, k_st, f0_test, ridge=0.0)
  np.testing.assert_allclose(fx_test, ridge_test, atol=1e-8)


@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_flow_satisfies_its_ode(lam):
  """d/dt fbar = -(Kn + lam)(fbar - Y) + lam (f0 - Y); test: -K*/n r - lam u."""
  predict_fn, k_tt, k_st, y, f0, f0_test = _flow_problem(lam)
  n = N_TRAIN
  for t in (0.0, 0.3, 2.0):
    (fx_train, fx_test) = predict_fn(t)
    d_train, d_test = jax.jacfwd(predict_fn)(jnp.asarray(t))
    r = (fx_train - y).reshape(-1)
    r0 = (f0 - y).reshape(-1)
    want_train = -(k_tt / n) @ r - lam * r + lam * r0
    want_test = -(k_st / n) @ r - lam * (fx_test - f0_test).reshape(-1)
    np.testing.assert_allclose(d_train.reshape(-1), want_train, atol=1e-10)
    np.testing.assert_allclose(d_test.reshape(-1), want_test, atol=1e-10)


def test_gd_with_small_steps_approaches_flow():
  lam = 0.1
  predict_flow, k_tt, k_st, y, f0, f0_test = _flow_problem(lam)
  eta, steps = 1e-3, 2000
  gd = gradient_descent_mse_ntk(k_tt, y, f0, k_st, f0_test, lam=lam,
                                learning_rate=eta)(steps)
  flow = predict_flow(eta * steps)
  for a, b in zip(gd, flow):
    # Euler's global error is O(eta); the paths differ by far more than that
    # at other times.
    np.testing.assert_allclose(a, b, atol=5e-3)


def test_zero_eigenvalues_and_zero_lam_do_not_divide_by_zero():
  # Rank-1 kernel with lam = 0: a_i = 0 for all but one mode.
  v = np.array([1.0, 2.0, -1.0])
  k_tt = np.outer(v, v)
  k_st = np.array([[0.5, 1.0, -0.5]])  # in the row space of k_tt.
  y, f0 = np.array([1.0, 0.0, 2.0]), np.zeros(3)
  f0_test = np.zeros(1)
  for learning_rate in (None, 0.1):
    predict_fn = gradient_descent_mse_ntk(k_tt, y, f0, k_st, f0_test,
                                          lam=0.0, learning_rate=learning_rate)
    fx_train, fx_test = predict_fn(jnp.array([0.0, 5.0, 1000.0]))
    assert np.all(np.isfinite(fx_train)) and np.all(np.isfinite(fx_test))
    assert fx_train.shape == (3, 3) and fx_test.shape == (3, 1)
    # Converged: projection of y onto span(v); test = 0.5 * that coefficient.
    coef = v @ y / (v @ v)
    np.testing.assert_allclose(fx_train[-1], coef * v, atol=1e-9)
    np.testing.assert_allclose(fx_test[-1], [0.5 * coef], atol=1e-9)


# ---------------------------------------------------------------- (c, d) ridge


@pytest.mark.parametrize("lam", [0.03, 1.0])
def test_kernel_ridge_is_stationary_point_of_regularized_objective(lam):
  apply_fn, params0, x_train, x_test, y_train = _problem("mlp", seed=2)
  k_tt, k_st, jac = _flat_kernels(apply_fn, params0, x_train, x_test)
  fx_train_0 = apply_fn(params0, x_train)
  fx_test_0 = apply_fn(params0, x_test)
  n = N_TRAIN
  # theta* = theta0 + J^T (K + n lam I)^{-1} (Y - f0)  (flattened outputs).
  alpha = np.linalg.solve(k_tt + n * lam * np.eye(k_tt.shape[0]),
                          (y_train - fx_train_0).reshape(-1))
  flat0, unravel = ravel_pytree(params0)
  params_star = unravel(flat0 + jac.T @ alpha)
  objective = _objective_fn(apply_fn, params0, x_train, y_train, lam)
  grad = ravel_pytree(jax.grad(objective)(params_star))[0]
  grad_at_0 = ravel_pytree(jax.grad(objective)(params0))[0]
  assert float(jnp.linalg.norm(grad_at_0)) > 1e-2
  assert float(jnp.linalg.norm(grad)) < 1e-11 * float(
      jnp.linalg.norm(grad_at_0)) + 1e-13
  f_lin = tangent_apply_fn(apply_fn)
  fx_train, fx_test = kernel_ridge(k_tt, y_train, fx_train_0, k_st, fx_test_0,
                                   ridge=lam)
  np.testing.assert_allclose(fx_train, f_lin(params0, params_star, x_train),
                             atol=1e-11)
  np.testing.assert_allclose(fx_test, f_lin(params0, params_star, x_test),
                             atol=1e-11)


def test_kernel_ridge_relative_ridge_scales_by_mean_diagonal():
  rng = np.random.RandomState(4)
  a = rng.normal(size=(5, 3))
  k_tt = 7.0 * (a @ a.T) + np.eye(5)
  y, f0 = rng.normal(size=5), rng.normal(size=5)
  rel = kernel_ridge(k_tt, y, f0, ridge=0.1, relative_ridge=True)[0]
  absolute = kernel_ridge(k_tt, y, f0, ridge=0.1 * np.trace(k_tt) / 5)[0]
  np.testing.assert_allclose(rel, absolute, atol=1e-13)
  # Direct formula, 1-D targets.
  want = f0 + k_tt @ np.linalg.solve(k_tt + 5 * 0.1 * np.eye(5), y - f0)
  got, none = kernel_ridge(k_tt, y, f0, ridge=0.1)
  assert none is None and got.shape == (5,)
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_kernel_ridge_without_ridge_interpolates():
  apply_fn, params0, x_train, x_test, y_train = _problem("mlp", seed=5)
  k_tt, k_st, _ = _flat_kernels(apply_fn, params0, x_train, x_test)
  fx_train_0 = apply_fn(params0, x_train)
  fx_train, fx_test = kernel_ridge(k_tt, y_train, fx_train_0, k_st,
                                   apply_fn(params0, x_test), ridge=0.0)
  np.testing.assert_allclose(fx_train, y_train, atol=1e-9)
  assert fx_test.shape == (N_TEST, N_OUT)


def test_kernel_ridge_singular_without_ridge_raises():
  k_tt = np.ones((3, 3))  # rank one
  y, f0 = np.arange(3.0), np.zeros(3)
  with pytest.raises(ValueError, match="not positive definite"):
    kernel_ridge(k_tt, y, f0, ridge=0.0)
  # A ridge fixes it.
  fx, _ = kernel_ridge(k_tt, y, f0, ridge=0.1)
  assert np.all(np.isfinite(fx))


# ---------------------------------------------------------------- input checks


def test_bad_shapes_and_arguments_raise():
  k_tt = np.eye(4)
  y = np.zeros((4, 2))
  with pytest.raises(ValueError, match="k_train_train"):
    kernel_ridge(np.eye(5), y, y, ridge=0.1)
  with pytest.raises(ValueError, match="fx_train_0"):
    kernel_ridge(k_tt, y, np.zeros(4), ridge=0.1)
  with pytest.raises(ValueError, match="k_test_train"):
    kernel_ridge(k_tt, y, y, np.zeros((3, 5)), np.zeros((3, 2)), ridge=0.1)
  with pytest.raises(ValueError, match="both"):
    kernel_ridge(k_tt, y, y, np.zeros((3, 4)), None, ridge=0.1)
  with pytest.raises(ValueError, match="ridge"):
    kernel_ridge(k_tt, y, y, ridge=-1.0)
  with pytest.raises(ValueError, match="learning_rate"):
    gradient_descent_mse_ntk(k_tt, y, y, learning_rate=0.0)
  predict_fn = gradient_descent_mse_ntk(k_tt, y, y, learning_rate=0.1)
  with pytest.raises(ValueError, match="integer"):
    predict_fn(1.5)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    gradient_descent_mse_ntk(k_tt, y, y, learning_rate=20.0)
  assert any("diverges" in str(w.message) for w in caught)
