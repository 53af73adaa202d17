"""ntkft.merge against closed forms: TIES by hand, one run at α = 1 is the run, tangent merges
are linear in the task vectors, run files merge as their (deleted) workdirs bit for bit, the
θ0 and mode checks, the command's errors; the sums of stored tangents against the merged
models, the θ0 Jacobian against the tangent, the localization energies against an SVD, ξ
and the α rules by hand, held-out validation examples, and a merged PEFT export that
reloads to the merged logits.

Four tiny runs (a 1-layer random BERT of ``tests.test_util``, 32 examples, 4 steps), one
θ0 (seed 0, LoRA r=8 on query/value of its layer): linearized SST-2, linearized STS-B
(another head: one output, squared loss), nonlinear SST-2 and nonlinear STS-B. The module
shares one persistent compilation cache (``xla_cache``): every run loaded again (from its
workdir, its run file, or by the command) reads its programs back instead of compiling them.
"""
import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import glue_common
from ntkft import data, merge
from ntkft.merge import cli as merge_cli
from ntkft.merge import run_file
from ntkft.models import HeadConfig, flatten, load_pretrained, unflatten
from ntkft.peft import combine
from ntkft.train import loop
from tests import test_util
from tests.conftest import REPO

RUNS = {"lin_sst2": ("sst2", "linearized"), "lin_stsb": ("stsb", "linearized"),
        "nonlin_sst2": ("sst2", "nonlinear"), "nonlin_stsb": ("stsb", "nonlinear")}


def _config(model_dir, task, mode):
  c = glue_common.get_config(f"runlocal,task={task}", mode=mode)
  c.model.name = str(model_dir)
  c.data.update(n_train=32, n_eval=32, max_len=32, buckets=(32,), batch_size=16,
                eval_batch_size=32)
  c.optim.warmup_steps = 1
  c.train.update(steps=4, ckpt_every=4, log_every=2, progress=False)
  return c


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory, xla_cache):
  """{name: workdir} of the four finished runs (same θ0)."""
  model_dir = test_util.tiny_bert_for_glue_runs(tmp_path_factory.mktemp("merge_tiny"),
                                                num_layers=1)
  root = tmp_path_factory.mktemp("merge_runs")
  for name, (task, mode) in RUNS.items():
    loop.run(_config(model_dir, task, mode), str(root / name))
  return {name: root / name for name in RUNS}


@pytest.fixture(scope="module")
def runs(workdirs):
  return {name: merge.load_run(w) for name, w in workdirs.items()}


def _batch(run):
  d = run.config.data
  (batch,) = data.eval_batches(merge.dev_set(run), d.eval_batch_size, d.buckets, d.max_len)
  return batch


# -- TIES and the algebra, by hand --------------------------------------------------------------

def test_ties_on_hand_made_vectors():
  # d = 6 entries per vector, k = 0.5: as the authors' topk_values_mask, keep |x| >= the
  # (d - floor(k d)) = 3rd smallest |x|: the 4 largest, more on ties.
  t1 = {"a": np.array([[1.0, -2.0], [5.0, 3.0]]), "b": np.array([-0.1, 4.0])}
  t2 = {"a": np.array([[-3.0, 1.0], [2.0, -0.2]]), "b": np.array([2.0, -1.0])}
  t3 = {"a": np.array([[2.0, 0.5], [-1.0, -4.0]]), "b": np.array([-2.0, 0.2])}
  # Coordinates (a00 a01 a10 a11 b0 b1); trimmed (threshold 2, 1, 1):
  #   t1: 0 -2 5 3 0 4;  t2: -3 1 2 0 2 -1 (a tie: 5 kept);  t3: 2 0 -1 -4 -2 0.
  # sums -1 -1 6 -1 0 3 -> signs - - + - 0 +; b0 gets the majority sign(-1-1+1-1+0+1) = -.
  # disjoint means: a00 {-3}, a01 {-2}, a10 {5, 2} -> 3.5, a11 {-4}, b0 {-2}, b1 {4}.
  out = merge.ties_merge([t1, t2, t3], k=0.5)
  np.testing.assert_array_equal(out["a"], [[-3.0, -2.0], [3.5, -4.0]])
  np.testing.assert_array_equal(out["b"], [-2.0, 4.0])
  # k = 1 keeps everything; one vector merges to itself.
  np.testing.assert_array_equal(merge.ties_merge([t1], k=1.0)["a"], t1["a"])
  # weighted sum and negation.
  s = merge.weighted_sum([t1, t2], [0.5, -2.0])
  np.testing.assert_array_equal(s["b"], 0.5 * t1["b"] - 2.0 * t2["b"])
  np.testing.assert_array_equal(merge.negate(t3)["a"], -t3["a"])
  with pytest.raises(ValueError, match="kept fraction"):
    merge.ties_merge([t1], k=0.0)


