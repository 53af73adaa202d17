"""The one target builder (ntkft.targets.targets): numpy in float64, jax inside the loss."""
import jax
import jax.numpy as jnp
import numpy as np

from ntkft import targets as targets_lib


def test_targets_numpy_and_jax_agree_with_one_hot():
  labels = np.array([2, 0, 1, 2])
  host = targets_lib.targets(labels, 3, False, np.float64)
  assert isinstance(host, np.ndarray) and host.dtype == np.float64
  np.testing.assert_array_equal(host, np.eye(3)[labels])
  traced = jax.jit(lambda y: targets_lib.targets(y, 3, False))(jnp.asarray(labels))
  assert traced.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(traced), host)


def test_regression_targets_keep_their_precision():
  scores = np.array([0.1, 3.7])
  out = targets_lib.targets(scores, 1, True, np.float64)
  assert out.shape == (2, 1) and out[0, 0] == 0.1   # exact in float64
  assert targets_lib.targets(scores, 1, True).dtype == np.float32
