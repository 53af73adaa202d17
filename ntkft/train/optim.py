"""Optimizers and learning-rate schedules built from explicit arguments.

SGD is the theory's setting (its trajectory is the one the closed-form kernel
predictions describe); Adam/AdamW are what practice uses. Schedules: linear
warmup followed by linear or cosine decay (or constant).
"""
import optax

from ntkft.train import pull as pull_lib

OPTIMIZERS = ("sgd", "adam", "adamw")
DECAYS = ("linear", "cosine", "constant")


def schedule(lr: float, total_steps: int, warmup_steps: int = 0,
             decay: str = "linear") -> optax.Schedule:
  """Linear warmup 0 -> lr over warmup_steps, then decay to 0 at total_steps."""
  if decay not in DECAYS:
    raise ValueError(f"unknown lr decay {decay!r}; choose from {DECAYS}")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps}]")
  rest = max(total_steps - warmup_steps, 1)
  if decay == "constant":
    after = optax.constant_schedule(lr)
  elif decay == "linear":
    after = optax.linear_schedule(lr, 0.0, rest)
  else:
    after = optax.cosine_decay_schedule(lr, rest)
  if warmup_steps == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after],
                              [warmup_steps])


def optimizer(name: str, learning_rate: optax.ScalarOrSchedule, *, momentum: float = 0.0,
              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, clip_norm: float | None = None,
              grad_accum_steps: int = 1, pull: pull_lib.Pull = pull_lib.NO_PULL
              ) -> optax.GradientTransformation:
  """The full update rule: clip -> optimizer (-> decoupled pull) -> accumulation.

  ``pull`` is the run's :class:`ntkft.train.pull.Pull`, the one the train step
  gets too. In the loss form the pull is added to the gradient by the train step
  (see ``ntkft.train.pull.pull_gradient``) and is not part of this transform;
  ``clip_norm`` then clips ∇R + λ(θ − θ0). In the decoupled form the pull
  transform clips that same sum itself (``pull.decoupled_pull_to_init``).
  ``weight_decay`` is AdamW's decay toward 0, kept for comparison only.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
  if name == "sgd":
    base = optax.sgd(learning_rate, momentum=momentum or None)
  elif name == "adam":
    base = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  else:
    base = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  if pull.in_optimizer:
    # Clips ∇R + pull together (clipping ∇R alone would change the rest point).
    base = pull_lib.decoupled_pull_to_init(base, pull.lam, learning_rate, pull.selective,
                                           pull.block_of, clip_norm=clip_norm)
  elif clip_norm:
    base = optax.chain(optax.clip_by_global_norm(clip_norm), base)
  if grad_accum_steps > 1:
    base = optax.MultiSteps(base, every_k_schedule=grad_accum_steps)
  return base