# -- Runs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lin_sst2", "nonlin_sst2"])
def test_one_run_at_alpha_one_is_the_run(runs, name):
  run = runs[name]
  delta = merge.weighted_sum([merge.run_task_vector(run)], [1.0])
  merged = merge.merged_trainable(run, delta)
  for leaf, value in flatten(run.trainable).items():  # φ0 + (φ_T − φ0) rounds back to φ_T
    np.testing.assert_array_equal(flatten(merged)[leaf], value, leaf)
  assert any(np.any(v != 0) for v in jax.tree.leaves(delta))
  batch = _batch(run)
  np.testing.assert_array_equal(merge.outputs(run, merged, batch),
                                merge.outputs(run, run.trainable, batch))


def test_tangent_merge_is_linear_in_the_task_vectors(runs):
  pair = [runs["lin_sst2"], runs["lin_stsb"]]
  merge.check_mergeable(pair)
  alphas = [0.7, -0.4]
  taus = [merge.run_task_vector(r) for r in pair]
  delta = merge.weighted_sum(taus, alphas)
  for run in pair:
    apply_fn = run.apply_fn
    batch = _batch(run)
    p0 = jax.tree.map(jnp.asarray, run.trainable0)
    names = flatten(run.trainable0)

    def tangent(shared=None, head=False, run=run, names=names):
      """The full-θ direction (τ on the shared leaves and/or the head's Δh), zeros elsewhere."""
      t, flat_trained, flat0 = {}, flatten(run.trainable), flatten(run.trainable0)
      for k in names:
        if merge.is_head(k):
          t[k] = (flat_trained[k] - flat0[k]) if head else np.zeros_like(flat0[k])
        else:
          t[k] = (flatten(shared)[k].astype(flat0[k].dtype) if shared is not None
                  else np.zeros_like(flat0[k]))
      return jax.tree.map(jnp.asarray, unflatten(t))

    @jax.jit
    def jvp(p, frozen, batch, t, apply_fn=apply_fn):  # (f(θ0), J(θ0) t)
      return jax.jvp(lambda q: apply_fn(combine(q, frozen), batch), (p,), (t,))

    f0, j_head = jvp(p0, run.frozen, batch, tangent(head=True))
    expected = f0 + j_head
    for alpha, tau in zip(alphas, taus):
      expected = expected + alpha * jvp(p0, run.frozen, batch, tangent(shared=tau))[1]
    got = merge.outputs(run, merge.merged_trainable(run, delta), batch)
    test_util.assert_close(got, expected, rtol=1e-4, atol_scale=1e-5,
                           err_msg=run.task.name)
    assert not np.allclose(got, merge.outputs(run, run.trainable, batch))  # the merge moved it


@pytest.mark.parametrize("name", ["lin_sst2", "nonlin_sst2"])
def test_command_reproduces_the_summary_dev_metric(workdirs, tmp_path, name):
  result = merge_cli.merge([str(workdirs[name])], "1", "sum", str(tmp_path))
  written = json.loads((tmp_path / "merge.json").read_text())
  assert written["method"] == "sum" and written["alpha"] == [1.0]
  assert written["mode"] == RUNS[name][1] and written["runs"] == [str(workdirs[name])]
  (task,) = written["tasks"]
  summary = json.loads((workdirs[name] / "summary.json").read_text())
  assert task["task"] == "sst2" and task["dev_metric_name"] == "accuracy"
  assert task["n_eval"] == summary["n_eval"] == 32
  assert task["dev_metric"] == summary["dev_metric"] == task["single_task_dev_metric"]
  assert result["tasks"][0]["dev_metric"] == summary["dev_metric"]


