"""Learning-rate schedules, optimizer construction, accumulation and clipping."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkft.train import losses, optim
from ntkft.train import step as step_lib
from ntkft.train.state import TrainState


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


# -- Schedules ------------------------------------------------------------------

def _values(sched, steps):
  return [float(sched(jnp.int32(s))) for s in steps]


def test_linear_schedule_warmup_peak_end():
  sched = optim.schedule(2.0, total_steps=10, warmup_steps=4, decay="linear")
  np.testing.assert_allclose(_values(sched, [0, 1, 2, 4, 7, 10, 12]),
                             [0.0, 0.5, 1.0, 2.0, 1.0, 0.0, 0.0], atol=1e-6)


def test_cosine_schedule_warmup_peak_end():
  sched = optim.schedule(2.0, total_steps=10, warmup_steps=2, decay="cosine")
  want = [0.0, 1.0, 2.0] + [1.0 + math.cos(math.pi * (s - 2) / 8) for s in (4, 6, 8)] + [0.0]
  np.testing.assert_allclose(_values(sched, [0, 1, 2, 4, 6, 8, 10]), want, atol=1e-6)
  assert _values(sched, [6])[0] == pytest.approx(1.0, abs=1e-6)  # halfway: lr / 2


def test_constant_schedule():
  sched = optim.schedule(0.3, total_steps=10, warmup_steps=3, decay="constant")
  np.testing.assert_allclose(_values(sched, [0, 3, 5, 10, 50]), [0.0, 0.3, 0.3, 0.3, 0.3],
                             atol=1e-7)


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_no_warmup_starts_at_the_peak(decay):
  sched = optim.schedule(0.5, total_steps=8, warmup_steps=0, decay=decay)
  assert _values(sched, [0])[0] == pytest.approx(0.5)
  assert _values(sched, [8])[0] == pytest.approx(0.5 if decay == "constant" else 0.0, abs=1e-7)


def test_schedule_errors():
  with pytest.raises(ValueError, match=r"unknown lr decay 'step'; choose from"):
    optim.schedule(1.0, 10, 0, "step")
  with pytest.raises(ValueError, match=r"warmup_steps=11 must be in \[0, total_steps=10\]"):
    optim.schedule(1.0, 10, 11)
  with pytest.raises(ValueError, match=r"warmup_steps=-1"):
    optim.schedule(1.0, 10, -1)


def test_optimizer_errors():
  with pytest.raises(ValueError, match=r"unknown optimizer 'lion'; choose from \('sgd', "):
    optim.optimizer("lion", 1e-3)
  with pytest.raises(ValueError, match=r"grad_accum_steps must be >= 1, got 0"):
    optim.optimizer("sgd", 1e-3, grad_accum_steps=0)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_first_step_matches_optax(name):
  params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
  grads = {"w": jnp.asarray([0.5, 0.25, -1.0])}
  ours = optim.optimizer(name, 0.1, weight_decay=0.01)
  ref = {"sgd": optax.sgd(0.1), "adam": optax.adam(0.1),
         "adamw": optax.adamw(0.1, weight_decay=0.01)}[name]
  got, _ = ours.update(grads, ours.init(params), params)
  want, _ = ref.update(grads, ref.init(params), params)
  np.testing.assert_array_equal(got["w"], want["w"])


# -- Gradient accumulation through the real train step ------------------------------

def _outputs(p, p0, frozen, batch, rng):
  return batch["x"] @ p["w"]


def _batch(weights, seed=0):
  rng = np.random.default_rng(seed)
  n = len(weights)
  return {"x": jnp.asarray(rng.normal(size=(n, 3))), "labels": jnp.asarray(rng.integers(0, 2, n)),
          "weights": jnp.asarray(weights, jnp.float64)}


def _half(batch, i):
  return {k: v[4 * i: 4 * (i + 1)] for k, v in batch.items()}


def _run(tx, batches, params):
  loss_fn = losses.loss_fn("squared", 2, is_regression=False)  # weighted mean over rows
  state = TrainState(step=jnp.zeros([], jnp.int32), trainable=params, trainable0=params,
                     frozen={}, opt_state=tx.init(params), rng=jax.random.PRNGKey(0))
  train_step = jax.jit(functools.partial(step_lib.train_step, outputs_fn=_outputs,
                                         loss_fn=loss_fn, tx=tx))
  for batch in batches:
    state, _ = train_step(state, batch)
  return state.trainable["w"]


def _grad(batch, params):
  loss_fn = losses.loss_fn("squared", 2, is_regression=False)
  return jax.grad(lambda p: loss_fn(_outputs(p, None, None, batch, None), batch))(params)["w"]


PARAMS = {"w": jnp.asarray(np.random.default_rng(9).normal(size=(3, 2)))}


def test_accumulating_two_half_batches_equals_one_full_batch_step():
  # Padding rows (weight 0) in both halves, with equal weight sums (3 and 3).
  full = _batch([1, 1, 0, 1, 1, 0, 1, 1])
  lr = 0.5
  accumulated = _run(optim.optimizer("sgd", lr, grad_accum_steps=2),
                     [_half(full, 0), _half(full, 1)], PARAMS)
  one_step = _run(optim.optimizer("sgd", lr), [full], PARAMS)
  np.testing.assert_allclose(accumulated, one_step, rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(one_step, PARAMS["w"] - lr * _grad(full, PARAMS), rtol=1e-13)
  # Padding rows do not contribute: changing their inputs changes nothing.
  moved = dict(full, x=full["x"].at[2].set(100.0))
  np.testing.assert_allclose(_run(optim.optimizer("sgd", lr), [moved], PARAMS), one_step,
                             rtol=1e-13)
  # After the first micro-step nothing has moved yet.
  first = _run(optim.optimizer("sgd", lr, grad_accum_steps=2), [_half(full, 0)], PARAMS)
  np.testing.assert_array_equal(first, PARAMS["w"])


def test_accumulation_averages_half_batch_means_when_weights_differ():
  """Unequal weight sums (4 vs 1): the accumulated step is the mean of the two
  half-batch weighted means, not the full-batch weighted mean."""
  full = _batch([1, 1, 1, 1, 1, 0, 0, 0], seed=1)
  lr = 0.5
  accumulated = _run(optim.optimizer("sgd", lr, grad_accum_steps=2),
                     [_half(full, 0), _half(full, 1)], PARAMS)
  mean_of_means = 0.5 * (_grad(_half(full, 0), PARAMS) + _grad(_half(full, 1), PARAMS))
  np.testing.assert_allclose(accumulated, PARAMS["w"] - lr * mean_of_means, rtol=1e-13)
  one_step = _run(optim.optimizer("sgd", lr), [full], PARAMS)
  assert np.abs(np.asarray(accumulated - one_step)).max() > 1e-3


# -- Clipping ------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_clipping_bounds_the_update_norm(scale):
  lr, clip = 0.5, 0.1
  params = {"a": jnp.ones((3, 2)), "b": jnp.zeros(4)}
  grads = {"a": scale * jnp.arange(6.0).reshape(3, 2), "b": scale * jnp.ones(4)}
  tx = optim.optimizer("sgd", lr, clip_norm=clip)
  updates, _ = tx.update(grads, tx.init(params), params)
  norm = float(optax.tree.norm(updates))
  grad_norm = float(optax.tree.norm(grads))
  assert norm <= lr * clip * (1 + 1e-12)
  if grad_norm <= clip:  # small gradients pass unchanged
    np.testing.assert_allclose(norm, lr * grad_norm, rtol=1e-12)
  else:  # large ones are rescaled to norm `clip`, keeping their direction
    np.testing.assert_allclose(norm, lr * clip, rtol=1e-12)
    np.testing.assert_allclose(updates["a"], -lr * clip * grads["a"] / grad_norm, rtol=1e-12)


def test_no_clipping_when_clip_norm_is_zero_or_none():
  params = {"a": jnp.zeros(2)}
  grads = {"a": jnp.asarray([300.0, 400.0])}
  for clip in (0.0, None):
    tx = optim.optimizer("sgd", 0.1, clip_norm=clip)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], [-30.0, -40.0], rtol=1e-14)
