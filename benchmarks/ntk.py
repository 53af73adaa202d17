"""Empirical NTK cost on MiniLM vs the cost floor measured in the same run.

  python benchmarks/ntk.py                 # table over N in {32, 64, 128, 256}
  python benchmarks/ntk.py --json --n 64   # one JSON line

Setting: MiniLM, LoRA r=8 on query/value of layers 4 and 5 (24,576 parameters),
sequences padded to 64 tokens, real SST-2 sentences, trace over the C=2 logits.
Floor: one forward pass over the N examples plus C backward passes through the
trainable part, floor = T_fwd + C (T_grad − T_fwd), where T_grad is a
value_and_grad pass w.r.t. the same subset. ratio = best implementation / floor
(both on the padded batch: equal work).

``jacobian_contraction_bucketed_s``: the same kernel with ``length_buckets``
(16, 32, 48, 64): each example's Jacobian on its sequence cut to the shortest
bucket that holds its real tokens (:mod:`ntkft.ntk.lengths`); SST-2 sentences
average ~13 tokens, so most of the padded work is skipped.

``--torch_python PY``: also runs ``tools/torch_reference_ntk.py`` under that
interpreter (an environment with torch, tokenizers, safetensors; never installed
here) after each N: the same N-example kernel by PyTorch's per-example
``vmap(jacrev)`` over the LoRA parameters, and at N <= ``--paper_max_n`` the
paper's method (per-example ``jacrev`` over all parameters, then slicing), on
the hand-written functional BERT and (if transformers is there) on HF's BertModel.
Each measurement runs in its own process, so peak memory (max RSS) is its own.
"""
import argparse
import json
import pathlib
import subprocess
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data, ntk, peft  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained, resolve_model_dir  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
LENGTH_BUCKETS = (16, 32, 48, 64)
BUCKETED = "jacobian_contraction_bucketed"


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
  x = data.one_padded_batch(encoded, seq_len)

  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen, x


def measure(what, n, seq_len, repeats):
  """Times one thing in this process: "floor" or an implementation name."""
  apply, trainable, frozen, x = setup(n, seq_len)
  if what == "floor":
    fwd = jax.jit(apply)
    num_outputs = fwd(trainable, x, frozen).shape[-1]
    grad = jax.jit(jax.value_and_grad(lambda p, x, f: apply(p, x, f).sum()))
    t_fwd = common.best_time(fwd, trainable, x, frozen, repeats=repeats)
    t_grad = common.best_time(grad, trainable, x, frozen, repeats=repeats)
    return {"forward_s": t_fwd, "value_and_grad_s": t_grad, "num_outputs": num_outputs,
            "floor_s": t_fwd + num_outputs * max(t_grad - t_fwd, 0.0),
            "num_params": peft.count(trainable), "floor_peak_rss_mb": common.peak_rss_mb()}
  if what == BUCKETED:
    ntk_fn = ntk.empirical_ntk_fn(apply, trace_axes=(-1,), length_buckets=LENGTH_BUCKETS)
  else:
    ntk_fn = ntk.empirical_ntk_fn(apply, trace_axes=(-1,), implementation=what)
  seconds = common.best_time(lambda: ntk_fn(x, None, trainable, frozen),
                             repeats=max(1, repeats // 2))
  return {f"{what}_s": seconds, f"{what}_peak_rss_mb": common.peak_rss_mb()}


def in_subprocess(what, n, seq_len, repeats):
  """``measure`` in a fresh process, so peak memory is that implementation's own."""
  cmd = [sys.executable, __file__, "--_child", what, "--n", str(n), "--seq_len", str(seq_len),
         "--repeats", str(repeats)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def torch_reference(torch_python, n, seq_len, repeats, paper):
  """tools/torch_reference_ntk.py under another interpreter: its JSON line."""
  cmd = [torch_python, str(REPO / "tools" / "torch_reference_ntk.py"),
         "--model_dir", str(resolve_model_dir("minilm-l6")),
         "--data", str(data.task_data_dir("sst2") / "SST-2" / "train.tsv"), "--n", str(n),
         "--seq_len", str(seq_len), "--repeats", str(repeats)]
  cmd += ["--paper", "--paper_hf"] if paper else []
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def row(n, seq_len, repeats, implementations, torch_python=None, paper_max_n=32):
  out = {"n": n}
  out.update(in_subprocess("floor", n, seq_len, repeats))
  for impl in implementations + [BUCKETED]:
    out.update(in_subprocess(impl, n, seq_len, repeats))
  best = min(implementations, key=lambda impl: out[f"{impl}_s"])
  out["ratio"] = out[f"{best}_s"] / out["floor_s"]
  out["best"] = best
  out["peak_rss_mb"] = out[f"{best}_peak_rss_mb"]
  out["bucketed_speedup"] = out["jacobian_contraction_s"] / out[f"{BUCKETED}_s"]
  if torch_python:
    ref = torch_reference(torch_python, n, seq_len, repeats, n <= paper_max_n)
    out.update({k: v for k, v in ref.items() if k.startswith("torch")})
    for key in ("torch_vmap_jacrev_lora_s", "torch_paper_all_params_s",
                "torch_paper_hf_all_params_s"):
      if key in out:
        name = key.removeprefix("torch_").removesuffix("_s")
        out[f"{name}_over_jc"] = out[key] / out["jacobian_contraction_s"]
        out[f"{name}_over_bucketed"] = out[key] / out[f"{BUCKETED}_s"]
  out["machine"] = common.machine()
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--n", type=int, nargs="*", default=[32, 64, 128, 256])
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--vp_max_n", type=int, default=64,
                      help="skip NTK-vector products above this N (cost grows as N^2)")
  parser.add_argument("--torch_python", default=None,
                      help="python of an env with torch: also time the PyTorch references")
  parser.add_argument("--paper_max_n", type=int, default=32,
                      help="time the paper's all-parameter method only up to this N")
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    print(json.dumps(measure(args._child, args.n[0], args.seq_len, args.repeats)))
    return
  rows = []
  for n in args.n:
    impls = ["jacobian_contraction"] + (["ntk_vector_products"] if n <= args.vp_max_n else [])
    rows.append(row(n, args.seq_len, args.repeats, impls, args.torch_python,
                    args.paper_max_n))
    if args.json:
      common.emit(rows[-1], True)
  if not args.json:
    cols = ["n", "jacobian_contraction_s", "ntk_vector_products_s", f"{BUCKETED}_s", "forward_s",
            "value_and_grad_s", "floor_s", "ratio", "jacobian_contraction_peak_rss_mb",
            "ntk_vector_products_peak_rss_mb", "torch_vmap_jacrev_lora_s",
            "torch_paper_all_params_s"]
    print(" | ".join(cols))
    for r in rows:
      print(" | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                       for c in cols))
    print(rows[0]["machine"])


if __name__ == "__main__":
  main()