@pytest.mark.parametrize("mode", ["lin", "nonlin"])
def test_run_files_merge_as_the_workdirs_after_these_are_deleted(workdirs, tmp_path, mode):
  """A run file written from a (copied) workdir, the copy then deleted: the file holds the
  checkpoint's θ_T and θ0 bit for bit (float32), and the merge from the run files (task
  vectors, merged outputs, the command's metrics) equals the merge from the workdirs bit for
  bit."""
  names = [f"{mode}_sst2", f"{mode}_stsb"]
  files = []
  for name in names:
    copy = tmp_path / "runs" / name
    shutil.copytree(workdirs[name], copy)
    files.append(merge.save_run(merge.load_run(copy), tmp_path / "points" / f"{name}.npz"))
    shutil.rmtree(copy)
  assert not (tmp_path / "runs" / names[0]).exists() and not list(tmp_path.rglob("*.tmp"))
  from_dirs = merge.load_runs([workdirs[n] for n in names])
  from_files = merge.load_runs(files)
  for a, b in zip(from_dirs, from_files):
    assert b.workdir.suffix == ".npz" and (a.step, a.mode, a.summary) == (b.step, b.mode,
                                                                           b.summary)
    for part in ("trainable", "trainable0", "frozen"):
      fa, fb = flatten(getattr(a, part)), flatten(getattr(b, part))
      assert sorted(fa) == sorted(fb), part
      for leaf in fa:
        assert fb[leaf].dtype == fa[leaf].dtype, (part, leaf)
        assert part == "frozen" or fa[leaf].dtype == np.float32, (part, leaf)
        np.testing.assert_array_equal(fb[leaf], fa[leaf], f"{part} {leaf}")
  alphas = [0.6, -0.3]
  delta_a = merge.weighted_sum([merge.run_task_vector(r) for r in from_dirs], alphas)
  delta_b = merge.weighted_sum([merge.run_task_vector(r) for r in from_files], alphas)
  for x, y in zip(jax.tree.leaves(delta_a), jax.tree.leaves(delta_b)):
    np.testing.assert_array_equal(y, x)
  for a, b in zip(from_dirs, from_files):
    dev = merge.dev_set(a)
    want = merge.outputs_on(a, merge.merged_trainable(a, delta_a), dev)
    np.testing.assert_array_equal(merge.outputs_on(b, merge.merged_trainable(b, delta_b), dev),
                                  want, a.task.name)
    assert not np.array_equal(want, merge.outputs_on(a, a.trainable, dev))  # the merge moved it
  by_dir = merge_cli.merge([str(workdirs[n]) for n in names], "0.6,-0.3")
  by_file = merge_cli.merge([str(f) for f in files], "0.6,-0.3")
  assert by_file["runs"] == [str(f) for f in files] and by_file["mode"] == by_dir["mode"]
  keys = ("task", "step", "dev_metric", "dev_metrics", "n_eval", "single_task_dev_metric")
  assert ([{k: t[k] for k in keys} for t in by_file["tasks"]]
          == [{k: t[k] for k in keys} for t in by_dir["tasks"]])


