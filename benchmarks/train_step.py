"""Time per train step, nonlinear vs linearized (tangent) MiniLM, on the same batch.

  python benchmarks/train_step.py [--json] [--batch_size 32] [--seq_len 64]

LoRA r=8 on query/value of every layer + the head, Adam, cross-entropy; one
batch of real SST-2 training sentences padded to ``seq_len``. Prints seconds per
step for both regimes, their ratio (linearized / nonlinear), and achieved
GFLOP/s (XLA's FLOP count / time) against a measured f32 matmul peak, all in
one run, timed round-robin (``common.interleaved_best``).

Every step is jitted as ``ntkft.train.loop`` jits it, with the state donated,
and each call takes the state the previous call returned. Without donation a
jitted step must copy every parameter it returns unchanged into a fresh output
buffer: the frozen ~22.7M (90 MB) on each call, a cost training never pays and
one that is the same in every arm, so it pulled ``ratio`` and
``prefix_cache_speedup`` towards 1. A step's cost does not depend on the values
it starts from.

``prefix_cache_speedup``: for LoRA r=8 on query/value of layers 4, 5 + the head
(nonlinear, same batch), seconds per step of the full model over seconds per
step with the frozen layers 0-3 cached (``ntkft.train.prefix_cache``), timed in
the same round-robin. Its ceilings, measured in the same run:

* ``prefix_cache_flop_ratio``: XLA's FLOPs of the full step over the cached one
  (the speedup if every FLOP cost the same time). Both steps differentiate only
  layers 4, 5 and the head, so the cache removes the forward of the embeddings
  and layers 0-3 and nothing of the backward;
* ``prefix_cache_ideal_speedup``: full step / (full step − (full forward −
  cached forward)), with ``layers45_{full,cached}_forward_s`` the loss alone
  (no gradient): the speedup if the cached step cost exactly the full step
  minus the prefix's measured forward. ``prefix_cache_speedup`` well below it
  would mean waste in the cached path.

``load_start`` / ``load_end`` (``os.getloadavg()``) and ``quiet`` (1-minute load
≤ 2.5 at the start; only a quiet timing is reported, as for
``benchmarks/study_point.py``).
"""
import argparse
import functools
import os
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data, peft  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402
from ntkft.train import losses, optim, prefix_cache  # noqa: E402
from ntkft.train import step as step_lib  # noqa: E402
from ntkft.train.state import TrainState  # noqa: E402

QUIET_LOAD = 2.5  # as benchmarks/study_point.py


class ThreadedStep:
  """A donated jitted train step on one batch; each call continues from the last state.

  ``state`` always holds the live state (the one passed in is donated by the
  first call and must not be used again).
  """

  def __init__(self, outputs_fn, loss_fn, tx, state: TrainState, batch):
    self.step = jax.jit(functools.partial(step_lib.train_step, outputs_fn=outputs_fn,
                                          loss_fn=loss_fn, tx=tx), donate_argnums=0)
    self.forward = jax.jit(lambda s, b: loss_fn(step_lib.eval_outputs(s, b, outputs_fn=outputs_fn),
                                                b))
    self.state, self.batch = state, batch

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))

  def time_forward(self):
    """The loss alone (no gradient, no update) at the current state."""
    jax.block_until_ready(self.forward(self.state, self.batch))

  def flops(self) -> float:
    return common.flops(self.step, self.state, self.batch)


def fresh_state(trainable, frozen, tx) -> TrainState:
  """A state whose every leaf is its own buffer: donating it frees nothing another arm holds."""
  state = TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable, trainable0=trainable,
                     frozen=frozen, opt_state=tx.init(trainable), rng=jax.random.PRNGKey(0))
  return jax.tree.map(jnp.copy, state)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  load_start = os.getloadavg()

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

  arms = {mode: ThreadedStep(step_lib.model_fn(mode, model.apply_fn), loss_fn, tx,
                             fresh_state(trainable, frozen, tx), batch)
          for mode in ("nonlinear", "linearized")}
  # Layers 4, 5 only: the full model vs the cached frozen prefix (layers 0-3).
  spec45 = peft.PeftSpec(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8)
  model45 = load_pretrained("minilm-l6", HeadConfig(num_labels=2),
                            adapters=peft.adapters_for(spec45, 6))
  trainable45, frozen45 = peft.partition(
      model45.params, peft.trainable_names(spec45, model45.params, 6))
  cache = prefix_cache.PrefixCache.build(model45, trainable45, model45.params,
                                         {"train": encoded}, args.batch_size, None,
                                         args.seq_len)
  for name, apply_fn, b in (("layers45_full", model45.apply_fn, batch),
                            ("layers45_cached", cache.apply_fn, cache.attach(batch, "train"))):
    arms[name] = ThreadedStep(step_lib.model_fn("nonlinear", apply_fn), loss_fn, tx,
                              fresh_state(trainable45, frozen45, tx), b)
  timers = dict(arms)
  for name in ("layers45_full", "layers45_cached"):
    timers[f"{name}_forward"] = arms[name].time_forward
  timers["peak"], peak_flops = common.matmul_peak_timer()
  # Round-robin timing: both regimes and the peak see the same machine load.
  best = common.interleaved_best(timers, rounds=args.repeats)
  load_end = os.getloadavg()
  peak = peak_flops / best["peak"] / 1e9
  result = {}
  for mode in ("nonlinear", "linearized"):
    gflops = arms[mode].flops() / best[mode] / 1e9
    result[f"{mode}_s"] = best[mode]
    result[f"{mode}_gflops"] = gflops
    result[f"{mode}_fraction_of_peak"] = gflops / peak
  result["ratio"] = result["linearized_s"] / result["nonlinear_s"]
  full, cached = best["layers45_full"], best["layers45_cached"]
  result["layers45_full_s"] = full
  result["layers45_cached_s"] = cached
  result["prefix_cache_speedup"] = full / cached
  result["layers45_full_forward_s"] = best["layers45_full_forward"]
  result["layers45_cached_forward_s"] = best["layers45_cached_forward"]
  prefix_forward = best["layers45_full_forward"] - best["layers45_cached_forward"]
  result["prefix_cache_ideal_speedup"] = full / (full - prefix_forward)
  result["layers45_full_gflop"] = arms["layers45_full"].flops() / 1e9
  result["layers45_cached_gflop"] = arms["layers45_cached"].flops() / 1e9
  result["prefix_cache_flop_ratio"] = (result["layers45_full_gflop"]
                                       / result["layers45_cached_gflop"])
  result["fraction_of_peak"] = result["nonlinear_fraction_of_peak"]
  result["peak_gflops"] = peak
  result.update(batch_size=args.batch_size, seq_len=args.seq_len,
                load_start=list(load_start), load_end=list(load_end),
                quiet=load_start[0] <= QUIET_LOAD, machine=common.machine())
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
