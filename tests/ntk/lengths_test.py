"""Length buckets (ntkft.ntk.lengths): the kernel is unchanged, the bookkeeping is right."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkft import ntk, peft
from ntkft.models import EncoderConfig, HeadConfig, init_model
from ntkft.ntk import lengths

SEQ = 24
BUCKETS = (8, 16)


def _mask(lens, full=SEQ):
  return (np.arange(full)[None] < np.asarray(lens)[:, None]).astype(np.int32)


def test_example_lengths_right_left_padding_holes_and_empty():
  mask = np.array([[1, 1, 0, 0, 0],
                   [0, 0, 1, 1, 1],      # left padding: nothing may be cut
                   [1, 0, 1, 0, 0],      # a hole: keep up to the last real token
                   [0, 0, 0, 0, 0]])     # empty: length 1
  np.testing.assert_array_equal(lengths.example_lengths({"attention_mask": mask}), [2, 5, 3, 1])


def test_bucket_groups_smallest_bucket_that_fits_and_overflow_uncut():
  groups = lengths.bucket_groups(np.array([3, 4, 5, 16, 17, 1]), (4, 8, 16), full_length=20)
  assert [(b, idx.tolist()) for b, idx in groups] == [(4, [0, 1, 5]), (8, [2]), (16, [3]),
                                                      (20, [4])]
  # Buckets beyond the padded length are capped at it.
  groups = lengths.bucket_groups(np.array([7, 9]), (8, 32), full_length=12)
  assert [(b, idx.tolist()) for b, idx in groups] == [(8, [0]), (12, [1])]


def test_cut_touches_only_example_by_length_leaves():
  x = {"ids": np.zeros((3, 10)), "mask": np.ones((3, 10)), "label": np.zeros(3),
       "feat": np.zeros((3, 7))}
  out = lengths.cut(x, 4, full_length=10, num_examples=3)
  assert {k: v.shape for k, v in out.items()} == {
      "ids": (3, 4), "mask": (3, 4), "label": (3,), "feat": (3, 7)}


def test_bucketed_returns_rows_in_input_order_with_group_padding():
  rng = np.random.default_rng(0)
  lens = rng.integers(1, SEQ + 1, 11)
  x = {"attention_mask": _mask(lens), "tok": rng.normal(size=(11, SEQ)) * _mask(lens)}
  seen = []

  def per_example(xc):            # padding-invariant: sums over real tokens only
    seen.append(xc["tok"].shape)
    return {"s": (xc["tok"] * xc["attention_mask"]).sum(1), "n": xc["attention_mask"].sum(1)}

  out = lengths.bucketed(per_example, x, BUCKETS)
  np.testing.assert_allclose(out["s"], x["tok"].sum(1), rtol=1e-6)
  np.testing.assert_array_equal(out["n"], lens)
  groups = lengths.bucket_groups(lens, BUCKETS, SEQ)
  expected = [(min(1 << (len(i) - 1).bit_length(), 11), b) for b, i in groups]
  assert seen == expected


def test_check_buckets_rejects_bad_values():
  for bad in ((), (8, 4), (4, 4), (0, 8), ("a",), 5):
    with pytest.raises(ValueError, match="length_buckets"):
      lengths.check_buckets(bad)


@functools.lru_cache(maxsize=None)
def _tiny_bert(num_labels=3):
  config = EncoderConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2,
                         intermediate_size=32, max_position_embeddings=SEQ)
  spec = peft.PeftSpec(methods=("lora",), layers=(0,), targets=("query", "value"), rank=2,
                       init="gaussian", head=True)
  model = init_model(config, HeadConfig(num_labels=num_labels),
                     adapters=peft.adapters_for(spec, 1), seed=0)
  trainable, frozen = peft.partition(model.params, peft.trainable_names(spec, model.params, 1))

  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen


# Real lengths; x1 and x2 fall into the same bucket sizes (4, 2, 2), so they share compiles.
LENGTHS_1 = (3, 5, 12, 7, 2, 9, 20, 24)
LENGTHS_2 = (6, 15, 10, 4, 22, 1, 8, 17)


def _batch(lens, seed):
  n = len(lens)
  rng = np.random.default_rng(seed)
  mask = _mask(lens)
  return {"input_ids": rng.integers(1, 60, (n, SEQ)).astype(np.int32) * mask,
          "attention_mask": mask, "token_type_ids": np.zeros((n, SEQ), np.int32)}


def _close(actual, expected):
  expected = np.asarray(expected)
  np.testing.assert_allclose(np.asarray(actual), expected, rtol=0,
                             atol=1e-5 * np.abs(expected).max())


def test_kernel_equal_with_and_without_buckets():
  apply, trainable, frozen = _tiny_bert()
  x1, x2 = _batch(LENGTHS_1, 1), _batch(LENGTHS_2, 2)
  plain = ntk.empirical_ntk_fn(apply, trace_axes=())
  cut = ntk.empirical_ntk_fn(apply, trace_axes=(), length_buckets=BUCKETS)
  for a, b in ((x1, None), (x1, x2)):
    _close(cut(a, b, trainable, frozen), plain(a, b, trainable, frozen))


def test_chunked_block_and_sign_kernels_equal_with_and_without_buckets():
  apply, trainable, frozen = _tiny_bert()
  x1, x2 = _batch(LENGTHS_1, 1), _batch(LENGTHS_2, 2)
  blocks0 = ntk.per_block_ntk_fn(apply, "layer", batch_size=5)(x1, x2, trainable, frozen)
  blocks1 = ntk.per_block_ntk_fn(apply, "layer", batch_size=5, length_buckets=BUCKETS)(
      x1, x2, trainable, frozen)
  assert blocks0.keys() == blocks1.keys()
  for name in blocks0:
    _close(blocks1[name], blocks0[name])
  _close(ntk.sign_ntk_fn(apply, batch_size=5, length_buckets=BUCKETS)(x1, x2, trainable, frozen),
         ntk.sign_ntk_fn(apply, batch_size=5)(x1, x2, trainable, frozen))


def test_bucket_errors_name_the_problem():
  apply, trainable, frozen = _tiny_bert()
  x = _batch(LENGTHS_1, 0)
  with pytest.raises(ValueError, match="jacobian_contraction"):
    ntk.empirical_ntk_fn(apply, implementation="ntk_vector_products", length_buckets=BUCKETS)
  fn = ntk.empirical_ntk_fn(apply, length_buckets=BUCKETS, mask_key="padding_mask")
  with pytest.raises(ValueError, match="padding_mask"):
    fn(x, None, trainable, frozen)
  with pytest.raises(ValueError, match="length_buckets"):
    ntk.empirical_ntk_fn(apply, length_buckets=(16, 8))


def test_jacobians_do_not_depend_on_padding_length():
  """The premise: the model's per-example outputs ignore padding (so its Jacobian does)."""
  apply, trainable, frozen = _tiny_bert()
  x = _batch(LENGTHS_2, 3)
  longest = int(x["attention_mask"].sum(1).max())
  short = {k: v[:, :longest] for k, v in x.items()}
  grad = jax.jit(jax.jacrev(apply))      # frozen weights as an argument, not a constant
  for a, b in zip(jax.tree.leaves(grad(trainable, x, frozen)),
                  jax.tree.leaves(grad(trainable, short, frozen))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0,
                               atol=1e-6 * float(jnp.abs(a).max()) + 1e-12)