def test_run_file_round_trip_and_refusals(workdirs, tmp_path):
  """read(write(x)) is x; a file whose frozen digests differ from the rebuilt weights, a
  non-run-file npz, a missing file and an unfinished run are refused in one line each."""
  assert run_file.digest(np.zeros(2, np.float32)) != run_file.digest(np.zeros(2, np.float64))
  assert run_file.digest(np.zeros(2)) != run_file.digest(np.zeros((1, 2)))
  assert run_file.digest(np.array([0.0])) != run_file.digest(np.array([-0.0]))  # bits, not ==
  assert run_file.digest(np.arange(6.0).reshape(2, 3).T) == run_file.digest(
      np.array([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]))
  run = merge.load_run(workdirs["lin_stsb"])
  stored = run_file.read(merge.save_run(run, tmp_path / "a.npz"))
  assert stored["step"] == run.step and stored["summary"] == run.summary
  assert stored["config"] == json.loads((workdirs["lin_stsb"] / "config.json").read_text())
  for part in ("trainable", "trainable0"):
    assert sorted(stored[part]) == sorted(flatten(getattr(run, part)))
    for leaf, x in flatten(getattr(run, part)).items():
      np.testing.assert_array_equal(stored[part][leaf], x)
      assert stored[part][leaf].dtype == x.dtype
  fields = {k: stored[k] for k in ("config", "summary", "step", "trainable", "trainable0",
                                   "frozen_digests")}
  leaf = sorted(stored["frozen_digests"])[0]
  fields["frozen_digests"] = {**stored["frozen_digests"], leaf: run_file.digest(np.zeros(1))}
  run_file.write(tmp_path / "b.npz", **fields)
  with pytest.raises(ValueError, match=re.escape(f"frozen leaf '{leaf}' rebuilt from its "
                                                 "config differs")):
    merge.load_run(tmp_path / "b.npz")
  np.savez(tmp_path / "c.npz", x=np.zeros(2))
  with pytest.raises(ValueError, match="is not an 'ntkft.merge run file v1' file"):
    merge.load_run(tmp_path / "c.npz")
  with pytest.raises(FileNotFoundError, match="no run file"):
    merge.load_run(tmp_path / "missing.npz")
  with pytest.raises(ValueError, match="did not finish"):
    merge.save_run(dataclasses.replace(run, summary=None), tmp_path / "d.npz")
  with pytest.raises(ValueError, match="must end in .npz"):
    merge.save_run(run, tmp_path / "e.zip")


def test_theta0_and_mode_checks_refuse(runs):
  a, b = runs["lin_sst2"], runs["lin_stsb"]
  flat = flatten(b.trainable0)
  leaf = next(k for k in sorted(flat) if k.endswith("lora_a"))
  flat[leaf] = flat[leaf] + np.float32(1e-3)
  other = dataclasses.replace(b, trainable0=unflatten(flat))
  with pytest.raises(ValueError, match=f"do not share θ0.*trainable0 leaf '{leaf}' differs"):
    merge.check_mergeable([a, other])
  with pytest.raises(ValueError, match="runs mix modes"):
    merge.check_mergeable([a, runs["nonlin_sst2"]])


def test_bad_method_is_one_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "ntkft.merge", f"--runs={tmp_path}", "--alpha=1",
       "--method=mean", f"--out={tmp_path / 'out'}"],
      cwd=REPO, env=test_util.cli_env(tmp_path / "cache"), capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      "error: --method='mean': choose from ('sum', 'ties')"], proc.stderr


# -- Merged outputs, kernels, ξ, α, validation examples, export -----------------------------------

def _first(encoded, n):
  """The first n examples of an Encoded."""
  return dataclasses.replace(encoded, input_ids=encoded.input_ids[:n],
                             token_type_ids=encoded.token_type_ids[:n],
                             labels=encoded.labels[:n], lengths=encoded.lengths[:n])


def test_tangent_sums_are_the_merged_tangent_model(runs):
  """Linearized: base + Σ c_v J τ_v (stored columns) equals the tangent model evaluated at
  φ0 + δ; nonlinear: the outputs are the model's, and α = 1 on its own vector reproduces the
  run's summary dev metric exactly."""
  pair = {"sst2": runs["lin_sst2"], "stsb": runs["lin_stsb"]}
  taus = {t: merge.run_task_vector(r) for t, r in pair.items()}
  examples = {t: {"dev": merge.dev_set(r)} for t, r in pair.items()}
  merged = merge.MergedOutputs(pair, taus, examples)
  assert merged.mode == "linearized"
  for task in pair:
    for coefs in ({"sst2": 0.7, "stsb": -0.4}, {task: 1.0}, {}):
      got, want = merged(task, coefs, "dev"), merged.forward(task, coefs, "dev")
      test_util.assert_close(got, want, rtol=1e-4, atol_scale=1e-5, err_msg=f"{task} {coefs}")
  nonlinear = merge.MergedOutputs(
      {"sst2": runs["nonlin_sst2"]}, {"sst2": merge.run_task_vector(runs["nonlin_sst2"])},
      {"sst2": {"dev": merge.dev_set(runs["nonlin_sst2"])}})
  assert nonlinear.metric("sst2", {"sst2": 1.0}, "dev") == runs["nonlin_sst2"].summary["dev_metric"]
  with pytest.raises(KeyError, match="unknown task vector"):
    nonlinear("sst2", {"rte": 1.0}, "dev")


