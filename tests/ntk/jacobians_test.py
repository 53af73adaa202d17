"""The one Jacobian core (ntkft.ntk.jacobians): group model, per-example Jacobians, one cache."""
import functools
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft.ntk import engine, jacobian_rows, jacobians
from tests.ntk import tiny_models


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _split(leaves, group):
  return [leaves[i] for i in group], [leaf for i, leaf in enumerate(leaves) if i not in group]


def _reference(params, x, group):
  """{leaf index: (N, O, *leaf)} by jax.jacobian of the *batched* model (examples are
  independent, so row n of d f(X) / d leaf is example n's Jacobian)."""
  leaves, treedef = jax.tree.flatten(params)
  out = {}
  for i in group:
    def f(leaf, i=i):
      new = list(leaves)
      new[i] = leaf
      return tiny_models.mlp_apply(jax.tree.unflatten(treedef, new), x)
    out[i] = np.asarray(jax.jacobian(f)(leaves[i]))
  return out


def test_apply_group_rebuilds_the_params_from_group_and_rest():
  leaves, treedef = jax.tree.flatten(tiny_models.init_mlp(0))
  group = (1, 4)
  diff, rest = _split(leaves, group)
  seen = {}

  def apply_fn(params, x, scale):
    seen["params"] = params
    return x * scale

  assert jacobians.apply_group(apply_fn, treedef, group, len(leaves), diff, rest, 3.0,
                               (2.0,)) == 6.0
  assert jax.tree.structure(seen["params"]) == treedef
  assert all(a is b for a, b in zip(jax.tree.leaves(seen["params"]), leaves))


def test_per_example_equals_the_batched_jacobian(x64):
  params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(1))
  x = jnp.asarray(tiny_models.make_inputs("mlp", 5, 1))
  leaves, treedef = jax.tree.flatten(params)
  group = (0, 3, 5)
  diff, rest = _split(leaves, group)
  apply = functools.partial(jacobians.apply_group, tiny_models.mlp_apply, treedef, group,
                            len(leaves))
  jac = jacobians.per_example(diff, rest, x, (), apply=apply)
  ref = _reference(params, x, group)
  assert len(jac) == len(group)
  for j, i in zip(jac, group):
    assert j.shape == (5, tiny_models.MLP_OUT) + leaves[i].shape
    np.testing.assert_allclose(j, ref[i], rtol=1e-12, atol=1e-14)


def test_jacobian_rows_are_the_per_example_jacobians(x64):
  """JacobianRows.dense (microbatches of 2, padded) holds the flattened Jacobians in order."""
  params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(3))
  x = jnp.asarray(tiny_models.make_inputs("mlp", 5, 3))
  group = (2, 3)
  rows = jacobian_rows.JacobianRows(tiny_models.mlp_apply, params, (), "highest", None, "mask")
  got = np.asarray(rows.dense(x, np.arange(5), group, 2, out_size=tiny_models.MLP_OUT,
                              dtype=jnp.float64))
  ref = _reference(params, x, group)
  want = np.concatenate([ref[i].reshape(5, tiny_models.MLP_OUT, -1) for i in group], -1)
  assert got.shape == (6 * tiny_models.MLP_OUT, want.shape[-1])   # 5 examples padded to 6
  np.testing.assert_allclose(got[:5 * tiny_models.MLP_OUT], want.reshape(-1, want.shape[-1]),
                             rtol=1e-12, atol=1e-14)


