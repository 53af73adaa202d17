"""Budgeted exact kernels against the dense float64 J J^T of the whole batch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkft.ntk import budgeted, jacobian_rows, precision
from tests.ntk import tiny_models

VOCAB, LENGTH, DIM = 13, 6, 4


def _dense_reference(apply_fn, params, x1, x2):
  """(N1, N2, O, O) float64 from the Jacobian of the whole batch w.r.t. all params."""
  flat, unravel = ravel_pytree(params)
  j1 = jax.jacrev(lambda p: apply_fn(unravel(p), x1))(flat)       # (N1, O, P)
  j2 = jax.jacrev(lambda p: apply_fn(unravel(p), x2))(flat)
  return np.einsum("aip,bjp->abij", np.asarray(j1), np.asarray(j2))


def _embedding_params(seed):
  rng = np.random.RandomState(seed)
  return {"word": {"embedding": rng.normal(size=(VOCAB, DIM))},
          "position": rng.normal(size=(LENGTH, DIM)),
          "dense": {"kernel": rng.normal(size=(DIM, DIM)) / 2, "bias": rng.normal(size=DIM)},
          "head": {"kernel": rng.normal(size=(DIM, 3)), "bias": rng.normal(size=3)}}


def _embedding_apply(params, x):
  """Lookup + positions -> tanh dense -> masked mean -> head: (N, 3)."""
  length = x["input_ids"].shape[1]
  h = jnp.take(params["word"]["embedding"], x["input_ids"], axis=0) + params["position"][:length]
  h = jnp.tanh(h @ params["dense"]["kernel"] + params["dense"]["bias"])
  m = x["attention_mask"][..., None].astype(h.dtype)
  pooled = (h * m).sum(1) / m.sum(1)
  return pooled @ params["head"]["kernel"] + params["head"]["bias"]


def _token_inputs(n, seed):
  rng = np.random.RandomState(seed)
  ids = rng.randint(0, VOCAB, size=(n, LENGTH))
  lengths = 1 + np.arange(n) % LENGTH
  mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
  return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask)}


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
def test_mlp_under_tiny_budget_equals_dense(trace_axes):
  """A budget that forces example chunks and parameter groups changes nothing."""
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(0))
    x1 = jnp.asarray(tiny_models.make_inputs("mlp", 9, 1))
    x2 = jnp.asarray(tiny_models.make_inputs("mlp", 5, 2))
    plans = []
    fn = budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, trace_axes, memory_budget_bytes=20_971,
                                  microbatch=2, on_chunk=lambda i: plans.append(i["plan"]))
    for a, b in ((x1, None), (x1, x2)):
      k = fn(a, b, params)
      ref = _dense_reference(tiny_models.mlp_apply, params, a, a if b is None else b)
      if trace_axes:
        ref = np.einsum("abii->ab", ref) / ref.shape[-1]
      np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    assert plans[0].chunk < 9 and len(plans[0].groups) > 1


def test_sparse_table_equals_dense_with_length_buckets():
  """The word-table kernel from token-row gradients equals the dense V x d Jacobian's."""
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, _embedding_params(0))
    x1, x2 = _token_inputs(8, 0), _token_inputs(5, 1)
    fn = budgeted.budgeted_ntk_fn(_embedding_apply, (), memory_budget_bytes=2**20, microbatch=3,
                                  sparse_tables={"word/embedding": "input_ids"},
                                  length_buckets=(2, 4))
    for a, b in ((x1, None), (x1, x2)):
      k = fn(a, b, params)
      ref = _dense_reference(_embedding_apply, params, a, a if b is None else b)
      np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_sparse_table_rejects_other_uses_of_the_ids():
  def leaky(params, x):
    return _embedding_apply(params, x) + x["input_ids"][:, :1].astype(jnp.float32)

  params = jax.tree.map(jnp.asarray, _embedding_params(0))
  fn = budgeted.budgeted_ntk_fn(leaky, sparse_tables={"word/embedding": "input_ids"})
  with pytest.raises(ValueError, match="other than through"):
    fn(_token_inputs(4, 0), None, params)