def test_shared_jacobian_rows_are_the_tangent(runs):
  """Φ (rows example-major, outputs minor; columns the shared leaves raveled in order) times
  vec(τ) is J(θ0)(τ, 0) from jax.jvp."""
  for name in ("lin_sst2", "lin_stsb"):
    run = runs[name]
    enc = _first(merge.dev_set(run), 6)
    phi = merge.shared_jacobian(run, enc, chunk_size=4)
    tau = merge.run_task_vector(run)
    names = list(flatten(merge.split_head(run.trainable0)[0]))
    vec = np.concatenate([flatten(tau)[k].ravel() for k in names])
    outputs = run.task.num_labels
    assert phi.shape == (6 * outputs, vec.size) and phi.dtype == np.float32
    _, (jtau,) = merge.tangent_outputs(run, [merge.direction(run, tau)], enc)
    test_util.assert_close(phi.astype(np.float64) @ vec, jtau.reshape(-1), rtol=1e-4,
                           atol_scale=1e-5, err_msg=name)


def test_localization_energies_against_an_svd():
  rng = np.random.default_rng(0)
  phi_s = rng.normal(size=(10, 4)) @ rng.normal(size=(4, 40)) + 0.05 * rng.normal(size=(10, 40))
  phi_t = rng.normal(size=(6, 40))
  out = merge.energies({"s": phi_s, "t": phi_t}, energy=0.9)
  _, sigma, vt = np.linalg.svd(phi_s, full_matrices=False)
  held = np.cumsum(sigma ** 2) / np.sum(sigma ** 2)
  r = int(np.argmax(held >= 0.9)) + 1
  v_r = vt[:r].T
  assert out["rank"]["s"] == r
  assert out["energy"]["t"]["s"] == pytest.approx(
      np.sum((phi_t @ v_r) ** 2) / np.sum(phi_t ** 2), rel=1e-10)
  assert out["energy"]["s"]["s"] == pytest.approx(held[r - 1], rel=1e-10) and held[r - 1] >= 0.9
  assert out["overlap"]["s+t"] == pytest.approx(
      (out["energy"]["t"]["s"] + out["energy"]["s"]["t"]) / 2)
  assert out["trace"]["t"] == pytest.approx(np.sum(phi_t ** 2))
  # Kernels on disjoint parameter coordinates do not overlap at all.
  a = np.zeros((5, 12))
  a[:, :6] = rng.normal(size=(5, 6))
  b = np.zeros((4, 12))
  b[:, 6:] = rng.normal(size=(4, 6))
  apart = merge.energies({"a": a, "b": b})
  assert apart["energy"]["a"]["b"] == pytest.approx(0, abs=1e-20)
  assert apart["overlap"]["a+b"] == pytest.approx(0, abs=1e-20)
  with pytest.raises(ValueError, match="energy=0"):
    merge.top_eigenspace(phi_s @ phi_s.T, 0.0)


def test_disentanglement_error_and_alpha_rules_by_hand():
  a = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
  b = np.array([[0.0, 1.0], [0.0, 1.0], [3.0, 0.0]])    # argmax 0 1 0 vs 1 1 0
  assert merge.disagreement(a, b, is_regression=False) == pytest.approx(1 / 3)
  y, y2 = np.array([[0.0], [1.0], [2.0]]), np.array([[0.4], [1.6], [2.0]])  # |Δ| .4 .6 0
  assert merge.disagreement(y, y2, is_regression=True, tol=0.5) == pytest.approx(1 / 3)
  assert merge.disentanglement_error([a, y], [b, y2], [False, True]) == pytest.approx(2 / 3)
  assert merge.disentanglement_error([a, y], [a, y], [False, True]) == 0.0
  assert merge.mean_off_origin([0.0, 1.0], [[0.0, 0.3], [0.6, 0.9]]) == pytest.approx(0.6)
  with pytest.raises(ValueError, match="one shape"):
    merge.disagreement(a, y, is_regression=False)
  # α: best normalized mean, ties and nan to the smaller α; negation: the largest α whose
  # control score holds, else the smallest.
  assert merge.best_alpha([0.2, 0.4, 0.6], [0.5, 0.9, 0.9]) == 0.4
  assert merge.best_alpha([0.2, 0.4], [float("nan"), 0.1]) == 0.4
  assert merge.normalized(0.3, 0.05, floor=0.1) == pytest.approx(3.0)
  assert merge.normalized(0.3, 0.6, floor=0.1) == pytest.approx(0.5)
  assert merge.negation_alpha([0.2, 0.4, 0.6], [0.99, 0.96, 0.90], 0.95) == 0.4
  assert merge.negation_alpha([0.2, 0.4, 0.6], [0.9, 0.8, 0.7], 0.95) == 0.2


