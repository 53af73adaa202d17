"""Losses on model outputs, weighted by ``batch['weights']`` (0 for padding rows).

The theory's setting is the squared loss on one-hot (or regression) targets,

    R(θ) = 1/(2n) Σ_i ‖f(x_i; θ) − y_i‖²,

which is also the convention of ``ntkft.kernel`` (so closed-form kernel solutions
and training runs are on the same scale). Cross-entropy is the practical choice.
"""
import jax
import jax.numpy as jnp

from ntkft import targets as targets_lib

LOSSES = ("cross_entropy", "squared")
AUTO = "auto"  # the task's default: squared for regression, cross-entropy for classes


def _weighted_mean(per_example: jax.Array, weights: jax.Array) -> jax.Array:
  return (per_example * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def cross_entropy(outputs: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; outputs (B, C) logits, labels (B,) int."""
  logp = jax.nn.log_softmax(outputs, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return _weighted_mean(nll, weights)


def squared(outputs: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of ½‖f − y‖² over examples; outputs and y (B, O)."""
  return _weighted_mean(0.5 * jnp.square(outputs - y).sum(-1), weights)


def resolve(kind: str, is_regression: bool) -> str:
  """The loss ``kind`` names: ``'auto'`` is 'squared' for regression, else 'cross_entropy'.

  Raises:
    ValueError: an unknown kind, or cross-entropy asked for a regression task.
  """
  if kind == AUTO:
    return "squared" if is_regression else "cross_entropy"
  if kind not in LOSSES:
    raise ValueError(f"unknown loss {kind!r}; choose from {(AUTO,) + LOSSES}")
  if is_regression and kind == "cross_entropy":
    raise ValueError("regression tasks (e.g. STS-B) need loss='squared' (or 'auto')")
  return kind


def loss_fn(kind: str, num_outputs: int, is_regression: bool):
  """Returns ``loss(outputs, batch) -> scalar`` for 'cross_entropy', 'squared' or 'auto'."""
  kind = resolve(kind, is_regression)

  def loss(outputs, batch):
    if kind == "cross_entropy":
      return cross_entropy(outputs, batch["labels"], batch["weights"])
    y = targets_lib.targets(batch["labels"], num_outputs, is_regression)
    return squared(outputs, y, batch["weights"])

  return loss


def predictions(outputs: jax.Array, is_regression: bool) -> jax.Array:
  """Class ids (argmax) or the regression value."""
  return outputs[:, 0] if is_regression else jnp.argmax(outputs, axis=-1)
