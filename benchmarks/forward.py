"""Forward throughput of MiniLM on SST-2 dev, with and without length bucketing.

  python benchmarks/forward.py [--json] [--batch_size 64]

Prints examples/s over the whole dev set (872 sentences) padded to buckets
(32, 64, 128) vs everything padded to 128, the achieved GFLOP/s (XLA's FLOP
count of the executed shapes / time) and that as a fraction of a measured f32
matmul peak on the same machine, in the same run.
"""
import argparse
import pathlib
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402


def timed_pass(fwd, params, batches, repeats):
  """Best-of-repeats wall time of one pass over all batches, and its FLOPs."""
  for b in batches:  # compile every bucket shape
    jax.block_until_ready(fwd(params, b))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    for b in batches:
      out = fwd(params, b)
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - t)
  total_flops = sum(common.flops(fwd, params, b) for b in batches)
  return best, total_flops


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  model = load_pretrained("minilm-l6", HeadConfig(num_labels=2))
  tokenizer = data.load_tokenizer(model.source)
  examples = data.load_examples("sst2", "dev", data.task_data_dir("sst2"))
  encoded = data.encode(tokenizer, examples, max_len=128)
  fwd = jax.jit(lambda p, b: model.apply_fn(p, b))
  batch_keys = ("input_ids", "attention_mask", "token_type_ids")
  make = lambda buckets: [{k: b[k] for k in batch_keys} for b in data.eval_batches(
      encoded, args.batch_size, buckets, 128)]

  t_bucket, f_bucket = timed_pass(fwd, model.params, make((32, 64, 128)), args.repeats)
  t_flat, _ = timed_pass(fwd, model.params, make(None), args.repeats)
  peak = common.matmul_peak_gflops()
  gflops = f_bucket / t_bucket / 1e9
  common.emit({
      "examples_per_s": len(encoded) / t_bucket,
      "examples_per_s_no_bucketing": len(encoded) / t_flat,
      "bucketing_speedup": t_flat / t_bucket,
      "gflops": gflops,
      "peak_gflops": peak,
      "fraction_of_peak": gflops / peak,
      "batch_size": args.batch_size,
      "n_examples": len(encoded),
      "machine": common.machine(),
  }, args.json)


if __name__ == "__main__":
  main()