def test_validation_examples_are_held_out_and_shared_by_modes(runs):
  lin, nonlin = runs["lin_sst2"], runs["nonlin_sst2"]
  val = merge.validation_set(lin, 8, [22, 0])
  again = merge.validation_set(nonlin, 8, [22, 0])
  assert len(val) == 8 and val.labels.dtype == np.int32
  assert [list(x) for x in val.input_ids] == [list(x) for x in again.input_ids]
  other = merge.validation_set(lin, 8, [22, 1])
  assert [list(x) for x in other.input_ids] != [list(x) for x in val.input_ids]
  d = lin.config.data
  train = data.load_examples("sst2", "train", loop.data_dir_for(lin.task, d.root, d.kshot))
  trained = data.subsample(train, d.n_train, seed=lin.config.seed)
  used = merge.training_indices(train, d.n_train, lin.config.seed, False)
  assert [train.text_a[i] for i in used] == trained.text_a
  tokenizer = data.load_tokenizer(lin.source)
  trained_ids = {tuple(x) for x in data.encode(tokenizer, trained, d.max_len).input_ids}
  dev_ids = {tuple(x) for x in merge.dev_set(lin).input_ids}
  assert not {tuple(x) for x in val.input_ids} & (trained_ids | dev_ids)
  with pytest.raises(ValueError, match="unstratified"):
    merge.training_indices(train, d.n_train, 0, stratified=True)
  with pytest.raises(ValueError, match="n=0"):
    merge.validation_set(lin, 0, [22, 0])


def test_export_reloads_to_the_merged_logits(workdirs, tmp_path):
  pair = [str(workdirs["nonlin_sst2"]), str(workdirs["nonlin_stsb"])]
  result = merge_cli.merge(pair, "0.6", "sum", str(tmp_path), export=True)
  loaded_runs = merge.load_runs(pair)
  delta = merge.weighted_sum([merge.run_task_vector(r) for r in loaded_runs], [0.6, 0.6])
  for i, (run, entry) in enumerate(zip(loaded_runs, result["tasks"])):
    folder = pathlib.Path(entry["peft"])
    assert folder == tmp_path / "peft" / f"{i}_{run.task.name}"
    assert "only the LoRA weights" in entry["peft_note"]  # mean pooling: no HF head
    model = load_pretrained(run.source, HeadConfig(run.task.num_labels, "mean"),
                            adapters_from=folder)
    assert {k: (a.rank, a.alpha) for k, a in model.adapters.items()} == run.adapters
    merged = merge.merged_trainable(run, delta)
    want_params = flatten(combine(merged, run.frozen))
    got_params = flatten(model.params)
    for name, value in want_params.items():
      if not merge.is_head(name):  # LoRA (merged) and base weights, bit for bit
        np.testing.assert_array_equal(np.asarray(got_params[name]), np.asarray(value), name)
    head = {k: v for k, v in flatten(merged).items() if merge.is_head(k)}
    batch = _batch(run)
    got = np.asarray(model.apply_fn(combine(head, model.params), batch))
    want = np.asarray(merge.outputs(run, merged, batch))
    test_util.assert_close(got, want, rtol=1e-5, atol_scale=1e-6, err_msg=run.task.name)
    assert not np.allclose(want, merge.outputs(run, run.trainable, batch))  # merged, not single
  with pytest.raises(ValueError, match="--export writes PEFT folders under --out"):
    merge_cli.merge(pair, "0.6", export=True)
