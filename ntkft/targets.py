"""Labels -> targets: the one target builder of ntkft.

Below every user (``ntkft.train.losses``, ``ntkft.kernel``, ``ntkft.spectral``,
``ntkft.select``, the experiments), so none of them imports ``ntkft.train`` for it.
"""
import jax.numpy as jnp
import numpy as np


def targets(labels, num_outputs: int, is_regression: bool, dtype=jnp.float32):
  """(B,) labels -> (B, O) targets: one-hot for classes, the value for regression.

  The one target builder of ntkft: numpy labels give a numpy array (e.g.
  ``dtype=np.float64`` for the float64 selection criteria), jax labels a jax
  array (inside the jitted loss). A class id outside [0, O) gives a zero row.
  """
  xp = np if isinstance(labels, np.ndarray) else jnp
  labels = xp.asarray(labels)
  if is_regression:
    return labels.astype(dtype)[:, None]
  return (labels[:, None] == xp.arange(num_outputs)).astype(dtype)
