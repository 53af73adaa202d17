"""The pure train step shared by the nonlinear and the linearized regimes.

``model_fn(mode, apply_fn)`` returns ``outputs(trainable, trainable0, frozen, batch,
rng)``:

  nonlinear:   f(θ; x)                                    (dropout on, if any)
  linearized:  f̄(θ; x) = f(θ0; x) + J(θ0; x)(θ − θ0)     (one jax.jvp, dropout off)

The step itself does not know which it trains.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from ntkft.linearize import tangent_apply_fn
from ntkft.peft import combine
from ntkft.train import pull as pull_lib
from ntkft.train.state import TrainState

MODES = ("nonlinear", "linearized")


def regime_fn(mode: str, apply_fn: Callable) -> Callable:
  """``outputs(params, params0, *args)`` of a regime, for ``apply_fn(params, *args)``.

  nonlinear: ``apply_fn(params, *args)``; linearized: the tangent model
  ``apply_fn(params0, *args) + J(params0)(params - params0)`` (one jax.jvp).
  """
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
  if mode == "nonlinear":
    return lambda p, p0, *args: apply_fn(p, *args)
  f_lin = tangent_apply_fn(apply_fn)
  return lambda p, p0, *args: f_lin(p0, p, *args)


def model_fn(mode: str, apply_fn: Callable) -> Callable:
  """``outputs(trainable, trainable0, frozen, batch, rng) -> (B, O)`` for a regime.

  ``apply_fn(params, batch, rng)`` on the combined params; the linearized
  regime runs without rng (dropout off).
  """
  if mode == "nonlinear":
    return lambda p, p0, frozen, batch, rng: apply_fn(combine(p, frozen), batch, rng)
  out = regime_fn(mode, lambda p, frozen, batch: apply_fn(combine(p, frozen), batch))  # checks mode
  return lambda p, p0, frozen, batch, rng: out(p, p0, frozen, batch)


def train_step(state: TrainState, batch, *, outputs_fn: Callable, loss_fn: Callable,
               tx: optax.GradientTransformation, pull: pull_lib.Pull = pull_lib.NO_PULL):
  """One optimizer step; no I/O, no globals. Returns (new state, metrics).

  ``pull`` is the run's :class:`ntkft.train.pull.Pull`, the one ``tx`` was built
  with (``optim.optimizer``); the step adds it to the gradient when
  ``pull.in_step`` (loss form).
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def risk(p):
    return loss_fn(outputs_fn(p, state.trainable0, state.frozen, batch, rng), batch)

  loss, grads = jax.value_and_grad(risk)(state.trainable)
  delta = jax.tree.map(jnp.subtract, state.trainable, state.trainable0)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
             "param_distance": optax.tree.norm(delta),
             "objective": loss + 0.5 * pull.lam * jnp.square(optax.tree.norm(delta))}
  # ``pull.lam`` may be traced (one compiled step for every λ, ntkft.train.warm_runs):
  # then the pull term is always in the program (λ = 0 adds exactly 0).
  if pull.in_step:
    grads, metrics["pull_on"] = pull_lib.pull_gradient(
        grads, state.trainable, state.trainable0, pull.lam, pull.selective, pull.block_of)
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
  trainable = optax.apply_updates(state.trainable, updates)
  # Checked by the loop before the new state can be checkpointed.
  metrics["params_finite"] = jnp.all(jnp.array(
      [jnp.isfinite(x).all() for x in jax.tree.leaves(trainable)]))
  return state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics


def eval_outputs(state: TrainState, batch, *, outputs_fn: Callable):
  """Model outputs (B, O) on a batch, deterministic."""
  return outputs_fn(state.trainable, state.trainable0, state.frozen, batch, None)
