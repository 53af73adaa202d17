"""The L2 pull toward the pretrained weights, plain and selective.

Fine-tuning objective (paper eq. 3): R(θ) + λ/2 ‖θ − θ0‖², whose gradient adds
λ(θ − θ0) to ∇R. Note that AdamW's weight decay pulls toward 0, not θ0.

Selective regularization (paper eq. 8) applies the pull at step t only when

    ⟨∇R(θ_t), θ_t − θ0⟩ ≥ 0,

i.e. when the descent direction −∇R disagrees with the displacement θ_t − θ0
accumulated so far (has no positive component along it): a small descent step
on R alone would then bring θ back toward θ0, since

    ‖θ_t − η∇R − θ0‖² = ‖θ_t − θ0‖² − 2η⟨∇R, θ_t − θ0⟩ + η²‖∇R‖²

decreases for small η > 0 when the inner product is > 0. While the descent
direction agrees with the displacement (inner product < 0, a descent step moves
θ further from θ0) the pull stays off. This is the condition of Selective
Projection Decay (Tian et al. 2024): decay the parameters whose current update
is inconsistent with their progress so far, leave the rest free. The gate is
evaluated globally (one inner product over all trainable parameters) or per
block (one per block of parameters, distances per block), branch-free with
``jnp.where``.

What is minimized:
  * ``selective="none"``: R + λ/2 ‖θ − θ0‖², in both forms below, with or
    without gradient clipping (the clip applies to the whole gradient
    ∇R + λ(θ − θ0), so clipping changes the step, not the rest point).
  * ``"global"`` / ``"per_block"``: no fixed objective. A rest point with the
    gate off has ∇R = 0; one with the gate on would need ∇R = −λ(θ − θ0),
    whose inner product with θ − θ0 is −λ‖θ − θ0‖² < 0, which switches the
    gate off, unless θ = θ0. So small steps end at a stationary point of R
    (e.g. the minimizer a of R = ½‖θ − a‖², up to a step-size-sized chatter
    on the gate's boundary); the pull shapes the path, not the end point.

Two forms, identical under plain SGD with a constant step (clipped or not):
  * ``pull_gradient``: λ·gate·(θ − θ0) added to the gradient (the penalty "added
    to the loss"), so adaptive optimizers rescale it;
  * ``decoupled_pull_to_init``: an optax transform that lets the inner optimizer
    see ∇R only and then subtracts η_t·λ·gate·(θ − θ0) from its update
    (AdamW-style decoupling, but toward θ0). With ``clip_norm`` both parts are
    scaled by the one factor that clips ∇R + λ·gate·(θ − θ0). Under Adam the
    rest point is where Adam's normalized step on ∇R balances λ(θ − θ0), not
    the minimizer of the objective (as for AdamW's decay toward 0).

A run's pull is decided once, as a :class:`Pull` (λ, form, gate, blocks) built
from the config by the loop; the optimizer (``optim.optimizer``) and the train
step (``step.train_step``) both take that one object, and its
``in_optimizer`` / ``in_step`` say which of them applies it.
"""
import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ntkft.models.functional import flatten, unflatten

SELECTIVE = ("none", "global", "per_block")
FORMS = ("loss", "decoupled")


def _check(selective):
  if selective not in SELECTIVE:
    raise ValueError(f"unknown selective mode {selective!r}; choose from {SELECTIVE}")


def _one_block(name: str) -> str:
  return "all"


@dataclasses.dataclass(frozen=True)
class Pull:
  """The pull toward θ0 of a run: λ/2 ‖θ − θ0‖², its form, its gate and blocks.

  Attributes:
    lam: λ >= 0: a python number, or a traced jax scalar (one compiled step for
      every λ, ``ntkft.train.warm_runs``; loss form only).
    form: "loss" (``pull_gradient``, added by the train step) or "decoupled"
      (``decoupled_pull_to_init``, a transform of the optimizer).
    selective: "none", "global" or "per_block" (the gate, module docstring).
    block_of: leaf name -> block name, for "per_block".

  Raises:
    ValueError: an unknown form or selective mode.
  """
  lam: float | jax.Array = 0.0
  form: str = "loss"
  selective: str = "none"
  block_of: Callable[[str], str] = _one_block

  def __post_init__(self):
    if self.form not in FORMS:
      raise ValueError(f"unknown pull form {self.form!r}; choose from {FORMS}")
    _check(self.selective)

  @property
  def in_step(self) -> bool:
    """The train step adds λ·gate·(θ − θ0) to the gradient (loss form, λ > 0).

    A traced λ is always in the program (λ = 0 then adds exactly 0).
    """
    return self.form == "loss" and (not isinstance(self.lam, (int, float)) or self.lam > 0)

  @property
  def in_optimizer(self) -> bool:
    """The optimizer wraps its update in ``decoupled_pull_to_init`` (decoupled form, λ > 0)."""
    return self.form == "decoupled" and self.lam > 0


NO_PULL = Pull()


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
                           block_of: Callable[[str], str] = lambda name: "all",
                           clip_norm: float | None = None
                           ) -> optax.GradientTransformation:
  """Wraps ``inner`` so each update also moves θ toward θ0 by η_t·λ·gate·(θ − θ0).

  θ0 is the params passed to ``init``. ``updates`` given to ``update`` must be the
  raw loss gradient ∇R (the gate uses it), not clipped: with ``clip_norm`` this
  transform clips, by scaling ∇R and the pull with the one factor
  s = min(1, clip_norm / ‖∇R + λ·gate·(θ − θ0)‖); the inner optimizer sees s·∇R
  and the pull is s·η_t·λ·gate·(θ − θ0). Under SGD the update is then
  −η_t·clip(∇R + λ·gate·(θ − θ0)), the same as the loss form's, so both rest at
  the minimizer of R + λ/2‖θ − θ0‖² (clipping ∇R alone would rest where
  clip(∇R) = −λ(θ − θ0) instead).
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
    pull_grad = jax.tree.map(lambda d, on: lam * on * d, delta, gate)
    scale = 1.0
    if clip_norm:
      total = optax.tree.norm(jax.tree.map(jnp.add, updates, pull_grad))
      scale = jnp.where(total < clip_norm, 1.0, clip_norm / total)
      updates = jax.tree.map(lambda g: scale * g, updates)
    inner_updates, inner_state = inner.update(updates, state.inner, params)
    eta = schedule(state.count)
    # eta * (...) rather than eta * lam * ...: a schedule returns float32 even
    # under x64, and float32 * python float would round λη to float32.
    new = jax.tree.map(lambda u, p: u - eta * (scale * p), inner_updates, pull_grad)
    return new, PullState(state.params0, inner_state, state.count + 1)

  return optax.GradientTransformation(init_fn, update_fn)
