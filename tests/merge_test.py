"""ntkft.merge against closed forms: TIES by hand, one run at α = 1 is the run, tangent merges
are linear in the task vectors, the θ0 and mode checks, the command's errors.

Three tiny runs (the 2-layer random BERT of ``tests.test_util``, 32 examples, 4 steps), one
θ0 (seed 0, LoRA r=8 on query/value of both layers): linearized SST-2, linearized STS-B
(another head: one output, squared loss) and nonlinear SST-2.
"""
import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import glue_common
from ntkft import data, merge
from ntkft.merge import cli as merge_cli
from ntkft.models import flatten, unflatten
from ntkft.peft import combine
from ntkft.train import loop
from tests import test_util
from tests.conftest import REPO

RUNS = {"lin_sst2": ("sst2", "linearized"), "lin_stsb": ("stsb", "linearized"),
        "nonlin_sst2": ("sst2", "nonlinear")}


def _config(model_dir, task, mode):
  c = glue_common.get_config(f"runlocal,task={task}", mode=mode)
  c.model.name = str(model_dir)
  c.data.update(n_train=32, n_eval=32, max_len=32, buckets=(32,), batch_size=16,
                eval_batch_size=32)
  c.optim.warmup_steps = 1
  c.train.update(steps=4, ckpt_every=4, log_every=2, progress=False)
  return c


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """{name: workdir} of the three finished runs (same θ0)."""
  model_dir = test_util.tiny_bert_for_glue_runs(tmp_path_factory.mktemp("merge_tiny"))
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
