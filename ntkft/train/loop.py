"""The training loop: config -> model, data, state -> steps, evals, checkpoints.

Only this module and ``ntkft.run`` read the config; everything below takes
explicit arguments. Writes into ``workdir``::

  config.json      the resolved config
  metrics.jsonl    one JSON object per log/eval event (step, split, values)
  tb/              TensorBoard event files (same numbers)
  ckpt/<step>/     orbax checkpoints of the whole TrainState
  summary.json     task, mode, steps, loss, train_loss, dev_metric, param_distance, ...;
                   for MNLI also dev_metric_mismatched / dev_metrics_mismatched (the
                   mismatched counterpart of the eval split, as GLUE reports both)

Sharding (``ntkft.train.mesh``): the state is placed on the ``config.mesh`` device
mesh by name rules (replicated, or FSDP-split with ``config.fsdp``) and every
batch is split along ``"data"``; the jitted step has explicit in/out shardings
and donates the state. One device is the same code path with a 1-device mesh.
Checkpoints restore into the current mesh's shardings, whatever mesh wrote them.
With several processes (``ntkft.train.distributed``) each feeds its rows of the
same global batch, all take part in checkpointing, and only process 0 writes
logs and the summary.

Re-running the same command in the same workdir resumes from the last
checkpoint; data order is a pure function of (seed, step), so a resumed run ends
bit-identical to an uninterrupted one.
"""
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from ntkft import data, peft
from ntkft.evals import metrics as metrics_lib
from ntkft.linearize.gap import linearization_gap
from ntkft.models import blocks
from ntkft.theta0 import build_theta0
from ntkft.train import checkpoint, distributed, losses, optim, prefix_cache
from ntkft.train import mesh as mesh_lib
from ntkft.train import pull as pull_lib
from ntkft.train import step as step_lib
from ntkft.train.state import TrainState


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


def parse_kshot(value: str) -> tuple[int, int] | None:
  """``config.data.kshot`` -> (k, seed) of an LM-BFF few-shot split, or None for "".

  Raises:
    ValueError: anything but "" or "<k>-<seed>" with integers k >= 1, seed >= 0.
  """
  if not value:
    return None
  k, sep, seed = str(value).partition("-")
  if not (sep and k.isdigit() and seed.isdigit() and int(k) >= 1):
    raise ValueError(f"config.data.kshot={value!r}: expected '' (off) or '<k>-<seed>' "
                     "with integers k >= 1 and seed >= 0, e.g. '512-13'")
  return int(k), int(seed)


def data_dir_for(task, root, kshot: str):
  """Folder the splits of ``task`` are read from: GLUE's, or the k-shot folder."""
  parsed = parse_kshot(kshot)
  if parsed is None:
    return data.task_data_dir(task, root)
  return data.kshot_dir(root or data.default_data_root(), task, *parsed)


def load_data(config, task, tokenizer):
  """Encoded (train, eval split, mismatched eval split or None: MNLI's second dev set)
  exactly as a run of ``config`` sees them (subsamples drawn with ``config.seed``)."""
  d = config.data
  data_dir = data_dir_for(task, d.root, d.kshot)
  train = data.load_examples(task, d.train_split, data_dir)
  if d.n_train and d.n_train < len(train):
    train = data.subsample(train, d.n_train, seed=config.seed, stratified=d.stratified)

  def eval_set(split):
    examples = data.load_examples(task, split, data_dir)
    if d.n_eval and d.n_eval < len(examples):
      examples = data.subsample(examples, d.n_eval, seed=config.seed)
    return data.encode(tokenizer, examples, d.max_len)

  mismatched = task.mismatched_split(d.eval_split)
  return (data.encode(tokenizer, train, d.max_len), eval_set(d.eval_split),
          eval_set(mismatched) if mismatched else None)


def evaluate(eval_fn, state, batches, labels, task, is_regression, put_batch=lambda b: b,
             on_outputs=None):
  """Metrics of the model in ``state`` over ``batches`` (every example once).

  ``put_batch`` turns a host batch into the (sharded) arrays ``eval_fn`` takes;
  ``on_outputs(fed_batch, outputs)``, if given, sees every batch's outputs (e.g. to reuse
  them for the linearization gap).
  """
  preds = np.zeros(len(labels), dtype=np.float32 if is_regression else np.int64)
  loss_sum = 0.0
  for batch in batches:
    fed = put_batch(batch)
    out, loss = eval_fn(state, fed)
    if on_outputs is not None:
      on_outputs(fed, out)
    keep = batch["weights"] > 0
    preds[batch["index"][keep]] = np.asarray(losses.predictions(out, is_regression))[keep]
    loss_sum += float(loss) * keep.sum()
  result = metrics_lib.compute_metrics(task, preds, labels)
  result["loss"] = loss_sum / len(labels)
  return result


