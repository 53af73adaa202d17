"""End-to-end tests of the training loop through its real entry points.

Every run uses a tiny random BERT with MiniLM's vocabulary and tokenizer
(``tests.test_util.write_tiny_bert_checkpoint``) on 64 SST-2 examples, so a run
is a few seconds once its programs are compiled. Compilation dominates, so the
module shares one persistent XLA compilation cache (in a temp folder) between
the in-process runs and the ``python -m ntkft.run`` subprocesses: every run of
the linearized base config after the first reads its executables from the cache.

Configs are built by parsing the same ``--config...`` flags the CLI gets (with
``lock_config=True``), so in-process and subprocess runs see identical configs.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

from ntkft import data
from ntkft.models import HeadConfig, flatten, init_model, load_pretrained, read_config
from ntkft.train import checkpoint, loop
from tests import test_util
from tests.conftest import REPO

STEPS = 16
CKPT_EVERY = 2


def _args(model_dir, config_file="glue_linearized", **extra):
  """CLI flags of the small base run (plus ``extra`` overrides, key=value)."""
  overrides = {
      "model.name": str(model_dir), "data.n_train": 64, "data.n_eval": 64,
      "data.max_len": 32, "data.buckets": "(32,)", "data.batch_size": 16,
      "data.eval_batch_size": 64, "train.steps": STEPS, "train.ckpt_every": CKPT_EVERY,
      "train.log_every": 2, "train.progress": False, **extra}
  return ([f"--config={REPO / 'configs' / config_file}.py:runlocal"]
          + [f"--config.{k}={v}" for k, v in overrides.items()])


def _parse(args):
  """The locked ConfigDict that ``ntkft.run`` builds from these flags."""
  argv = ["ntkft.run"] + list(args)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)  # which overrides to define as flags
  values(argv)
  return values.config


# -- Shared fixtures ----------------------------------------------------------

@pytest.fixture(scope="module")
def cache_dir(xla_cache):
  """The module's persistent compilation cache (tests/conftest.py), also for subprocesses."""
  return xla_cache


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return test_util.tiny_bert_for_glue_runs(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def lin_run(tmp_path_factory, cache_dir, model_dir):
  """One uninterrupted linearized run of the base config: (workdir, summary)."""
  workdir = tmp_path_factory.mktemp("lin") / "w"
  summary = loop.run(_parse(_args(model_dir)), str(workdir))
  return workdir, summary


def _steps(workdir):
  """Committed checkpoint steps (orbax renames a step folder when it is complete)."""
  ckpt = pathlib.Path(workdir) / "ckpt"
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _restore(workdir, step):
  return ocp.StandardCheckpointer().restore(pathlib.Path(workdir) / "ckpt" / str(step) / "default")


def _leaves(tree):
  """{path string: numpy array} over every leaf of a restored checkpoint."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _records(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


# -- Tests --------------------------------------------------------------------

def test_tiny_checkpoint_round_trips_through_the_loader(tmp_path):
  path = test_util.write_tiny_bert_checkpoint(tmp_path / "m", num_layers=1, hidden=8, seed=3)
  model = load_pretrained(path, HeadConfig(num_labels=2))
  ref = init_model(read_config(path), HeadConfig(num_labels=2), seed=3)
  loaded, expected = flatten(model.params), flatten(ref.params)
  assert model.newly_initialized == ("head/bias", "head/kernel")
  assert set(loaded) == set(expected)
  for name in expected:
    if not name.startswith("head/"):
      np.testing.assert_array_equal(np.asarray(loaded[name]), np.asarray(expected[name]), name)
  assert data.load_tokenizer(path).vocab_size == model.config.vocab_size


def _check_outputs(workdir, summary, mode):
  assert set(summary) >= {"task", "mode", "steps", "train_loss", "dev_metric",
                          "param_distance", "wall_seconds"}
  assert summary["task"] == "sst2" and summary["mode"] == mode and summary["steps"] == STEPS
  assert np.isfinite(summary["train_loss"]) and 0.0 <= summary["dev_metric"] <= 1.0
  assert summary["param_distance"] > 0 and summary["wall_seconds"] > 0
  assert json.loads((workdir / "summary.json").read_text()) == summary
  records = _records(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(2, STEPS + 1, 2))
  assert all(np.isfinite(r["loss"]) for r in train)
  assert {r["split"] for r in records} == {"train", "dev", "train_eval"}
  assert list((workdir / "tb").glob("events.out.tfevents.*"))
  assert _steps(workdir)[-1] == STEPS
  final = _restore(workdir, STEPS)
  assert int(final["step"]) == STEPS
  distance = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(
      jax.tree.leaves(final["trainable"]), jax.tree.leaves(final["trainable0"]))))
  np.testing.assert_allclose(distance, summary["param_distance"], rtol=1e-5)


def test_linearized_run_writes_outputs(lin_run):
  workdir, summary = lin_run
  _check_outputs(workdir, summary, "linearized")
  # Only B and the head move under the tangent model at the B = 0 LoRA init.
  final = _restore(workdir, STEPS)
  for name, value in flatten(final["trainable"]).items():
    start = flatten(final["trainable0"])[name]
    moved = not np.array_equal(np.asarray(value), np.asarray(start))
    assert moved == (not name.endswith("lora_a")), name


def test_nonlinear_run_writes_outputs(tmp_path, cache_dir, model_dir, lin_run):
  summary = loop.run(_parse(_args(model_dir, "glue_nonlinear")), str(tmp_path / "w"))
  _check_outputs(tmp_path / "w", summary, "nonlinear")
  assert summary["train_loss"] != lin_run[1]["train_loss"]


def test_sigkill_then_resume_is_bit_identical(tmp_path, cache_dir, model_dir, lin_run):
  ref_dir, ref = lin_run
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "ntkft.run", f"--workdir={workdir}"] + _args(model_dir)
  env = test_util.cli_env(cache_dir)
  t_launch = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while not any(s >= 2 for s in _steps(workdir)):
    if proc.poll() is not None or time.time() > deadline:
      proc.kill()
      pytest.fail(f"run ended (rc={proc.returncode}) before its step-2 checkpoint:\n"
                  f"{proc.stderr.read().decode()[-3000:]}")
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stderr.close()
  killed_at = _steps(workdir)
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / "summary.json").exists(), "the run finished before the kill"
  assert max(killed_at) < STEPS, killed_at

  t_kill = time.time()
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  print(f"killed at {t_kill - t_launch:.1f}s with checkpoints {killed_at}; "
        f"resumed run took {time.time() - t_kill:.1f}s")
  assert f"resumed from checkpoint at step {max(killed_at)}" in done.stdout

  summary = json.loads((workdir / "summary.json").read_text())
  for key in ("steps", "train_loss", "dev_metric", "param_distance", "dev_metrics",
              "train_metrics"):
    assert summary[key] == ref[key], key  # exact, not approximate
  final, ref_final = _restore(workdir, STEPS), _restore(ref_dir, STEPS)
  leaves, ref_leaves = _leaves(final), _leaves(ref_final)  # params, θ0, opt state, rng
  assert leaves.keys() == ref_leaves.keys()
  for name, value in leaves.items():
    np.testing.assert_array_equal(value, ref_leaves[name], err_msg=name)
  # The log is truncated to the checkpoint and continued: same losses per step.
  losses = [(r["step"], r["split"], r["loss"]) for r in _records(workdir)]
  assert losses == [(r["step"], r["split"], r["loss"]) for r in _records(ref_dir)]


def test_unknown_config_key_is_rejected_by_the_cli(tmp_path):
  cmd = [sys.executable, "-m", "ntkft.run", f"--workdir={tmp_path / 'w'}",
         f"--config={REPO / 'configs' / 'glue_linearized.py'}:runlocal", "--config.nope=1"]
  done = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=120)
  assert done.returncode != 0
  assert "nope" in done.stderr
  assert not (tmp_path / "w").exists()


def test_unknown_config_key_fails_to_parse(model_dir):
  with pytest.raises((AttributeError, KeyError, flags.Error), match="nope"):
    _parse(_args(model_dir, nope=1))


@pytest.mark.parametrize("override,message", [
    ({"peft.layers": "(7,)"}, r"peft.layers \[7\] out of range: the model has 2 layers"),
    ({"peft.layers": "(0,x)"}, r"peft.layers must be a tuple of ints or 'all', got '\(0,x\)'"),
    ({"mode": "bogus"}, r"unknown mode 'bogus'"),
    ({"task": "bogus"}, r"unknown task 'bogus'"),
    ({"task": "stsb", "loss": "cross_entropy"}, r"regression tasks \(e.g. STS-B\) need"),
    ({"loss": "hinge"}, r"unknown loss 'hinge'"),
])
def test_bad_configs_raise_clear_errors(tmp_path, model_dir, override, message):
  config = _parse(_args(model_dir, **override))
  with pytest.raises(ValueError, match=message):
    loop.run(config, str(tmp_path / "w"))


_SHORT = {"train.steps": 2, "train.ckpt_every": 2, "data.n_train": 16, "data.n_eval": 16,
          "data.batch_size": 8, "data.eval_batch_size": 16}


def test_regression_task_defaults_to_the_squared_loss(tmp_path, cache_dir, model_dir):
  config = _parse(_args(model_dir, task="stsb", **_SHORT))
  assert config.loss == "auto"
  summary = loop.run(config, str(tmp_path / "w"))
  assert summary["loss"] == "squared" and summary["task"] == "stsb"
  assert {"pearson", "spearman"} <= set(summary["dev_metrics"])


def test_mnli_reports_matched_and_mismatched(tmp_path, cache_dir, model_dir):
  summary = loop.run(_parse(_args(model_dir, task="mnli", **_SHORT)), str(tmp_path / "w"))
  assert summary["loss"] == "cross_entropy"
  assert summary["n_eval"] == summary["n_eval_mismatched"] == 16
  assert summary["dev_metric_mismatched"] == summary["dev_metrics_mismatched"]["accuracy"]
  logged = {r["split"]: r for r in _records(tmp_path / "w") if r["step"] == 2}
  assert logged["dev"]["accuracy"] == summary["dev_metric"]
  assert logged["dev_mismatched"]["accuracy"] == summary["dev_metric_mismatched"]
  # The two evaluations saw different examples (matched vs mismatched genres).
  assert logged["dev"]["loss"] != logged["dev_mismatched"]["loss"]


def test_peft_layers_from_the_cli_select_those_layers(model_dir):
  from ntkft import peft
  config = _parse(_args(model_dir, **{"peft.layers": "(1,)"}))
  assert peft.PeftSpec.from_config(config.peft).layers == (1,)


class _NanAfterStep3(data.TrainStream):
  """Batches whose weights are NaN from step 3 on: the weighted loss becomes NaN."""

  def batch(self, step):
    batch = super().batch(step)
    if step >= 3:
      batch = dict(batch, weights=np.full_like(batch["weights"], np.nan))
    return batch


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, cache_dir, model_dir):
  monkeypatch.setattr(data, "TrainStream", _NanAfterStep3)
  workdir = tmp_path / "w"
  with pytest.raises(loop.NonFiniteLossError, match=r"nan at step 3 \(0-based\).*step 2"):
    loop.run(_parse(_args(model_dir)), str(workdir))
  assert _steps(workdir)[-1] == 2
  kept = _restore(workdir, 2)
  assert int(kept["step"]) == 2
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(kept["trainable"]))
  moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
      jax.tree.leaves(kept["trainable"]), jax.tree.leaves(kept["trainable0"]))]
  assert any(moved)
  assert not (workdir / "summary.json").exists()


def test_corrupted_checkpoint_raises_and_deletes_nothing(tmp_path, cache_dir, model_dir,
                                                          lin_run):
  workdir = tmp_path / "w"
  shutil.copytree(lin_run[0], workdir)
  step_dir = workdir / "ckpt" / str(STEPS)
  data_files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  assert data_files
  for p in data_files:  # truncate every array data file to half its size
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
  before = {p: p.stat().st_size for p in workdir.rglob("*") if p.is_file()}
  with pytest.raises(checkpoint.CheckpointError, match=rf"checkpoint step {STEPS} in .*ckpt"):
    loop.run(_parse(_args(model_dir)), str(workdir))
  after = {p: p.stat().st_size for p in workdir.rglob("*") if p.is_file()}
  assert after == before


# The loop wires the cache the same way in both modes; each mode's outputs and gradients
# through the cache are checked in the default run by tests/train/prefix_cache_test.py.
@pytest.mark.parametrize("mode", [pytest.param("nonlinear", marks=pytest.mark.slow),
                                  "linearized"])
def test_prefix_cache_run_equals_the_full_model_run(tmp_path, cache_dir, model_dir, mode):
  """LoRA on layer 1 only: caching layer 0 changes nothing but the cost."""
  def run(cached):
    overrides = {**_SHORT, "peft.layers": "(1,)", "prefix_cache": cached,
                 "train.ckpt_every": 100}
    config = _parse(_args(model_dir, f"glue_{mode}", **overrides))
    return loop.run(config, str(tmp_path / f"w{cached}"))
  full, cached = run(False), run(True)
  for key in ("train_loss", "param_distance"):
    assert cached[key] == pytest.approx(full[key], rel=1e-4), key
  assert cached["dev_metrics"]["accuracy"] == full["dev_metrics"]["accuracy"]
