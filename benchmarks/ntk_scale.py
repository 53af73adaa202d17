"""NTK at scale on MiniLM + SST-2: budgeted exact kernels, sketches, the operator.

  python benchmarks/ntk_scale.py --json                  # everything, one JSON line
  python benchmarks/ntk_scale.py --json --only=sketch    # one part (comma list)

Parts (each measurement in its own process, so peak memory, the max RSS of
that process via ``resource.getrusage``, is its own):

* ``lora_flat``: the flattened (N C x N C) exact kernel over LoRA r=8 on
  query/value of layers 4-5 (24,576 parameters) at N = ``--n_flat`` (4,096),
  ``budgeted_ntk_fn(trace_axes=())``, length buckets (16, 32, 48, 64).
  Keys ``lora_flat_n4096_s``, ``lora_flat_n4096_peak_mb`` (named for the
  default N).
* ``full``: every MiniLM parameter (22.7M, embeddings included, the word
  table through its token rows) at N = ``--n_full`` (256), traced kernel.
  Keys ``full_n256_s``, ``full_n256_peak_mb``.
* ``sketch``: at N = ``--n_sketch`` the exact LoRA kernel (traced), the pNTK
  and count sketches of ``--sketch_dims``, each against the exact one
  (:func:`ntkft.ntk.kernel_errors`): list ``sketch`` of
  ``{method, dim, rel_error, lambda_max_rel_error, kappa_rel_error, seconds,
  peak_mb, ...}``.
* ``operator``: Lanczos (``--lanczos_iters``) on ``ntk_vp_fn`` against the
  dense kernel's lambda_max at N = ``--n_operator``: ``operator_vs_dense``
  ``{n, lambda_max_rel_error, seconds}``.

The machine is shared: the load average at the start and end is reported
(``load_avg_*``); ``*_s``/``seconds`` are wall seconds of the kernel call
(compilation included: each is a single cold call, as a user would make it);
``*_cpu_s`` the CPU seconds (user + system) of the whole measuring process,
model loading included: on an idle machine with c cores the wall time is at
least cpu_s / c, so it tells what the load cost.
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

from ntkft import data, ntk, peft, spectral  # noqa: E402
from ntkft.models import HeadConfig, load_pretrained  # noqa: E402

BUCKETS = (16, 32, 48, 64)
PARTS = ("lora_flat", "full", "sketch", "operator")


def inputs(model, n, seq_len):
  examples = data.subsample(data.load_examples("sst2", "train", data.task_data_dir("sst2")),
                            n, seed=0)
  encoded = data.encode(data.load_tokenizer(model.source), examples, seq_len)
  return data.one_padded_batch(encoded, seq_len)


def lora_setup(n, seq_len):
  """(apply(p, x, frozen), trainable, frozen, x): LoRA r=8 q,v on layers 4, 5."""
  spec = peft.PeftSpec(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8,
                       head=False)
  model = load_pretrained("minilm-l6", HeadConfig(num_labels=2),
                          adapters=peft.adapters_for(spec, 6))
  trainable, frozen = peft.partition(model.params, peft.trainable_names(spec, model.params, 6))

  def apply(p, x, frozen):
    return model.apply_fn(peft.combine(p, frozen), x)

  return apply, trainable, frozen, inputs(model, n, seq_len)


def measure(what, args, out_path):
  """One measurement in this process; the kernel (if any) is saved to out_path."""
  t0 = time.perf_counter()
  budget = int(args.budget_mb * 2**20)        # --budget_mb (MiB) -> the API's bytes
  if what == "full":
    model = load_pretrained("minilm-l6", HeadConfig(num_labels=2))
    x = inputs(model, args.n_full, args.seq_len)
    fn = ntk.budgeted_ntk_fn(lambda p, x: model.apply_fn(p, x), memory_budget_bytes=budget,
                             sparse_tables={"embeddings/word/embedding": "input_ids"},
                             length_buckets=BUCKETS)
    t0 = time.perf_counter()
    k = fn(x, None, model.params)
    out = {"num_params": peft.count(model.params)}
  elif what == "operator":
    apply, trainable, frozen, x = lora_setup(args.n_operator, args.seq_len)
    t0 = time.perf_counter()
    matvec, n = ntk.ntk_vp_fn(apply, batch_size=64)(x, trainable, frozen)
    top, _ = spectral.lanczos_eigs(matvec, n, k=1, num_iters=args.lanczos_iters, which="top")
    k = None
    out = {"lambda_max": float(top[0])}
  else:
    n = args.n_flat if what == "lora_flat" else args.n_sketch
    apply, trainable, frozen, x = lora_setup(n, args.seq_len)
    if what == "lora_flat":
      fn = ntk.budgeted_ntk_fn(apply, (), memory_budget_bytes=budget, length_buckets=BUCKETS)
    elif what == "exact":
      fn = ntk.budgeted_ntk_fn(apply, memory_budget_bytes=budget, length_buckets=BUCKETS)
    elif what == "pntk":
      fn = ntk.pntk_fn(apply, memory_budget_bytes=budget, length_buckets=BUCKETS)
    else:
      fn = ntk.count_sketch_ntk_fn(apply, int(what.split(":")[1]), length_buckets=BUCKETS)
    t0 = time.perf_counter()
    k = fn(x, None, trainable, frozen)
    out = {"num_params": peft.count(trainable)}
  out["seconds"] = time.perf_counter() - t0
  usage = resource.getrusage(resource.RUSAGE_SELF)
  out["cpu_s"] = usage.ru_utime + usage.ru_stime          # whole process, loading included
  out["peak_mb"] = common.peak_rss_mb()
  if k is not None:
    out["shape"] = list(k.shape)
    np.save(out_path, k)
  return out


def child(what, args, tmp):
  out_path = os.path.join(tmp, what.replace(":", "_") + ".npy")
  cmd = [sys.executable, __file__, "--_child", what, "--_out", out_path] + [
      f"--{k}={v}" for k, v in vars(args).items()
      if k not in ("json", "only", "_child", "_out") and v is not None]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1]), out_path


def run(args) -> dict:
  parts = PARTS if args.only is None else tuple(args.only.split(","))
  unknown = set(parts) - set(PARTS)
  if unknown:
    raise SystemExit(f"--only: unknown parts {sorted(unknown)}; choose from {PARTS}")
  result = {"machine": common.machine(), "load_avg_start": os.getloadavg()[0],
            "budget_mb": args.budget_mb}
  with tempfile.TemporaryDirectory() as tmp:
    if "lora_flat" in parts:
      r, _ = child("lora_flat", args, tmp)
      result.update({f"lora_flat_n{args.n_flat}_s": r["seconds"],
                     f"lora_flat_n{args.n_flat}_peak_mb": r["peak_mb"],
                     f"lora_flat_n{args.n_flat}_cpu_s": r["cpu_s"]})
    if "full" in parts:
      r, _ = child("full", args, tmp)
      result.update({f"full_n{args.n_full}_s": r["seconds"],
                     f"full_n{args.n_full}_peak_mb": r["peak_mb"],
                     f"full_n{args.n_full}_cpu_s": r["cpu_s"],
                     "full_num_params": r["num_params"]})
    if "sketch" in parts:
      r, path = child("exact", args, tmp)
      exact = np.load(path)
      result["sketch_exact"] = {"n": args.n_sketch, "seconds": r["seconds"],
                                "cpu_s": r["cpu_s"], "peak_mb": r["peak_mb"]}
      rows = []
      for what in ["pntk"] + [f"count_sketch:{d}" for d in args.sketch_dims.split(",")]:
        r, path = child(what, args, tmp)
        method, _, dim = what.partition(":")
        errors = ntk.kernel_errors(np.load(path), exact)
        rows.append({"method": method, "dim": int(dim) if dim else None, **errors,
                     "seconds": r["seconds"], "cpu_s": r["cpu_s"], "peak_mb": r["peak_mb"]})
      result["sketch"] = rows
    if "operator" in parts:
      r, _ = child("operator", args, tmp)
      args_dense = argparse.Namespace(**{**vars(args), "n_sketch": args.n_operator})
      _, path = child("exact", args_dense, tmp)
      lam = np.linalg.eigvalsh(np.load(path))[-1]
      result["operator_vs_dense"] = {
          "n": args.n_operator, "lambda_max_rel_error": abs(r["lambda_max"] - lam) / lam,
          "seconds": r["seconds"], "cpu_s": r.get("cpu_s"), "lanczos_iters": args.lanczos_iters}
  result["load_avg_end"] = os.getloadavg()[0]
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--only", default=None, help=f"comma list of {PARTS}")
  parser.add_argument("--n_flat", type=int, default=4096)
  parser.add_argument("--n_full", type=int, default=256)
  parser.add_argument("--n_sketch", type=int, default=1024)
  parser.add_argument("--n_operator", type=int, default=128)
  parser.add_argument("--sketch_dims", default="1024,4096,16384")
  parser.add_argument("--lanczos_iters", type=int, default=30)
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--budget_mb", type=float, default=4096.0)
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    print(json.dumps(measure(args._child, args, args._out)))
    return
  common.emit(run(args), args.json)


if __name__ == "__main__":
  main()