def _append_jsonl(path, record):
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path, last_step):
  """Drops records past ``last_step`` (written after the checkpoint we resume from)."""
  if not path.exists():
    return
  kept = [l for l in path.read_text().splitlines() if json.loads(l)["step"] <= last_step]
  path.write_text("".join(l + "\n" for l in kept))


def run(config, workdir: str) -> dict:
  """Trains as configured; returns (and writes) the summary dict."""
  t_start = time.time()
  distributed.initialize(config.get("distributed"))
  lead = jax.process_index() == 0  # only process 0 writes logs and the summary
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if lead:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  task = data.get_task(config.task)
  if config.mode not in step_lib.MODES:  # fail before loading anything
    raise ValueError(f"unknown mode {config.mode!r}; choose from {step_lib.MODES}")
  parse_kshot(config.data.kshot)
  loss_kind = losses.resolve(config.loss, task.is_regression)
  mesh = mesh_lib.make_mesh(config.get("mesh", (("data", -1),)))
  mesh_lib.check_batch_size(config.data.batch_size, mesh, "data.batch_size")
  mesh_lib.check_batch_size(config.data.eval_batch_size, mesh, "data.eval_batch_size")

  # Model and parameter subset at θ0.
  init = build_theta0(config)
  model, trainable, frozen = init.model, init.trainable, init.frozen
  print(f"model {config.model.name} ({model.source}); mode {config.mode}")
  print(peft.describe(trainable, frozen))

  # Data.
  tokenizer = data.load_tokenizer(model.source)
  train_enc, dev_enc, mismatched_enc = load_data(config, task, tokenizer)
  d = config.data
  stream = data.TrainStream(train_enc, d.batch_size, d.buckets, d.max_len, config.seed)
  dev_batches = data.eval_batches(dev_enc, d.eval_batch_size, d.buckets, d.max_len)
  train_eval_batches = data.eval_batches(train_enc, d.eval_batch_size, d.buckets, d.max_len)
  print(f"task {task.name}: {len(train_enc)} train / {len(dev_enc)} {d.eval_split} examples"
        + (f" (k-shot split {d.kshot})" if d.kshot else ""))

  # Optimizer, state, functions.
  # The pull, decided once; per-block selective pulls gate each layer.
  pull = pull_lib.Pull(config.lam, config.pull.form, config.pull.selective,
                       blocks.block_of_fn("layer"))
  o = config.optim
  total = config.train.steps
  lr = optim.schedule(o.lr, total, o.warmup_steps, o.decay)
  tx = optim.optimizer(o.name, lr, momentum=o.momentum, weight_decay=o.weight_decay,
                       clip_norm=o.clip_norm, grad_accum_steps=o.grad_accum_steps, pull=pull)
  state = TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable,
                     trainable0=jax.tree.map(jnp.copy, trainable), frozen=frozen,
                     # raw uint32 key data: checkpointable as a plain array
                     opt_state=tx.init(trainable), rng=jax.random.PRNGKey(config.seed))
  # Frozen prefix computed once per example (config.prefix_cache, ntkft.train.prefix_cache).
  cache = None
  if config.get("prefix_cache", False):
    cache = prefix_cache.PrefixCache.build(
        model, trainable, model.params,
        {"train": train_enc, "dev": dev_enc,
         **({} if mismatched_enc is None else {"mismatched": mismatched_enc})},
        d.eval_batch_size, d.buckets, d.max_len)
    print(f"prefix cache: layers < {cache.start} computed once per example")
  apply_fn = model.apply_fn if cache is None else cache.apply_fn  # (params, batch) -> outputs
  outputs_fn = step_lib.model_fn(config.mode, apply_fn)
  loss_fn = losses.loss_fn(loss_kind, task.num_labels, task.is_regression)
  # Place the state by the sharding rules (fresh and restored states then have
  # the same shardings, so a resumed run compiles the same program).
  state_shardings = mesh_lib.tree_shardings(state, mesh, fsdp=config.get("fsdp", False))
  state = mesh_lib.put(state, state_shardings)
  rep, batch_shd = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  print(f"mesh {dict(mesh.shape)} over {jax.device_count()} devices, "
        f"{jax.process_count()} process(es); fsdp={config.get('fsdp', False)}")
  train_step = jax.jit(functools.partial(
      step_lib.train_step, outputs_fn=outputs_fn, loss_fn=loss_fn, tx=tx, pull=pull),
      in_shardings=(state_shardings, batch_shd), out_shardings=(state_shardings, rep),
      donate_argnums=0)

  def eval_outputs(state, batch):
    out = step_lib.eval_outputs(state, batch, outputs_fn=outputs_fn)
    return out, loss_fn(out, batch)
  # Outputs replicated: every process reads all predictions.
  eval_fn = jax.jit(eval_outputs, in_shardings=(state_shardings, batch_shd),
                    out_shardings=(rep, rep))
  put = functools.partial(mesh_lib.global_batch, sharding=batch_shd)

  def feed(split):  # host batch of a split -> the (sharded) arrays the jitted functions take
    return put if cache is None else (lambda b: put(cache.attach(b, split)))

  # Resume.
  mngr = checkpoint.manager(workdir, config.train.ckpt_every, config.train.ckpt_keep)
  state, restored = checkpoint.restore_latest(mngr, state, state_shardings)
  start = int(state.step)
  log_path = workdir / "metrics.jsonl"
  if restored is not None:
    print(f"resumed from checkpoint at step {start}")
  if lead:
    if restored is None:
      log_path.unlink(missing_ok=True)
    else:
      _truncate_jsonl(log_path, start)
  writer = _tb_writer(workdir) if lead else None

  def log(step, split, values):
    if not lead:
      return
    _append_jsonl(log_path, {"step": step, "split": split, **values})
    if writer is not None:
      for k, v in values.items():
        writer.add_scalar(f"{split}/{k}", v, step)

  # Train.
  window = []
  bar = tqdm.tqdm(range(start, total), initial=start, total=total, desc=config.mode,
                  dynamic_ncols=True, disable=not (config.train.progress and lead))
  for s in bar:
    state, m = train_step(state, feed("train")(stream.batch(s)))
    loss = float(m["loss"])
    if s == start:
      t_first = time.time()
    if not (np.isfinite(loss) and bool(m["params_finite"])):
      mngr.wait_until_finished()
      what = f"training loss {loss}" if not np.isfinite(loss) else "parameters after the update"
      raise NonFiniteLossError(
          f"non-finite {what} at step {s} (0-based); the last good checkpoint "
          f"(step {mngr.latest_step()}) is kept in {mngr.directory}")
    window.append({k: v for k, v in jax.device_get(m).items() if k != "params_finite"})
    done = s + 1
    if done % config.train.log_every == 0 or done == total:
      mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
      if done - start > 1:  # rate after the first (compiling) step
        mean["examples_per_s"] = (done - start - 1) * d.batch_size / (time.time() - t_first)
      log(done, "train", mean)
      bar.set_postfix(loss=f"{mean['loss']:.4f}", ex_s=f"{mean.get('examples_per_s', 0):.0f}")
      window = []
    if config.train.eval_every and done % config.train.eval_every == 0 and done != total:
      log(done, d.eval_split, evaluate(eval_fn, state, dev_batches, dev_enc.labels, task,
                                       task.is_regression, feed("dev")))
    checkpoint.save(mngr, done, state, force=(done == total))
  mngr.wait_until_finished()

  # Final evaluation and summary.
  dev = evaluate(eval_fn, state, dev_batches, dev_enc.labels, task, task.is_regression,
                 feed("dev"))
  train_eval = evaluate(eval_fn, state, train_eval_batches, train_enc.labels, task,
                        task.is_regression, feed("train"))
  log(total, d.eval_split, dev)
  log(total, "train_eval", train_eval)
  gap = None
  if config.get("lin_gap", False) and config.mode == "nonlinear":  # on the eval split
    gap = linearization_gap(lambda p, fr, b: apply_fn(peft.combine(p, fr), b), state.trainable0,
                            state.trainable, state.frozen, dev_batches, feed("dev"))
    log(total, d.eval_split, gap)
  if mismatched_enc is not None:  # MNLI: GLUE reports matched and mismatched
    mismatched = evaluate(eval_fn, state, data.eval_batches(
        mismatched_enc, d.eval_batch_size, d.buckets, d.max_len), mismatched_enc.labels, task,
                          task.is_regression, feed("mismatched"))
    log(total, task.mismatched_split(d.eval_split), mismatched)
  delta = jax.tree.map(jnp.subtract, state.trainable, state.trainable0)
  summary = {
      "task": task.name, "mode": config.mode, "steps": int(state.step),
      "train_loss": train_eval["loss"], "dev_metric": dev[task.primary_metric],
      "dev_metric_name": task.primary_metric, "dev_metrics": dev, "train_metrics": train_eval,
      "param_distance": float(optax.tree.norm(delta)), "lam": config.lam,
      "num_trainable": peft.count(state.trainable), "n_train": len(train_enc),
      "n_eval": len(dev_enc), "loss": loss_kind, "wall_seconds": time.time() - t_start,
  }
  if gap is not None:
    summary["lin_gap"] = gap["lin_gap"]
  if mismatched_enc is not None:
    summary.update(dev_metric_mismatched=mismatched[task.primary_metric],
                   dev_metrics_mismatched=mismatched, n_eval_mismatched=len(mismatched_enc))
  if lead:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  if writer is not None:
    writer.close()
  print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
  return summary


def _tb_writer(workdir):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:  # optional
    return None
  return SummaryWriter(str(workdir / "tb"))