def test_bad_arguments():
  params = jax.tree.map(jnp.asarray, tiny_models.init_mlp(0))
  x = jnp.asarray(tiny_models.make_inputs("mlp", 4, 0), jnp.float32)
  with pytest.raises(ValueError, match="trace_axes"):
    budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, trace_axes=(0,))
  with pytest.raises(ValueError, match="precision"):
    budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, precision="tf32")
  with pytest.raises(ValueError, match="sparse_tables names"):
    budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, sparse_tables={"nope": "ids"})(
        x, None, params)
  with pytest.raises(ValueError, match="too small: leaf 'layer_1/kernel'"):
    budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, memory_budget_bytes=100)(x, None, params)
  # The budget is in bytes, a positive int (the one unit of ntkft.ntk).
  for bad in (0, 1.5, 4096.0):
    with pytest.raises(ValueError, match="memory_budget_bytes must be a positive int"):
      budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, memory_budget_bytes=bad)
  with pytest.raises(TypeError, match="memory_budget_mb"):
    budgeted.budgeted_ntk_fn(tiny_models.mlp_apply, memory_budget_mb=4096.0)


def test_plan_holds_every_jacobian_once_when_it_fits():
  plan = budgeted.plan_budget([100, 50], out_size=2, n1=64, n2=64, symmetric=True,
                              memory_budget_bytes=2**22)
  assert plan.chunk == 64 and plan.groups == ((0, 1),)
  small = budgeted.plan_budget([100, 50], out_size=2, n1=64, n2=64, symmetric=True,
                               memory_budget_bytes=2**20 // 4)
  assert small.chunk < 64 and small.bytes <= 2**20 // 4


def test_precision_reaches_every_matmul():
  """Every dot_general of the Jacobian rows and of the contraction carries HIGHEST."""
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tiny_models.init_attention(0))
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                   tiny_models.make_inputs("attention", 4, 0))
  rows = jacobian_rows.JacobianRows(tiny_models.attention_apply, params, (), "highest", None,
                                    "mask")
  leaves = rows.leaves
  group = tuple(range(len(leaves)))
  fn = rows._fn("dense", group, transform=None)
  with precision.matmul_precision("highest"):
    hlo = fn.lower(leaves, [], x, (), ()).as_text()
    a = jnp.ones((8, 5))
    hlo += jacobian_rows.rows_gram.lower(a, a, out_size=2, traced=True,
                                         precision="highest").as_text()
  dots = [line for line in hlo.splitlines() if "dot_general" in line]
  assert len(dots) > 10
  assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), dots[:3]


def test_cpu_kernel_unchanged_by_precision():
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tiny_models.init_attention(1))
  x = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                   tiny_models.make_inputs("attention", 6, 1))
  k = {p: budgeted.budgeted_ntk_fn(tiny_models.attention_apply, precision=p)(x, None, params)
       for p in ("highest", "default")}
  np.testing.assert_allclose(k["highest"], k["default"], rtol=1e-6,
                             atol=1e-6 * np.abs(k["default"]).max())


@pytest.mark.slow
def test_full_parameter_tiny_bert_equals_dense():
  """Every parameter of a 2-layer BERT (word table sparse, length-cut) vs dense float64."""
  from ntkft.models import functional
  from ntkft.models.bert import EncoderConfig, HeadConfig
  config = EncoderConfig(vocab_size=VOCAB, hidden_size=8, num_layers=2, num_heads=2,
                         intermediate_size=16, max_position_embeddings=LENGTH)
  model = functional.init_model(config, HeadConfig(num_labels=2, pooling="cls"), seed=0)
  rng = np.random.RandomState(0)
  with jax.enable_x64(True):
    # Random (not zero/one) values everywhere so that every block contributes.
    params = jax.tree.map(lambda a: jnp.asarray(0.3 * rng.normal(size=a.shape)), model.params)
    apply = lambda p, x: model.apply_fn(p, x)
    x = _token_inputs(6, 2)
    k = budgeted.budgeted_ntk_fn(apply, (), microbatch=3,
                                 sparse_tables={"embeddings/word/embedding": "input_ids"},
                                 length_buckets=(3,))(x, None, params)
    ref = _dense_reference(apply, params, x, x)
  np.testing.assert_allclose(k, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
