"""The precision argument of empirical_ntk_fn reaches every matmul; CPU kernels unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import ntk
from tests.ntk import tiny_models


def _dot_precisions(jaxpr) -> list:
  """precision of every dot_general in a jaxpr and all its sub-jaxprs (pjit, scan, ...)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += _dot_precisions(inner)
  return found


def _inputs():
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tiny_models.init_attention(2))
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                   tiny_models.make_inputs("attention", 5, 2))
  return params, x


@pytest.mark.parametrize("implementation", ["jacobian_contraction", "ntk_vector_products"])
def test_precision_reaches_every_dot_general(implementation):
  params, x = _inputs()
  found = {}
  for precision in ("highest", "default"):
    fn = ntk.empirical_ntk_fn(tiny_models.attention_apply, implementation=implementation,
                              precision=precision)
    found[precision] = _dot_precisions(
        jax.make_jaxpr(lambda p, fn=fn: fn(x, None, p))(params).jaxpr)
  highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
  assert len(found["highest"]) > 10
  assert all(p == highest for p in found["highest"]), set(found["highest"])
  assert not any(p == highest for p in found["default"])


def test_cpu_kernel_unchanged_and_bad_precision_named():
  params, x = _inputs()
  k = {p: np.asarray(ntk.empirical_ntk_fn(tiny_models.attention_apply, batch_size=2,
                                          precision=p)(x, None, params))
       for p in ("highest", "default")}
  np.testing.assert_allclose(k["highest"], k["default"], rtol=1e-6,
                             atol=1e-6 * np.abs(k["default"]).max())
  with pytest.raises(ValueError, match="precision must be one of"):
    ntk.empirical_ntk_fn(tiny_models.attention_apply, precision="tf32")
