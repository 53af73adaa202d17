"""Linearization gap: closed forms on models with known Taylor remainders."""
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft.linearize.gap import gap_sums_fn, gap_sums_given_outputs_fn, linearization_gap


def _batch(x, weights):
  return {"x": jnp.asarray(x, jnp.float32), "weights": jnp.asarray(weights, jnp.float32)}


def test_quadratic_model_gap_is_the_taylor_remainder():
  # f(w; x) = w² x (one logit): f̄(w) = w0² x + 2 w0 x (w − w0); at w0 = 1, w = 2:
  # f − f̄ = x (4 − 1 − 2) = x, f − f0 = 3x, so lin_gap = 1/3 whatever x is.
  apply = lambda p, fr, b: (p["w"] ** 2 * b["x"] + fr["c"])[:, None]
  batches = [_batch([1.0, -2.0], [1, 1]), _batch([3.0, 100.0], [1, 0])]  # padding row ignored
  out = linearization_gap(apply, {"w": 1.0}, {"w": 2.0}, {"c": 5.0}, batches)
  assert out["lin_gap"] == pytest.approx(1 / 3, rel=1e-6)
  assert out["move_norm"] == pytest.approx(3 * np.sqrt(1 + 4 + 9), rel=1e-6)


def test_affine_model_has_zero_gap_and_no_move_is_nan():
  apply = lambda p, fr, b: jnp.stack([p["a"] * b["x"], p["b"] - b["x"]], -1)
  batches = [_batch([1.0, 2.0, 3.0], [1, 1, 1])]
  p0, p = {"a": 0.5, "b": -1.0}, {"a": 2.0, "b": 3.0}
  assert linearization_gap(apply, p0, p, {}, batches)["lin_gap"] == pytest.approx(0, abs=1e-7)
  assert np.isnan(linearization_gap(apply, p0, p0, {}, batches)["lin_gap"])


def test_both_jitted_forms_are_the_closed_form_sums():
  """f(w; x) = w² x + c at w0 = 1, w = 2: f0 = x + c, J d = 2x, f = 4x + c, so over the
  real rows ‖f − f0 − J d‖² = Σ x² and ‖f − f0‖² = 9 Σ x²; given the caller's f, the
  sums use that f (the tangent prediction f0 + J d gives 0 and Σ (2x)²)."""
  apply = lambda p, fr, b: (p["w"] ** 2 * b["x"] + fr["c"])[:, None]
  x = np.array([1.0, -2.0, 0.5, 7.0])
  batch = _batch(x, [1, 1, 1, 0])                 # the last row is padding
  real = x[:3]
  p0, p, fr = {"w": 1.0}, {"w": 2.0}, {"c": 5.0}
  gap2, move2 = gap_sums_fn(apply)(p0, p, fr, batch)
  np.testing.assert_allclose([gap2, move2], [np.sum(real**2), 9 * np.sum(real**2)], rtol=1e-6)
  given = gap_sums_given_outputs_fn(apply)
  f = jnp.asarray(4 * x + 5.0, jnp.float32)[:, None]
  np.testing.assert_allclose(given(p0, p, fr, batch, f), [gap2, move2], rtol=1e-6)
  tangent = jnp.asarray(3 * x + 5.0, jnp.float32)[:, None]
  np.testing.assert_allclose(given(p0, p, fr, batch, tangent),
                             [0.0, 4 * np.sum(real**2)], rtol=1e-6, atol=1e-6)
