"""Empirical NTK cost on MiniLM vs the cost floor measured in the same run.

  python benchmarks/ntk.py                 # table over N in {32, 64, 128, 256}
  python benchmarks/ntk.py --json --n 64   # one JSON line

Setting: MiniLM, LoRA r=8 on query/value of layers 4 and 5 (24,576 parameters),
sequences padded to 64 tokens, real SST-2 sentences, trace over the C=2 logits.
Floor: one forward pass over the N examples plus C backward passes through the
trainable part, floor = T_fwd + C (T_grad − T_fwd), where T_grad is a
value_and_grad pass w.r.t. the same subset. ratio = best implementation / floor.
"""
import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data, ntk, peft  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402


def setup(n, seq_len):
  spec = peft.PeftSpec(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8,
                       head=False)
  model = load_pretrained("minilm-l6", HeadConfig(num_labels=2),
                          adapters=peft.adapters_for(spec, 6))
  trainable, frozen = peft.partition(model.params,
                                     peft.trainable_names(spec, model.params, 6))
  examples = data.subsample(data.load_examples("sst2", "train", data.task_data_dir("sst2")),
                            n, seed=0)
  encoded = data.encode(data.load_tokenizer(model.source), examples, seq_len)
  batch = data.make_batch(encoded, jnp.arange(n), n, None, seq_len)
  x = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen, x


def measure(n, seq_len, repeats, implementations):
  apply, trainable, frozen, x = setup(n, seq_len)
  out = {"n": n}
  fwd = jax.jit(apply)
  num_outputs = fwd(trainable, x, frozen).shape[-1]
  grad = jax.jit(jax.value_and_grad(lambda p, x, f: apply(p, x, f).sum()))
  t_fwd = common.best_time(fwd, trainable, x, frozen, repeats=repeats)
  t_grad = common.best_time(grad, trainable, x, frozen, repeats=repeats)
  out["forward_s"], out["value_and_grad_s"] = t_fwd, t_grad
  out["floor_s"] = t_fwd + num_outputs * max(t_grad - t_fwd, 0.0)
  for impl in implementations:
    ntk_fn = ntk.empirical_ntk_fn(apply, trace_axes=(-1,), implementation=impl)
    out[f"{impl}_s"] = common.best_time(lambda: ntk_fn(x, None, trainable, frozen),
                                        repeats=max(1, repeats // 2))
  best = min(out[f"{impl}_s"] for impl in implementations)
  out["ratio"] = best / out["floor_s"]
  out["num_params"] = peft.count(trainable)
  out["peak_rss_mb"] = common.peak_rss_mb()
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--n", type=int, nargs="*", default=[32, 64, 128, 256])
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--vp_max_n", type=int, default=64,
                      help="skip NTK-vector products above this N (cost grows as N^2)")
  args = parser.parse_args()
  rows = []
  for n in args.n:
    impls = ["jacobian_contraction"] + (["ntk_vector_products"] if n <= args.vp_max_n else [])
    row = measure(n, args.seq_len, args.repeats, impls)
    row["machine"] = common.machine()
    rows.append(row)
    if args.json:
      common.emit(row, True)
  if not args.json:
    cols = ["n", "jacobian_contraction_s", "ntk_vector_products_s", "forward_s",
            "value_and_grad_s", "floor_s", "ratio", "peak_rss_mb"]
    print(" | ".join(cols))
    for r in rows:
      print(" | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                       for c in cols))
    print(rows[0]["machine"])


if __name__ == "__main__":
  main()