def test_one_compile_cache_shared_by_every_user():
  def apply_fn(params, x):
    return tiny_models.mlp_apply(params, x)

  leaves, treedef = jax.tree.flatten(tiny_models.init_mlp(2))
  key = dict(treedef=treedef, num_leaves=len(leaves), group=(0, 1))
  first = jacobians.jitted(apply_fn, jacobians.per_example, {}, **key)
  assert jacobians.jitted(apply_fn, jacobians.per_example, {}, **key) is first
  assert jacobians.jitted(apply_fn, jacobians.per_example, {}, **{**key, "group": (0,)}) \
      is not first
  # The exact kernels' engine draws its Jacobians from the same cache.
  eng = engine.make_engine(apply_fn, block_of=None, trace_axes=(-1,), diagonal_axes=(),
                           implementation="jacobian_contraction", kind="plain", eps=None,
                           batch_size=None, memory_budget_bytes=None, on_chunk=None,
                           length_buckets=None, mask_key="attention_mask")
  assert eng._piece("jac", treedef, (0, 1), len(leaves)) is first
  # The cached programs do not keep apply_fn alive (the cache is keyed weakly).
  alive = weakref.ref(apply_fn)
  del apply_fn, eng
  gc.collect()
  assert alive() is None


def _tree_model(params, trainable_keys):
  """(apply(trainable, x, frozen), trainable, frozen): the MLP with its top-level entries
  ``trainable_keys`` differentiated and the others passed as ``frozen``."""
  trainable = {k: v for k, v in params.items() if k in trainable_keys}
  frozen = {k: v for k, v in params.items() if k not in trainable_keys}

  def apply(t, x, fr):
    return tiny_models.mlp_apply({**t, **fr}, x)

  return apply, trainable, frozen


def test_per_example_tree_equals_the_batched_jacobian(x64):
  """Jacobians w.r.t. the trainable tree, frozen as an argument, at two frozen values."""
  params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(4))
  x = jnp.asarray(tiny_models.make_inputs("mlp", 5, 4))
  apply, trainable, frozen = _tree_model(params, ("layer_0", "layer_2"))
  fn = jacobians.jitted_tree(apply, jacobians.per_example_tree, {})
  for fr in (frozen, jax.tree.map(lambda a: 2.0 * a + 0.5, frozen)):
    ref = jax.jacobian(lambda t, fr=fr: apply(t, x, fr))(trainable)  # (N, O, *leaf)
    got = fn(trainable, fr, x)
    assert jax.tree.structure(got) == jax.tree.structure(trainable)
    for g, r, leaf in zip(jax.tree.leaves(got), jax.tree.leaves(ref), jax.tree.leaves(trainable)):
      assert g.shape == (5, tiny_models.MLP_OUT) + leaf.shape
      np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


def test_tree_pieces_share_the_weak_cache():
  params = tiny_models.init_mlp(2)
  apply, _, _ = _tree_model(params, ("layer_1",))
  first = jacobians.jitted_tree(apply, jacobians.per_example_tree, {})
  assert jacobians.jitted_tree(apply, jacobians.per_example_tree, {}) is first
  # The group pieces of the same apply_fn live beside it, under their own keys.
  leaves, treedef = jax.tree.flatten(params)
  group = jacobians.jitted(apply, jacobians.per_example, {}, treedef=treedef,
                           num_leaves=len(leaves), group=(0,))
  assert group is not first
  assert jacobians.jitted_tree(apply, jacobians.per_example_tree, {}) is first
  alive = weakref.ref(apply)
  del apply, first, group
  gc.collect()
  assert alive() is None


class _Unreferenceable:
  """A model that cannot be weakly referenced (no __weakref__ slot)."""
  __slots__ = ()

  def __call__(self, params, x):
    return tiny_models.mlp_apply(params, x)


def test_unreferenceable_apply_fn_uses_the_callers_cache():
  model = _Unreferenceable()
  leaves, treedef = jax.tree.flatten(tiny_models.init_mlp(2))
  mine = {}
  fn = jacobians.jitted(model, jacobians.per_example, mine, treedef=treedef,
                        num_leaves=len(leaves), group=(0,))
  assert list(mine.values()) == [fn]
  assert jacobians.jitted(model, jacobians.per_example, mine, treedef=treedef,
                          num_leaves=len(leaves), group=(0,)) is fn


def test_unreferenceable_tree_model_uses_the_callers_cache():
  model = _Unreferenceable()
  mine = {}
  fn = jacobians.jitted_tree(model, jacobians.per_example_tree, mine)
  assert list(mine.values()) == [fn]
  assert jacobians.jitted_tree(model, jacobians.per_example_tree, mine) is fn
