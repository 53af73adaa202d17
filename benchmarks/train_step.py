"""Time per train step, nonlinear vs linearized (tangent) MiniLM, on the same batch.

  python benchmarks/train_step.py [--json] [--batch_size 32] [--seq_len 64]

LoRA r=8 on query/value of every layer + the head, Adam, cross-entropy; one
batch of real SST-2 training sentences padded to ``seq_len``. Prints seconds per
step for both regimes, their ratio (linearized / nonlinear), and achieved
GFLOP/s (XLA's FLOP count / time) against a measured f32 matmul peak, all in
one run, timed round-robin (``common.interleaved_best``).

``prefix_cache_speedup``: for LoRA r=8 on query/value of layers 4, 5 + the head
(nonlinear, same batch), seconds per step of the full model over seconds per
step with the frozen layers 0-3 cached (``ntkft.train.prefix_cache``), timed in
the same round-robin.
"""
import argparse
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data, peft  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402
from ntkft.train import losses, optim, prefix_cache  # noqa: E402
from ntkft.train import step as step_lib
from ntkft.train.state import TrainState  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  spec = peft.PeftSpec(methods=("lora",), layers=None, targets=("query", "value"), rank=8)
  model = load_pretrained("minilm-l6", HeadConfig(num_labels=2),
                          adapters=peft.adapters_for(spec, 6))
  trainable, frozen = peft.partition(model.params,
                                     peft.trainable_names(spec, model.params, 6))
  examples = data.subsample(data.load_examples("sst2", "train", data.task_data_dir("sst2")),
                            args.batch_size, seed=0)
  encoded = data.encode(data.load_tokenizer(model.source), examples, args.seq_len)
  batch = data.eval_batches(encoded, args.batch_size, None, args.seq_len)[0]
  tx = optim.optimizer("adam", 1e-4)
  loss_fn = losses.loss_fn("cross_entropy", 2, False)

  def fresh_state():
    return TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable,
                      trainable0=jax.tree.map(jnp.copy, trainable), frozen=frozen,
                      opt_state=tx.init(trainable), rng=jax.random.PRNGKey(0))

  timers, steps = {}, {}
  for mode in ("nonlinear", "linearized"):
    step = jax.jit(functools.partial(step_lib.train_step,
                                     outputs_fn=step_lib.model_fn(mode, model.apply_fn),
                                     loss_fn=loss_fn, tx=tx))  # no donation: reused state
    state = fresh_state()
    steps[mode] = (step, state)
    timers[mode] = functools.partial(lambda f, s: jax.block_until_ready(f(s, batch)),
                                     step, state)
  # Layers 4, 5 only: the full model vs the cached frozen prefix (layers 0-3).
  spec45 = peft.PeftSpec(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8)
  model45 = load_pretrained("minilm-l6", HeadConfig(num_labels=2),
                            adapters=peft.adapters_for(spec45, 6))
  trainable45, frozen45 = peft.partition(
      model45.params, peft.trainable_names(spec45, model45.params, 6))
  cache = prefix_cache.PrefixCache.build(model45, trainable45, model45.params,
                                         {"train": encoded}, args.batch_size, None,
                                         args.seq_len)
  state45 = TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable45,
                       trainable0=jax.tree.map(jnp.copy, trainable45), frozen=frozen45,
                       opt_state=tx.init(trainable45), rng=jax.random.PRNGKey(0))
  for name, apply_fn, b in (("layers45_full", model45.apply_fn, batch),
                            ("layers45_cached", cache.apply_fn, cache.attach(batch, "train"))):
    step = jax.jit(functools.partial(step_lib.train_step,
                                     outputs_fn=step_lib.model_fn("nonlinear", apply_fn),
                                     loss_fn=loss_fn, tx=tx))
    timers[name] = functools.partial(lambda f, s, b: jax.block_until_ready(f(s, b)),
                                     step, state45, b)
  timers["peak"], peak_flops = common.matmul_peak_timer()
  # Round-robin timing: both regimes and the peak see the same machine load.
  best = common.interleaved_best(timers, rounds=args.repeats)
  peak = peak_flops / best["peak"] / 1e9
  result = {}
  for mode, (step, state) in steps.items():
    gflops = common.flops(step, state, batch) / best[mode] / 1e9
    result[f"{mode}_s"] = best[mode]
    result[f"{mode}_gflops"] = gflops
    result[f"{mode}_fraction_of_peak"] = gflops / peak
  result["ratio"] = result["linearized_s"] / result["nonlinear_s"]
  result["layers45_full_s"] = best["layers45_full"]
  result["layers45_cached_s"] = best["layers45_cached"]
  result["prefix_cache_speedup"] = best["layers45_full"] / best["layers45_cached"]
  result["fraction_of_peak"] = result["nonlinear_fraction_of_peak"]
  result["peak_gflops"] = peak
  result.update(batch_size=args.batch_size, seq_len=args.seq_len, machine=common.machine())
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
