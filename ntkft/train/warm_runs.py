"""Many short fine-tuning runs from one θ0 in one warm process (the studies' runner).

``ntkft.train.loop.run`` is one full run: a config in, a workdir with
checkpoints, logs and a summary out. The studies (``experiments.kappa_study``,
``experiments.selection_study``) train hundreds of short runs that share a
model, a task's data and a seed and differ in which encoder layers train, the
loss, the optimizer, λ and η. :class:`WarmRuns` trains each of them in memory
with the loop's pieces — the pure step (``step.train_step``), the data order
(``data.TrainStream``), the evaluation (``loop.evaluate``) and the
linearization gap — and the loop's numbers up to float32 summation order
(``tests/train/warm_runs_test.py``), but pays only for training:

* θ0 is built once per (task, seed): the model with LoRA on every layer
  (``ntkft.theta0.build_theta0``; fresh leaves keyed by name, B = 0). A run of
  layers S trains the LoRA leaves of S (+ head); the other layers' LoRA stays
  frozen at B = 0, which leaves the function, the gradients and θ0 those of a
  model with LoRA on S only;
* the frozen prefix below a run's lowest trained layer is computed once per
  start layer (``prefix_cache``) and shared by every run that starts there;
* λ, and η of SGD at a constant step, are arguments of the compiled step, and
  every compiled function is kept for the process (:data:`_COMPILED`, keyed by
  what shapes the program), so a run whose program was seen before pays no
  tracing or compilation;
* no checkpoint, no log file: the loss curve is returned.

A run whose loss or parameters become non-finite stops there and is returned
with the outcomes of its last finite state, ``diverged=True`` and the step.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkft import data, peft
from ntkft.linearize.gap import gap_from_sums, gap_sums_given_outputs_fn
from ntkft.models import flatten
from ntkft.models.blocks import encoder_layer_index
from ntkft.theta0 import build_theta0
from ntkft.train import losses, optim, prefix_cache
from ntkft.train import pull as pull_lib
from ntkft.train import step as step_lib
from ntkft.train.loop import evaluate, load_data
from ntkft.train.state import TrainState

# (model structure, trainable names, start layer, mode, loss, optimizer) -> compiled
# functions. Parameters are always arguments, never constants.
_COMPILED: dict = {}

# Config fields every run of one WarmRuns shares with it (the group's θ0 and data).
_GROUP_FIELDS = ("task", "seed", "model", "data")
_PEFT_GROUP_FIELDS = ("methods", "targets", "rank", "alpha", "dropout", "init", "head")


def _layers_of(value) -> tuple[int, ...]:
  layers = peft.PeftSpec.from_config({"layers": value}).layers
  if not isinstance(layers, tuple):
    raise ValueError(f"warm runs need explicit peft.layers, got {value!r}")
  return tuple(int(i) for i in layers)


def _injected_sgd(o) -> bool:
  """SGD at a constant step without clipping: η can be an argument (optax.inject_hyperparams)."""
  return (o.name == "sgd" and o.decay == "constant" and not o.warmup_steps and not o.momentum
          and not o.clip_norm and o.grad_accum_steps == 1)


def _transform(o, steps: int):
  """(optax transform, whether its lr is injected) of ``config.optim`` ``o``."""
  if _injected_sgd(o):
    return optax.inject_hyperparams(optax.sgd)(learning_rate=float(o.lr)), True
  lr = optim.schedule(o.lr, steps, o.warmup_steps, o.decay)
  return optim.optimizer(o.name, lr, momentum=o.momentum, weight_decay=o.weight_decay,
                         clip_norm=o.clip_norm, grad_accum_steps=o.grad_accum_steps), False


class WarmRuns:
  """The runs of one (task, seed): shared θ0, data, prefix states and compiled functions.

  Args:
    config: a ``configs/glue_common.py`` config of the group; its ``peft.layers``
      is ignored (θ0 has LoRA on every layer) and ``prefix_cache`` must be on.
  """

  def __init__(self, config):
    self.config = config
    every = config.copy_and_resolve_references()
    every.peft.layers = "all"
    self.start = build_theta0(every)
    self.model = self.start.model
    self.task = data.get_task(config.task)
    if self.task.is_regression or self.task.mismatched_split(config.data.eval_split):
      raise ValueError(f"warm runs support single-dev-set classification, not {config.task}")
    self.train_enc, self.dev_enc, _ = load_data(config, self.task,
                                                data.load_tokenizer(self.model.source))
    d = config.data
    self.stream = data.TrainStream(self.train_enc, d.batch_size, d.buckets, d.max_len,
                                   config.seed)
    self.dev_batches = data.eval_batches(self.dev_enc, d.eval_batch_size, d.buckets, d.max_len)
    # No batch larger than its split: padding rows would cost a forward each.
    self.train_eval_batches = data.eval_batches(
        self.train_enc, min(d.eval_batch_size, len(self.train_enc.labels)), d.buckets, d.max_len)
    self.num_layers = self.model.config.num_layers
    self._caches = {}
    self._structure = repr((self.model.config, self.model.head, self.model.adapters))

  def kernel_inputs(self) -> tuple[dict, np.ndarray]:
    """The n_train examples as one batch padded to their length bucket, and their labels
    (rows in the batch's order)."""
    d = self.config.data
    batch = data.eval_batches(self.train_enc, len(self.train_enc.labels), d.buckets,
                              d.max_len)[0]
    x = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    return x, np.asarray(batch["labels"])

  def split(self, layers) -> tuple[dict, dict]:
    """(trainable, frozen) of a run of ``layers``: their LoRA leaves + the head train."""
    layers = set(layers)
    bad = sorted(i for i in layers if not 0 <= i < self.num_layers)
    if bad:
      raise ValueError(f"layer index {bad[0]} out of range: the model has {self.num_layers}")
    # Leaves outside the encoder layers (the head) train in every run.
    names = [n for n in flatten(self.start.trainable)
             if encoder_layer_index(n) in (None, *layers)]
    return peft.partition(self.model.params, names)

  def _cache(self, start: int, trainable) -> prefix_cache.PrefixCache:
    if start not in self._caches:
      d = self.config.data
      self._caches[start] = prefix_cache.PrefixCache.build(
          self.model, trainable, self.model.params,
          {"train": self.train_enc, "dev": self.dev_enc}, d.eval_batch_size, d.buckets,
          d.max_len)
    return self._caches[start]

  def _check(self, c) -> None:
    for field in _GROUP_FIELDS:
      if c[field] != self.config[field]:
        raise ValueError(f"warm run config differs from its group in {field!r}: "
                         f"{c[field]!r} != {self.config[field]!r}")
    for field in _PEFT_GROUP_FIELDS:
      if c.peft[field] != self.config.peft[field]:
        raise ValueError(f"warm run config differs from its group in peft.{field!r}")
    if c.pull.form != "loss" or c.pull.selective != "none":
      raise ValueError("warm runs support pull.form='loss', pull.selective='none' only")
    if c.mode not in step_lib.MODES:
      raise ValueError(f"unknown mode {c.mode!r}; choose from {step_lib.MODES}")
    if not c.get("prefix_cache", False):
      raise ValueError("warm runs need prefix_cache=True")

  def _functions(self, names, start, cache, c, loss_kind):
    o = c.optim
    tx, injected = _transform(o, c.train.steps)
    optim_key = tuple(sorted((k, v) for k, v in o.items() if not (injected and k == "lr")))
    key = (self._structure, tuple(names), start, c.mode, loss_kind, optim_key, c.train.steps)
    if key not in _COMPILED:
      outputs_fn = step_lib.model_fn(c.mode, cache.apply_fn)
      loss_fn = losses.loss_fn(loss_kind, self.task.num_labels, self.task.is_regression)

      def train(state, batch, lam):
        return step_lib.train_step(state, batch, outputs_fn=outputs_fn, loss_fn=loss_fn,
                                   tx=tx, pull=pull_lib.Pull(lam, "loss", "none"))

      def evaluate_batch(state, batch):
        out = step_lib.eval_outputs(state, batch, outputs_fn=outputs_fn)
        return out, loss_fn(out, batch)

      gap = gap_sums_given_outputs_fn(lambda p, fr, b: cache.apply_fn(peft.combine(p, fr), b))
      _COMPILED[key] = dict(tx=tx, injected=injected, train=jax.jit(train),
                            eval=jax.jit(evaluate_batch), gap=gap)
    return _COMPILED[key]

  def run(self, c) -> dict:
    """Trains the run of config ``c`` (same group fields); returns its outcomes.

    Returns:
      train_loss (the regime's loss without the pull, one pass over the training
      set), dev_metric, dev_metric_name, dev_metrics, lin_gap (nonlinear runs),
      param_distance, steps, curve [(step, mean loss since the last log)], lr,
      lam, diverged, diverged_step, num_trainable, seconds, train_seconds.
    """
    t0 = time.time()
    self._check(c)
    layers = _layers_of(c.peft.layers)
    loss_kind = losses.resolve(c.loss, self.task.is_regression)
    trainable, frozen = self.split(layers)
    names = sorted(flatten(trainable))
    start = prefix_cache.lowest_trained_layer(names, self.num_layers)
    cache = self._cache(start, trainable)
    fns = self._functions(names, start, cache, c, loss_kind)
    opt_state = fns["tx"].init(trainable)
    if fns["injected"]:
      opt_state.hyperparams["learning_rate"] = jnp.asarray(c.optim.lr, jnp.float32)
    state = TrainState(step=jnp.zeros([], jnp.int32), trainable=trainable,
                       trainable0=jax.tree.map(jnp.copy, trainable), frozen=frozen,
                       opt_state=opt_state, rng=jax.random.PRNGKey(c.seed))
    lam = jnp.asarray(c.lam, jnp.float32)
    total, log_every = c.train.steps, c.train.log_every
    curve, window, diverged_step = [], [], None
    t_train = time.time()
    for s in range(total):
      new, m = fns["train"](state, cache.attach(self.stream.batch(s), "train"), lam)
      loss = float(m["loss"])
      if not np.isfinite(loss):  # state (before this step) is the last finite one
        diverged_step = s
        break
      if not bool(m["params_finite"]):  # the loss of state was finite, the update is not
        diverged_step = s
        break
      state = new
      window.append(loss)
      if (s + 1) % log_every == 0 or s + 1 == total:
        curve.append((s + 1, float(np.mean(window))))
        window = []
    train_seconds = time.time() - t_train

    def feed(split):
      return lambda b: cache.attach(b, split)

    gap_pairs = []
    want_gap = c.get("lin_gap", False) and c.mode == "nonlinear"

    def gap_of_batch(fed, out):  # the evaluation's outputs are f(θ_T): one jvp more per batch
      if want_gap:
        gap_pairs.append(fns["gap"](state.trainable0, state.trainable, state.frozen, fed, out))

    dev = evaluate(fns["eval"], state, self.dev_batches, self.dev_enc.labels, self.task,
                   False, feed("dev"), on_outputs=gap_of_batch)
    train_eval = evaluate(fns["eval"], state, self.train_eval_batches, self.train_enc.labels,
                          self.task, False, feed("train"))
    gap = gap_from_sums(gap_pairs)["lin_gap"] if want_gap else None
    delta = jax.tree.map(jnp.subtract, state.trainable, state.trainable0)
    return {"train_loss": train_eval["loss"], "dev_metric": dev[self.task.primary_metric],
            "dev_metric_name": self.task.primary_metric, "dev_metrics": dev,
            "lin_gap": gap, "param_distance": float(optax.tree.norm(delta)),
            "steps": int(state.step), "curve": curve, "lr": float(c.optim.lr),
            "lam": float(c.lam), "diverged": diverged_step is not None,
            "diverged_step": diverged_step, "num_trainable": peft.count(trainable),
            "seconds": time.time() - t0, "train_seconds": train_seconds}
