"""Throughput of the mesh-sharded train step on 1, 2, 4, 8 (fake CPU) devices.

  python benchmarks/sharded_step.py [--json] [--devices 1,2,4,8] [--mode linearized]
      [--batch_size 32] [--seq_len 64] [--fsdp]

One subprocess per device count (the count is fixed when JAX starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=N``), each running the same
jitted step as ``ntkft.train.loop`` (state placed by ``ntkft.train.mesh`` rules,
batch split along ``"data"``, explicit in/out shardings, state donated) on
MiniLM with LoRA r=8 q/v + head and one batch of SST-2 sentences. Prints
seconds per step and examples/s per device count, plus the slowdown against
one device. Fake CPU devices share the same cores, so this shows the
partitioning overhead (collectives, per-shard dispatch), not a speedup; run it
on real accelerators for scaling numbers.
"""
import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def child(args):
  import jax
  import jax.numpy as jnp

  from ntkft import data, peft
  from ntkft.models import HeadConfig, load_pretrained
  from ntkft.train import losses, optim
  from ntkft.train import mesh as mesh_lib
  from ntkft.train import step as step_lib
  from ntkft.train.state import TrainState

  mesh = mesh_lib.make_mesh((("data", -1),))
  spec = peft.PeftSpec(methods=("lora",), layers=None, targets=("query", "value"), rank=8)
  model = load_pretrained(args.model, HeadConfig(num_labels=2),
                          adapters=peft.adapters_for(spec, 6))
  trainable, frozen = peft.partition(model.params, peft.trainable_names(spec, model.params, 6))
  examples = data.subsample(data.load_examples("sst2", "train", data.task_data_dir("sst2")),
                            args.batch_size, seed=0)
  encoded = data.encode(data.load_tokenizer(model.source), examples, args.seq_len)
  batch = data.eval_batches(encoded, args.batch_size, None, args.seq_len)[0]
  tx = optim.optimizer("adam", 1e-4)
  state = TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable,
                     trainable0=jax.tree.map(jnp.copy, trainable), frozen=frozen,
                     opt_state=tx.init(trainable), rng=jax.random.PRNGKey(0))
  shardings = mesh_lib.tree_shardings(state, mesh, fsdp=args.fsdp)
  state = mesh_lib.put(state, shardings)
  batch_shd = mesh_lib.batch_sharding(mesh)
  step = jax.jit(functools.partial(
      step_lib.train_step, outputs_fn=step_lib.model_fn(args.mode, model.apply_fn),
      loss_fn=losses.loss_fn("cross_entropy", 2, False), tx=tx),
      in_shardings=(shardings, batch_shd),
      out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
  batch = jax.device_put(batch, batch_shd)
  import time
  state, m = step(state, batch)  # compile
  jax.block_until_ready(m)
  times = []
  for _ in range(args.repeats):  # donated state: chain the steps
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  seconds = min(times)
  print(json.dumps({"devices": jax.device_count(), "mode": args.mode, "fsdp": args.fsdp,
                    "batch_size": args.batch_size, "seq_len": args.seq_len,
                    "seconds_per_step": seconds,
                    "examples_per_s": args.batch_size / seconds,
                    "loss": float(m["loss"])}))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--mode", default="linearized", choices=("linearized", "nonlinear"))
  parser.add_argument("--model", default="minilm-l6")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_len", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--fsdp", action="store_true")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)
  rows = []
  for n in [int(x) for x in args.devices.split(",")]:
    if args.batch_size % n:
      raise ValueError(f"--batch_size={args.batch_size} not divisible by {n} devices")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
      raise RuntimeError(f"{n} devices failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  base = rows[0]["seconds_per_step"]
  for r in rows:
    r["slowdown_vs_first"] = r["seconds_per_step"] / base
    if args.json:
      print(json.dumps(r))
  if not args.json:
    print(f"{args.mode} step, batch {args.batch_size} x {args.seq_len}, fsdp={args.fsdp}")
    print(f"{'devices':>8} {'s/step':>9} {'ex/s':>8} {'vs first':>9} {'loss':>8}")
    for r in rows:
      print(f"{r['devices']:>8} {r['seconds_per_step']:>9.3f} {r['examples_per_s']:>8.1f} "
            f"{r['slowdown_vs_first']:>8.2f}x {r['loss']:>8.4f}")


if __name__ == "__main__":
  main()
