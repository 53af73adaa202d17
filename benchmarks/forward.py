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

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402


def full_pass(fwd, params, batches):
  """A callable running one forward pass over all batches (blocked on)."""
  def run():
    for b in batches:
      out = fwd(params, b)
    jax.block_until_ready(out)
  return run


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

  bucketed, flat = make((32, 64, 128)), make(None)
  peak_run, peak_flops = common.matmul_peak_timer()
  # Round-robin timing: the passes and the peak see the same machine load.
  best = common.interleaved_best({"bucketed": full_pass(fwd, model.params, bucketed),
                                  "flat": full_pass(fwd, model.params, flat),
                                  "peak": peak_run}, rounds=args.repeats)
  t_bucket, t_flat = best["bucketed"], best["flat"]
  f_bucket = sum(common.flops(fwd, model.params, b) for b in bucketed)
  peak = peak_flops / best["peak"] / 1e9
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
