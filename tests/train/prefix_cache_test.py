"""The frozen-prefix cache: outputs, gradients and donated train steps equal the full model's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkft import data, peft
from ntkft.models import EncoderConfig, HeadConfig, functional, init_model
from ntkft.train import losses, prefix_cache
from ntkft.train import step as step_lib
from ntkft.train.state import TrainState

NUM_LAYERS = 4
MAX_LEN = 12
BUCKETS = (6, 12)


def _setup(layers, seed=0):
  cfg = EncoderConfig(vocab_size=40, hidden_size=16, num_layers=NUM_LAYERS, num_heads=2,
                      intermediate_size=32, max_position_embeddings=16)
  spec = peft.PeftSpec(methods=("lora",), layers=layers, targets=("query", "value"), rank=2)
  model = init_model(cfg, HeadConfig(num_labels=3), peft.adapters_for(spec, NUM_LAYERS), seed)
  trainable, frozen = peft.partition(
      model.params, peft.trainable_names(spec, model.params, NUM_LAYERS))
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, MAX_LEN + 1, size=11)
  enc = data.Encoded(input_ids=[rng.integers(1, 40, n).astype(np.int32) for n in lengths],
                     token_type_ids=[(np.arange(n) >= n // 2).astype(np.int32) for n in lengths],
                     labels=rng.integers(0, 3, 11).astype(np.int32),
                     lengths=lengths.astype(np.int32), pad_id=0)
  return model, trainable, frozen, enc


def _moved(tree, seed):
  """θ ≠ θ0 everywhere (LoRA B starts at 0, where A has no gradient)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape)
                                      for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("layers", [(2,), (1, 3)])
@pytest.mark.parametrize("mode", step_lib.MODES)
def test_outputs_and_gradients_equal_full_model(layers, mode):
  model, trainable, frozen, enc = _setup(layers)
  cache = prefix_cache.PrefixCache.build(model, trainable, model.params, {"train": enc},
                                         batch_size=4, buckets=BUCKETS, max_len=MAX_LEN)
  assert cache.start == min(layers)
  p0 = _moved(trainable, 1)   # the tangent point (B != 0)
  p = _moved(p0, 2)           # where outputs and gradients are compared
  loss_fn = losses.loss_fn("squared", 3, False)
  full = step_lib.model_fn(mode, model.apply_fn)
  cached = step_lib.model_fn(mode, cache.apply_fn)

  # One batch of another size and length than the cache's, with a padding row.
  batch = data.eval_batches(enc, 12, None, MAX_LEN)[0]
  fed = cache.attach(batch, "train")
  real = batch["weights"] > 0
  out_full = np.asarray(full(p, p0, frozen, batch, None))[real]
  out_cached = np.asarray(cached(p, p0, frozen, fed, None))[real]
  np.testing.assert_allclose(out_cached, out_full, rtol=0, atol=1e-5 * np.abs(out_full).max())
  g_full = jax.grad(lambda q: loss_fn(full(q, p0, frozen, batch, None), batch))(p)
  g_cached = jax.grad(lambda q: loss_fn(cached(q, p0, frozen, fed, None), fed))(p)
  for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_cached)):
    assert np.abs(np.asarray(a)).max() > 0
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(np.asarray(a)).max())


def _frozen_buffers(state):
  """Addresses of the frozen parameters' buffers, in leaf order."""
  return [x.unsafe_buffer_pointer() for x in jax.block_until_ready(jax.tree.leaves(state.frozen))]


@pytest.mark.parametrize("mode", step_lib.MODES)
def test_donated_cached_steps_end_where_the_full_model_steps_end(mode):
  """Three SGD steps, jitted with the state donated as ntkft.train.loop and
  benchmarks/train_step.py jit them: the cached run's parameters equal the full
  model's, and every step hands the frozen parameters back in their own buffers
  (aliased, not copied)."""
  model, trainable, frozen, enc = _setup((2, 3))
  cache = prefix_cache.PrefixCache.build(model, trainable, model.params, {"train": enc},
                                         batch_size=4, buckets=BUCKETS, max_len=MAX_LEN)
  tx = optax.sgd(0.1)
  loss_fn = losses.loss_fn("squared", 3, False)
  batches = data.eval_batches(enc, 4, BUCKETS, MAX_LEN)   # 3 batches, 2 lengths, 1 pad row
  p0 = _moved(trainable, 1)                               # B != 0: every leaf has a gradient
  ends = {}
  for name, apply_fn, feed in (("full", model.apply_fn, lambda b: b),
                               ("cached", cache.apply_fn, lambda b: cache.attach(b, "train"))):
    step = jax.jit(functools.partial(step_lib.train_step,
                                     outputs_fn=step_lib.model_fn(mode, apply_fn),
                                     loss_fn=loss_fn, tx=tx), donate_argnums=0)
    state = jax.tree.map(jnp.copy, TrainState(
        step=jnp.zeros([], jnp.int32), trainable=p0, trainable0=p0, frozen=frozen,
        opt_state=tx.init(p0), rng=jax.random.PRNGKey(0)))
    for b in batches:
      before = _frozen_buffers(state)
      state, _ = step(state, feed(b))
      assert _frozen_buffers(state) == before, f"{name}: frozen params copied, not aliased"
    ends[name] = state
  assert int(ends["cached"].step) == len(batches)
  full = jax.tree.leaves(ends["full"].trainable)
  moved = max(np.abs(np.asarray(f) - np.asarray(a)).max()
              for f, a in zip(full, jax.tree.leaves(p0)))
  assert moved > 1e-3
  for f, c in zip(full, jax.tree.leaves(ends["cached"].trainable)):
    np.testing.assert_allclose(c, f, rtol=0, atol=1e-4 * moved)


def test_cached_states_are_the_layer_inputs_and_padding_rows_are_zero():
  model, trainable, _, enc = _setup((2, 3))
  cache = prefix_cache.PrefixCache.build(model, trainable, model.params, {"train": enc},
                                         batch_size=3, buckets=None, max_len=MAX_LEN)
  # Recompute layer-2 inputs by hand: embeddings, then the first two layers unfused.
  prefix_fn, _ = functional.prefix_functions(model)
  batch = data.eval_batches(enc, 11, None, MAX_LEN)[0]
  want = np.asarray(prefix_fn(model.params, batch, 2))
  assert not np.allclose(want, 0)
  for row, i in enumerate(batch["index"]):
    n = enc.lengths[i]
    np.testing.assert_allclose(cache.states["train"][i, :n], want[row, :n], atol=1e-5)
  padded = cache.attach(data.eval_batches(enc, 16, None, MAX_LEN)[0], "train")
  assert padded["hidden"].shape == (16, MAX_LEN, 16)
  assert not padded["hidden"][11:].any()


def test_lowest_trained_layer_and_bad_inputs():
  names = ["encoder/layer_4/attention/query/lora_b", "encoder/layer_5/x", "head/kernel"]
  assert prefix_cache.lowest_trained_layer(names, 6) == 4
  assert prefix_cache.lowest_trained_layer(["head/kernel", "head/bias"], 6) == 6
  with pytest.raises(ValueError, match="embedding"):
    prefix_cache.lowest_trained_layer(["embeddings/word/embedding"], 6)
  model, trainable, _, enc = _setup((2,))
  dropped = model.__class__(**{**model.__dict__, "config": model.config.__class__(
      **{**model.config.__dict__, "dropout_rate": 0.1})})
  with pytest.raises(ValueError, match="dropout"):
    prefix_cache.PrefixCache.build(dropped, trainable, model.params, {"train": enc}, 4, None,
                                   MAX_LEN)
