"""Runs to merge: a finished ``ntkft.run`` workdir (or run file) as arrays, the θ0 check,
merged models.

  runs = load_runs(["runs/sst2", "runs/rte"])   # checked: one mode, one θ0, one LoRA layout
  taus = [run_task_vector(r) for r in runs]
  delta = vectors.weighted_sum(taus, [0.4, 0.4])
  for r in runs:
    metrics = evaluate(r, merged_trainable(r, delta), dev_set(r))

A run's checkpoint (``<workdir>/ckpt/<step>``, the whole ``TrainState``) holds
its trained θ_T = (φ_T, h_T), its θ0 = (φ0, h0) (``trainable0``) and the frozen
weights. :func:`save_run` keeps what merges need in one compact run file
(:mod:`ntkft.merge.run_file`: θ_T and θ0 of the trainable leaves, config, summary,
digests of the frozen leaves), and :func:`load_run` of that ``.npz`` gives the same
Run without the workdir (frozen weights rebuilt from the config and checked against
the digests), so its merges are the workdir's bit for bit (tested).

With δ the merged vector (Σ_t α_t τ_t, or λ τ_TIES), task t's merged model keeps its
own trained head h_t and the mode it was trained in:

  nonlinear:   f_t((φ0 + δ, h_t); x)
  linearized:  f_t(θ0; x) + J_t(θ0; x) (δ, h_t − h0_t)        (one jax.jvp)

so for linearized runs the merged outputs are f_t(θ0) + J_t Δh_t + Σ_s α_s J_t τ_s,
linear in the α's (tested task by task). Runs merge only when they share φ0 leaf
for leaf (same model, LoRA layout and seed: fresh leaves are keyed by name and
seed, so every task's A at θ0 is the same) and the frozen base model, and train
the same shared leaves with the same LoRA scaling.

Example sets: :func:`dev_set` (the run's eval split), :func:`validation_set`
(held-out examples of its training split, for choosing α without touching dev);
:func:`outputs_on` gives (N, O) outputs in example order; :func:`export_peft`
writes a merged model as a Hugging Face PEFT LoRA folder.
"""
import dataclasses
import json
import pathlib
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from ntkft import data, records, theta0
from ntkft.merge import run_file, vectors
from ntkft.models import flatten, peft_format, unflatten
from ntkft.peft import combine
from ntkft.train import checkpoint, loop, losses
from ntkft.train import step as step_lib
from ntkft.typing import Params


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run as arrays (numpy), with its model's jitted evaluation.

  Attributes:
    workdir: the run's folder, or its run file (``.npz``, :func:`save_run`).
    config: its ``config.json`` (a ConfigDict).
    step: the checkpoint step read.
    trainable, trainable0, frozen: nested dicts of the checkpointed TrainState (from a run
      file: θ_T and θ0 as stored, frozen rebuilt and checked).
    adapters: {module path: (rank, alpha)} of the model's LoRA adapters.
    adapter_specs: {module path: ``AdapterSpec``} of the same adapters (the PEFT export).
    family: the encoder family ("bert" | "roberta").
    apply_fn: the model, ``apply_fn(params, batch, rng=None) -> (B, O)`` on the combined
      (trainable + frozen) nested dict (``ntkft.models.Model.apply_fn``).
    eval_fn: jitted ``eval_fn(trainable, trainable0, frozen, batch) -> ((B, O) outputs,
      loss)`` of the run's mode (dropout off).
    source: the model folder (its tokenizer encodes the dev set).
    summary: its ``summary.json``, or None.
  """
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  step: int
  trainable: Params
  trainable0: Params
  frozen: Params
  adapters: dict
  adapter_specs: dict
  family: str
  apply_fn: Callable
  eval_fn: Callable
  source: pathlib.Path
  summary: dict | None

  @property
  def mode(self) -> str:
    return self.config.mode

  @property
  def task(self) -> data.TaskSpec:
    return data.get_task(self.config.task)


def load_run(source: str | pathlib.Path) -> Run:
  """A finished run as arrays, with its model (θ0 built from its config).

  ``source`` is an ``ntkft.run`` workdir (its last checkpoint is read) or a run file
  ``*.npz`` written by :func:`save_run` (θ_T and θ0 as stored; the frozen weights rebuilt
  by ``ntkft.theta0.build_theta0`` and checked leaf by leaf against the file's digests).

  Raises:
    FileNotFoundError: no config.json or no complete checkpoint in the workdir; no run file.
    ValueError: an unknown mode in its config; a run file that is not one, or whose
      rebuilt frozen weights or θ0 layout differ from the run's.
  """
  source = pathlib.Path(source)
  if source.suffix == ".npz":
    return _load_run_file(source)
  config_path = source / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"no config.json in {source} (not an ntkft.run workdir?)")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  _check_mode(config, config_path)
  state, step = checkpoint.restore_last_state(source)
  model = theta0.build_theta0(config).model
  return _run(source, config, step, state["trainable"], state["trainable0"], state["frozen"],
              model, records.finished_summary(source))


def _check_mode(config, where) -> None:
  if config.mode not in step_lib.MODES:
    raise ValueError(f"{where}: unknown mode {config.mode!r}; choose from {step_lib.MODES}")


def _run(where: pathlib.Path, config, step: int, trainable, trainable0, frozen, model,
         summary) -> Run:
  """The Run of these arrays (as numpy) and model, with its jitted evaluation."""
  task = data.get_task(config.task)
  outputs = step_lib.model_fn(config.mode, model.apply_fn)
  loss = losses.loss_fn(config.loss, task.num_labels, task.is_regression)

  def eval_fn(p, p0, frozen, batch):
    out = outputs(p, p0, frozen, batch, None)
    return out, loss(out, batch)

  as_numpy = lambda tree: jax.tree.map(np.asarray, tree)
  return Run(workdir=where, config=config, step=int(step), trainable=as_numpy(trainable),
             trainable0=as_numpy(trainable0), frozen=as_numpy(frozen),
             adapters={k: (a.rank, a.alpha) for k, a in model.adapters.items()},
             adapter_specs=dict(model.adapters), family=model.family,
             apply_fn=model.apply_fn, eval_fn=jax.jit(eval_fn), source=pathlib.Path(model.source),
             summary=summary)


def save_run(run: Run, path: str | pathlib.Path) -> pathlib.Path:
  """Writes the finished ``run`` as a compact run file ``path`` (``*.npz``, atomically):
  θ_T and θ0 of its trainable leaves (shared LoRA leaves and head, dtypes and bits kept),
  config, summary, step and the digests of its frozen leaves (:mod:`ntkft.merge.run_file`).
  :func:`load_run` of ``path`` then needs no workdir and merges bit for bit as ``run``.

  Raises:
    ValueError: the run has no summary.json (not finished), or ``path`` is not ``*.npz``.
  """
  if run.summary is None:
    raise ValueError(f"save_run: {run.workdir} has no summary.json (the run did not finish)")
  return run_file.write(
      path, config=run.config.to_dict(), summary=run.summary, step=run.step,
      trainable=flatten(run.trainable), trainable0=flatten(run.trainable0),
      frozen_digests={k: run_file.digest(v) for k, v in flatten(run.frozen).items()})


def _load_run_file(path: pathlib.Path) -> Run:
  """:func:`load_run` of a run file: θ_T and θ0 stored, the frozen weights rebuilt and checked."""
  stored = run_file.read(path)
  config = ml_collections.ConfigDict(stored["config"])
  _check_mode(config, path)
  init = theta0.build_theta0(config)
  rebuilt = {k: np.asarray(v) for k, v in flatten(init.trainable).items()}
  for name, x in sorted(stored["trainable0"].items()):
    y = rebuilt.get(name)
    if y is None or y.shape != x.shape or y.dtype != x.dtype:
      raise ValueError(f"{path}: trainable leaf {name!r} is not in the θ0 its config builds "
                       "with this shape and dtype (model or peft layout changed?)")
  if set(rebuilt) != set(stored["trainable0"]):
    raise ValueError(f"{path}: its config builds trainable leaves the run file lacks: "
                     f"{sorted(set(rebuilt) - set(stored['trainable0']))[:3]}")
  frozen = {k: np.asarray(v) for k, v in flatten(init.frozen).items()}
  want = stored["frozen_digests"]
  for name in sorted(set(frozen) | set(want)):
    if name not in frozen or name not in want or run_file.digest(frozen[name]) != want[name]:
      raise ValueError(f"{path}: frozen leaf {name!r} rebuilt from its config differs from "
                       "the run's (model folder or its loading changed?)")
  return _run(path, config, stored["step"], unflatten(stored["trainable"]),
              unflatten(stored["trainable0"]), init.frozen, init.model, stored["summary"])


def _shared(params: Params) -> dict:
  return {k: v for k, v in flatten(params).items() if not vectors.is_head(k)}


def check_same_theta0(a: Run, b: Run) -> None:
  """Refuses two runs whose shared θ0 (``trainable0`` and frozen leaves outside the head) differ.

  Raises:
    ValueError: one line naming both runs and the first differing leaf (sorted by name).
  """
  where = f"runs {a.workdir} and {b.workdir} do not share θ0 (same model, LoRA layout and seed)"
  for part in ("trainable0", "frozen"):
    fa, fb = _shared(getattr(a, part)), _shared(getattr(b, part))
    only = sorted(set(fa) ^ set(fb))
    if only:
      raise ValueError(f"{where}: {part} leaf {only[0]!r} is in only one of them")
    for name in sorted(fa):
      x, y = np.asarray(fa[name]), np.asarray(fb[name])
      if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
        raise ValueError(f"{where}: {part} leaf {name!r} differs")


def check_mergeable(runs: Sequence[Run]) -> str:
  """The runs' common mode, after checking that their task vectors can be added.

  Raises:
    ValueError: no runs; runs of different modes; θ0 differs (:func:`check_same_theta0`);
      other LoRA scalings (rank, alpha).
  """
  if not runs:
    raise ValueError("no runs to merge")
  first = runs[0]
  for r in runs[1:]:
    if r.mode != first.mode:
      raise ValueError(f"runs mix modes: {first.workdir} is {first.mode}, {r.workdir} is "
                       f"{r.mode}; merge runs of one mode")
    check_same_theta0(first, r)
    if r.adapters != first.adapters:
      raise ValueError(f"runs {first.workdir} and {r.workdir} have different LoRA adapters "
                       "(module paths, rank or alpha); their task vectors do not add")
  return first.mode


def load_runs(workdirs: Sequence[str | pathlib.Path]) -> list[Run]:
  """:func:`load_run` of each workdir or run file, checked by :func:`check_mergeable`; the
  runs then hold one copy of the (equal) frozen base model."""
  runs = [load_run(w) for w in workdirs]
  check_mergeable(runs)
  base = _shared(runs[0].frozen)
  return [dataclasses.replace(r, frozen=combine(base, r.frozen)) for r in runs]


def run_task_vector(run: Run) -> dict:
  """τ = φ_T − φ0 of a run (float64; its shared trainable leaves)."""
  return vectors.task_vector(run.trainable, run.trainable0)


def merged_trainable(run: Run, delta: Params) -> dict:
  """(φ0 + δ, h_T): the run's θ0 moved by the merged vector ``delta``, with its trained head."""
  head = {k: v for k, v in flatten(run.trainable).items() if vectors.is_head(k)}
  return combine(head, vectors.apply_vector(run.trainable0, delta))


def dev_set(run: Run, n_eval: int = 0) -> data.Encoded:
  """The run's eval split as its run encoded it (``ntkft.train.loop.load_data``); with
  ``n_eval`` > 0, that many examples drawn with the run's seed instead (a run with
  ``data.n_eval=n_eval`` would see these)."""
  config = ml_collections.ConfigDict(run.config.to_dict())
  if n_eval:
    config.data.n_eval = int(n_eval)
  _, dev, _ = loop.load_data(config, run.task, data.load_tokenizer(run.source))
  return dev


def outputs(run: Run, trainable: Params, batch: dict) -> jax.Array:
  """(B, O) outputs of the run's model (its mode, at its θ0) with parameters ``trainable``."""
  return run.eval_fn(trainable, run.trainable0, run.frozen, batch)[0]


def evaluate(run: Run, trainable: Params, encoded: data.Encoded) -> dict:
  """The task's metrics (and mean loss) of the run's model at ``trainable`` on ``encoded``,
  batched as the run's final evaluation was (``ntkft.train.loop.evaluate``)."""
  d, task = run.config.data, run.task
  batches = data.eval_batches(encoded, d.eval_batch_size, d.buckets, d.max_len)
  eval_fn = lambda p, batch: run.eval_fn(p, run.trainable0, run.frozen, batch)
  return loop.evaluate(eval_fn, trainable, batches, encoded.labels, task, task.is_regression)


def training_indices(train: data.Examples, n_train: int, seed: int, stratified: bool) -> np.ndarray:
  """Sorted indices into ``train`` of the subset a run with ``data.n_train=n_train`` trains on.

  ``ntkft.train.loop.load_data`` draws it with ``data.subsample(train, n_train, seed)``
  (all of ``train`` when n_train is 0 or not smaller); the indices are re-derived from
  that draw and checked against it example for example.

  Raises:
    ValueError: a stratified subset (not re-derived here), or a draw that no longer
      matches ``data.subsample``.
  """
  if not n_train or n_train >= len(train):
    return np.arange(len(train))
  if stratified:
    raise ValueError(f"{train.task} {train.split}: held-out examples need an unstratified "
                     "training subset (data.stratified=False)")
  chosen = np.sort(np.random.default_rng(seed).choice(len(train), size=n_train, replace=False))
  subset, mine = data.subsample(train, n_train, seed=seed), train.select(chosen)
  if (subset.text_a != mine.text_a or subset.text_b != mine.text_b
      or not np.array_equal(subset.labels, mine.labels)):
    raise ValueError(f"{train.task} {train.split}: the re-derived training subset differs from "
                     "data.subsample's draw (update training_indices)")
  return chosen


def validation_set(run: Run, n: int, seed) -> data.Encoded:
  """``n`` examples of the run's training split outside its training subset, encoded as its
  examples were (split order; tokenizer and max_len of the run).

  Drawn without replacement with ``np.random.default_rng(seed)`` (e.g. ``seed=[22, s]``)
  from the split minus :func:`training_indices`, so runs of one seed and task (both modes)
  get the same examples, and none is a training or dev example.

  Raises:
    ValueError: fewer than ``n`` examples left, or ``n`` < 1.
  """
  d, task = run.config.data, run.task
  train = data.load_examples(task, d.train_split, loop.data_dir_for(task, d.root, d.kshot))
  pool = np.setdiff1d(np.arange(len(train)),
                      training_indices(train, d.n_train, run.config.seed, d.stratified))
  if not 1 <= n <= len(pool):
    raise ValueError(f"validation_set of {run.workdir}: n={n} must be in [1, {len(pool)}] "
                     f"({len(pool)} {task.name} {d.train_split} examples are not trained on)")
  chosen = np.sort(pool[np.random.default_rng(seed).choice(len(pool), size=n, replace=False)])
  return data.encode(data.load_tokenizer(run.source), train.select(chosen), d.max_len)


def outputs_on(run: Run, trainable: Params, encoded: data.Encoded) -> np.ndarray:
  """(N, O) outputs of the run's model (its mode) at ``trainable`` on every example of
  ``encoded``, row i example i; batched as the run's evaluation (``data.eval_batches``)."""
  d = run.config.data
  out = None
  for batch in data.eval_batches(encoded, d.eval_batch_size, d.buckets, d.max_len):
    y = np.asarray(outputs(run, trainable, batch))
    if out is None:
      out = np.zeros((len(encoded),) + y.shape[1:], y.dtype)
    keep = batch["weights"] > 0
    out[batch["index"][keep]] = y[keep]
  return out


def export_peft(run: Run, delta: Params, folder: str | pathlib.Path) -> str:
  """Writes the run's merged model (φ0 + δ, h_T) as a Hugging Face PEFT LoRA folder
  (``ntkft.models.peft_format``: with pooling "cls" the head too); returns a note ("" if none).

  A linearized run's merged weights are written as they are; PEFT runs them through the
  nonlinear network, not the tangent model (the note says so).

  Raises:
    ValueError: the run trains more than LoRA (+ head).
  """
  methods = tuple(run.config.peft.methods)
  if methods != ("lora",):
    raise ValueError(f"{run.workdir}: peft.methods={methods} cannot be written as a PEFT LoRA "
                     "adapter (only 'lora', with or without the head)")
  params = {k: np.asarray(v) for k, v in
            flatten(combine(merged_trainable(run, delta), run.frozen)).items()}
  config, tensors, note = peft_format.to_peft(params, run.adapter_specs, run.family,
                                              run.config.model.pooling, str(run.source))
  peft_format.write_adapter(folder, config, tensors)
  if run.mode == "linearized":
    note = " ".join(filter(None, [note, "mode='linearized': PEFT applies these weights to the "
                                  "nonlinear network, not to the tangent model"]))
  return note
