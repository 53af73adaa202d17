"""ntkft.diagnostics on a tiny two-output MLP in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft import diagnostics


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def mlp(params, x, scale):
  """(N, D) -> (N, 2); ``scale`` is a pass-through (frozen) argument."""
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return scale * (h @ params["w2"])


def _problem(n=6, n_eval=4, d=3, h=5, seed=0):
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(size=(d, h)) / np.sqrt(d), "b1": 0.1 * rng.normal(size=(h,)),
            "w2": rng.normal(size=(h, 2)) / np.sqrt(h)}
  params = jax.tree.map(jnp.asarray, params)
  x = jnp.asarray(rng.normal(size=(n, d)))
  x_eval = jnp.asarray(rng.normal(size=(n_eval, d)))
  y = jax.nn.one_hot(rng.integers(0, 2, n), 2, dtype=jnp.float64)
  return params, x, x_eval, y, (jnp.asarray(1.0),)


def test_flat_ntk_matches_explicit_jacobian(x64):
  params, x, x_eval, _, extra = _problem()
  flat, unravel = ravel_pytree(params)
  jac = lambda xs: jax.jacrev(lambda p: mlp(unravel(p), xs, *extra))(flat).reshape(-1, flat.size)
  k = diagnostics.flat_ntk(mlp, x_eval, x, params, *extra)
  np.testing.assert_allclose(k, jac(x_eval) @ jac(x).T, rtol=1e-12, atol=1e-12)


def test_linearized_gd_equals_closed_form(x64):
  params, x, x_eval, y, extra = _problem()
  out = diagnostics.run_regimes(mlp, params, x, y, x_eval, extra=extra, lam=0.3, lr=0.5,
                                steps=40, record_every=10)
  assert out["closed_form_exact"] and out["gd_stable"] and out["dtype"] == "float64"
  for row in out["records"]:
    assert row["closed_form_gap_train"] < 1e-10, row
    assert row["closed_form_gap_eval"] < 1e-10, row
    assert row["agree_linearized_closed_form_train"] == 1.0
  assert [r["step"] for r in out["records"]] == [0, 10, 20, 30, 40]
  # It moved (the check is not vacuous) and the nonlinear run differs from the linear one.
  assert out["final"]["dist_linearized"] > 1e-2
  assert out["final"]["f_gap_train"] > 1e-8
  # Linearized full-batch GD with eta < 2/L is a descent method on the quadratic J̄.
  assert out["checks"]["linearized"]["num_objective_increases"] == 0
  assert out["checks"]["linearized"]["num_bound_violations"] == 0


def test_linearized_gd_reaches_kernel_ridge(x64):
  params, x, x_eval, y, extra = _problem()
  out = diagnostics.run_regimes(mlp, params, x, y, x_eval, extra=extra, lam=1.0, lr=0.5,
                                steps=400, record_every=400)
  assert out["ridge"]["gap_linearized_train"] < 1e-8
  assert out["ridge"]["gap_linearized_eval"] < 1e-8


def test_large_lambda_stays_linear_and_bound_holds(x64):
  params, x, x_eval, y, extra = _problem()
  gaps = {}
  for lam in (0.01, 10.0):
    out = diagnostics.run_regimes(mlp, params, x, y, x_eval, extra=extra, lam=lam,
                                  lr=0.9 / (lam + 1.0), steps=60, record_every=60)
    gaps[lam] = out["final"]["f_gap_eval"]
    if lam == 10.0:
      bound = out["bounds"]["distance"]
      assert np.isclose(bound, np.sqrt(2 * out["risk0"] / lam))
      for m in diagnostics.REGIMES:
        assert out["checks"][m]["num_objective_increases"] == 0
        assert out["checks"][m]["num_bound_violations"] == 0
        assert max(out["per_step"][m]["distance"]) <= bound
      assert out["final"]["agree_nonlinear_linearized_eval"] == 1.0
  assert gaps[10.0] < 0.1 * gaps[0.01], gaps


def test_remainder_estimate_is_leading_order(x64):
  params, x, _, _, extra = _problem()
  rng = np.random.default_rng(1)
  direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
  errors = []
  for eps in (1e-1, 1e-2, 1e-3):
    theta = jax.tree.map(lambda p, v, eps=eps: p + eps * v, params, direction)
    rem = diagnostics.remainder(mlp, params, theta, x, *extra)
    assert rem["measured"] > 0
    errors.append(abs(rem["ratio"] - 1.0))
  # The relative error of the quadratic estimate is O(eps): it shrinks ~10x per step.
  assert errors[2] < 2e-3 and errors[2] < 0.2 * errors[1] < 0.04 * errors[0], errors


def test_flags_fire_when_objective_increases(x64):
  params, x, x_eval, y, extra = _problem()
  probe = diagnostics.run_regimes(mlp, params, x, y, None, extra=extra, lam=0.1, lr=0.1,
                                  steps=1)
  lr = 2.5 / probe["lipschitz"]  # η > 2/L: the linearized GD oscillates and grows
  with pytest.warns(UserWarning, match="diverges"):
    out = diagnostics.run_regimes(mlp, params, x, y, x_eval, extra=extra, lam=0.1, lr=lr,
                                  steps=30, record_every=10)
  assert not out["gd_stable"]
  check = out["checks"]["linearized"]
  assert check["num_objective_increases"] > 10
  assert check["num_bound_violations"] > 0 and check["max_distance_over_bound"] > 1
  assert out["num_violations"] >= check["num_objective_increases"]


def test_check_objective_reference():
  out = diagnostics.check_objective([3.0, 2.0, 2.5, 1.0], [0.0, 1.0, 2.5, 1.5], bound=2.0)
  assert out["objective_increase_steps"] == [2]
  assert out["bound_violation_steps"] == [2]
  assert out["max_distance_over_bound"] == 1.25
  assert diagnostics.objective_bound(2.0, 0.0) == float("inf")
  assert diagnostics.objective_bound(2.0, 4.0) == 1.0
  with pytest.raises(ValueError, match="must be equal"):
    diagnostics.check_objective([1.0, 2.0], [1.0], bound=1.0)


def test_minibatch_and_selective_run(x64):
  params, x, x_eval, y, extra = _problem()
  order = diagnostics.batch_order(6, 2, 7, seed=0)
  assert order.shape == (7, 2) and sorted(order[:3].ravel().tolist()) == list(range(6))
  out = diagnostics.run_regimes(mlp, params, x, y, x_eval, extra=extra, lam=0.5, lr=0.3,
                                steps=7, record_every=3, batch_size=2, selective="global")
  assert not out["closed_form_exact"]
  assert len(out["per_step"]["nonlinear"]["objective"]) == 8
  assert all(g in (0.0, 1.0) for g in out["per_step"]["linearized"]["gate"])
  with pytest.raises(ValueError, match="lam"):
    diagnostics.run_regimes(mlp, params, x, y, extra=extra, lam=-1.0, lr=0.1, steps=1)
