"""The L2 pull toward the pretrained weights, plain and selective.

Fine-tuning objective (paper eq. 3): R(θ) + λ/2 ‖θ − θ0‖², whose gradient adds
λ(θ − θ0) to ∇R. Note that AdamW's weight decay pulls toward 0, not θ0.

Selective regularization (paper eq. 8) applies the pull at step t only when

    ⟨∇R(θ_t), θ_t − θ0⟩ ≥ 0,

i.e. when the loss gradient points away from θ0 (a descent step would increase
the distance to θ0). The gate is evaluated globally (one inner product over all
trainable parameters) or per block (one per block of parameters), branch-free
with ``jnp.where``.

Two forms, identical under plain SGD with a constant step:
  * ``pull_gradient``: λ·gate·(θ − θ0) added to the gradient (the penalty "added
    to the loss"), so adaptive optimizers rescale it;
  * ``decoupled_pull_to_init``: an optax transform that lets the inner optimizer
    see ∇R only and then subtracts η_t·λ·gate·(θ − θ0) from its update
    (AdamW-style decoupling, but toward θ0).
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ntkft.models.functional import flatten, unflatten

SELECTIVE = ("none", "global", "per_block")


def _check(selective):
  if selective not in SELECTIVE:
    raise ValueError(f"unknown selective mode {selective!r}; choose from {SELECTIVE}")


def pull_gate(grads, delta, selective: str, block_of: Callable[[str], str]):
  """Gate per leaf (same structure as ``grads``): 1.0 where the pull applies.

  Args:
    grads: ∇R(θ_t) (nested dict).
    delta: θ_t − θ0 (same structure).
    selective: "none" (always 1), "global" or "per_block".
    block_of: leaf name -> block name, for "per_block".
  """
  _check(selective)
  flat_g, flat_d = flatten(grads), flatten(delta)
  if selective == "none":
    return unflatten({k: jnp.ones((), g.dtype) for k, g in flat_g.items()})
  inner = {k: jnp.vdot(flat_g[k], flat_d[k]) for k in flat_g}
  if selective == "global":
    on = sum(inner.values()) >= 0
    return unflatten({k: jnp.where(on, 1.0, 0.0).astype(flat_g[k].dtype) for k in flat_g})
  blocks: dict[str, jax.Array] = {}
  for k, v in inner.items():
    blocks[block_of(k)] = blocks.get(block_of(k), 0.0) + v
  return unflatten({k: jnp.where(blocks[block_of(k)] >= 0, 1.0, 0.0).astype(flat_g[k].dtype)
                    for k in flat_g})


def pull_gradient(grads, params, params0, lam, selective: str = "none",
                  block_of: Callable[[str], str] = lambda name: "all"):
  """Returns (∇R + λ·gate·(θ − θ0), gate fraction on): the loss form of the pull."""
  delta = jax.tree.map(jnp.subtract, params, params0)
  gate = pull_gate(grads, delta, selective, block_of)
  new = jax.tree.map(lambda g, d, on: g + lam * on * d, grads, delta, gate)
  return new, _fraction_on(gate)


def _fraction_on(gate) -> jax.Array:
  leaves = jax.tree.leaves(gate)
  return sum(leaves) / len(leaves)


class PullState(NamedTuple):
  params0: optax.Params
  inner: optax.OptState
  count: jax.Array


def decoupled_pull_to_init(inner: optax.GradientTransformation, lam: float,
                           learning_rate: float | optax.Schedule,
                           selective: str = "none",
                           block_of: Callable[[str], str] = lambda name: "all"
                           ) -> optax.GradientTransformation:
  """Wraps ``inner`` so each update also moves θ toward θ0 by η_t·λ·gate·(θ − θ0).

  θ0 is the params passed to ``init``. ``updates`` given to ``update`` must be the
  raw loss gradient ∇R (the gate uses it).
  """
  _check(selective)
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init_fn(params):
    return PullState(params0=jax.tree.map(jnp.asarray, params), inner=inner.init(params),
                     count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decoupled_pull_to_init needs params in update()")
    delta = jax.tree.map(jnp.subtract, params, state.params0)
    gate = pull_gate(updates, delta, selective, block_of)
    inner_updates, inner_state = inner.update(updates, state.inner, params)
    eta = schedule(state.count)
    # eta * (...) rather than eta * lam * ...: a schedule returns float32 even
    # under x64, and float32 * python float would round λη to float32.
    new = jax.tree.map(lambda u, d, on: u - eta * (lam * on * d), inner_updates, delta, gate)
    return new, PullState(state.params0, inner_state, state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)
