"""Mesh-sharded training and eNTK on 8 fake CPU devices vs one device.

The device count is fixed when JAX initializes, so every sharded run is a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (or 1)
through the real CLI (``python -m ntkft.run``, with ``--config.mesh=...``),
on a tiny random 1-layer BERT and 64 SST-2 examples, 4 steps. The subprocesses share a
persistent compilation cache. The fast subset (linearized 8 vs 1, 8 -> 1
resume, eNTK, errors) takes ~1-2 min on 2 busy cores; the rest is marked slow
(all 15 tests incl. the sweep file: ~10 min on a loaded 2-core machine). Checked:

* 8-device data-parallel (and FSDP) training gives the same per-step losses,
  summary and final parameters as 1 device (f32 tolerance), in both regimes;
* a checkpoint written on 8 devices resumes on 1 device and vice versa, and
  the resumed run ends where the uninterrupted run ends;
* the sharded eNTK equals the single-device eNTK;
* two processes (``jax.distributed``, gloo CPU collectives) end with the
  single-process metrics and resume from their checkpoint.
"""
import json
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ntkft.train import mesh as mesh_lib
from tests import test_util
from tests.conftest import REPO

STEPS = 4
RTOL = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return test_util.tiny_bert_for_glue_runs(tmp_path_factory.mktemp("h8_tiny"), num_layers=1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("h8_jax_cache")


def _env(cache_dir, devices):
  return test_util.cli_env(cache_dir,
                           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _args(model_dir, mode, devices, **extra):
  overrides = {
      "model.name": str(model_dir), "data.n_train": 64, "data.n_eval": 64,
      "data.max_len": 32, "data.buckets": "(32,)", "data.batch_size": 16,
      "data.eval_batch_size": 64, "train.steps": STEPS, "train.ckpt_every": 2,
      "train.ckpt_keep": 5, "train.log_every": 1, "train.progress": False,
      "mesh": f"(('data', {devices}),)", **extra}
  return ([f"--config={REPO / 'configs' / ('glue_' + mode)}.py:runlocal"]
          + [f"--config.{k}={v}" for k, v in overrides.items()])


def _train(cache_dir, workdir, args, devices):
  cmd = [sys.executable, "-m", "ntkft.run", f"--workdir={workdir}", *args]
  proc = subprocess.run(cmd, env=_env(cache_dir, devices), cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _summary(workdir):
  return json.loads((pathlib.Path(workdir) / "summary.json").read_text())


def _losses(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {(r["step"], r["split"]): r["loss"] for r in map(json.loads, lines)}


def _params(workdir, step=STEPS):
  path = pathlib.Path(workdir) / "ckpt" / str(step) / "default"
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(path)
  meta = getattr(meta, "item_metadata", meta)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
  tree = ckptr.restore(path, target)  # written on any mesh, read onto this one device
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree["trainable"])}


def _assert_same_run(w_a, w_b):
  sa, sb = _summary(w_a), _summary(w_b)
  assert sa["steps"] == sb["steps"] == STEPS
  for key in ("train_loss", "param_distance"):
    np.testing.assert_allclose(sa[key], sb[key], rtol=RTOL, err_msg=key)
  assert sa["dev_metric"] == pytest.approx(sb["dev_metric"], abs=1 / 64 + 1e-9)
  la, lb = _losses(w_a), _losses(w_b)
  assert la.keys() == lb.keys() and len(la) >= STEPS
  for k in la:
    np.testing.assert_allclose(la[k], lb[k], rtol=RTOL, err_msg=str(k))
  pa, pb = _params(w_a), _params(w_b)
  assert pa.keys() == pb.keys()
  moved = 0.0
  for k in pa:
    test_util.assert_close(pa[k], pb[k], rtol=1e-4, atol_scale=1e-4, err_msg=k)
    moved = max(moved, float(np.abs(pa[k]).max()))
  assert moved > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir, model_dir):
  """Lazily made, shared training runs: runs(mode, devices, **extra) -> workdir."""
  made = {}

  def get(mode, devices, **extra):
    key = (mode, devices, tuple(sorted(extra.items())))
    if key not in made:
      workdir = tmp_path_factory.mktemp(f"h8_{mode}_{devices}") / "w"
      out = _train(cache_dir, workdir, _args(model_dir, mode, devices, **extra), devices)
      assert f"'data': {devices}" in out  # the mesh really had that many devices
      made[key] = workdir
    return made[key]
  return get


# -- Mesh unit tests (one device is enough) ------------------------------------

def test_resolve_axes():
  assert mesh_lib.resolve_axes((("data", -1),), 8) == (("data", 8),)
  assert mesh_lib.resolve_axes((("data", -1), ("model", 2)), 8) == (("data", 4), ("model", 2))
  with pytest.raises(ValueError, match="does not divide"):
    mesh_lib.resolve_axes((("data", -1), ("model", 3)), 8)
  with pytest.raises(ValueError, match="8 are available"):
    mesh_lib.resolve_axes((("data", 4),), 8)
  with pytest.raises(ValueError, match="at most one -1"):
    mesh_lib.resolve_axes((("data", -1), ("model", -1)), 8)
  with pytest.raises(ValueError, match="'data' axis"):
    mesh_lib.resolve_axes((("model", -1),), 8)


def test_spec_rules():
  P = jax.sharding.PartitionSpec
  big = (30522, 16)
  assert mesh_lib.spec_for("embeddings/word/embedding", big, 8, fsdp=False) == P()
  assert mesh_lib.spec_for("embeddings/word/embedding", big, 8, fsdp=True) == P(None, "data")
  assert mesh_lib.spec_for("x/kernel", (512, 256), 8, fsdp=True) == P("data")
  assert mesh_lib.spec_for("x/lora_a", (512, 256), 8, fsdp=True) == P()
  assert mesh_lib.spec_for("x/bias", (512 * 256,), 8, fsdp=True) == P()  # vectors stay
  assert mesh_lib.spec_for("x/kernel", (16, 16), 8, fsdp=True) == P()  # small
  assert mesh_lib.spec_for("x/kernel", (513, 257), 8, fsdp=True) == P()  # indivisible


def test_batch_size_must_divide(tmp_path, cache_dir, model_dir):
  out = subprocess.run(
      [sys.executable, "-m", "ntkft.run", f"--workdir={tmp_path / 'w'}",
       *_args(model_dir, "linearized", 8, **{"data.batch_size": 12})],
      env=_env(cache_dir, 8), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "data.batch_size=12 is not divisible by the data-axis size 8" in out.stderr


# -- 8 fake devices vs 1 ---------------------------------------------------------

@pytest.mark.parametrize(
    "mode", ["linearized", pytest.param("nonlinear", marks=pytest.mark.slow)])
def test_eight_devices_match_one(runs, mode):
  _assert_same_run(runs(mode, 1), runs(mode, 8))


@pytest.mark.slow
def test_fsdp_matches_one_device(runs):
  _assert_same_run(runs("linearized", 1), runs("linearized", 8, fsdp=True))


@pytest.mark.parametrize("src,dst", [(8, 1), pytest.param(1, 8, marks=pytest.mark.slow)])
def test_checkpoint_resumes_across_meshes(runs, cache_dir, model_dir, tmp_path, src, dst):
  """Keep only the step-2 checkpoint of a src-device run, resume on dst devices."""
  workdir = tmp_path / "w"
  shutil.copytree(runs("linearized", src), workdir)
  for step in range(3, STEPS + 1):
    shutil.rmtree(workdir / "ckpt" / str(step), ignore_errors=True)
  (workdir / "summary.json").unlink()
  out = _train(cache_dir, workdir, _args(model_dir, "linearized", dst), dst)
  assert "resumed from checkpoint at step 2" in out
  _assert_same_run(runs("linearized", 1), workdir)


def test_sharded_ntk_equals_single_device(cache_dir, tmp_path):
  out = tmp_path / "ntk.npz"
  proc = subprocess.run([sys.executable, "-m", "tests.train.sharded_worker", "ntk", str(out)],
                        env=_env(cache_dir, 8), cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  k = np.load(out)
  assert k["ref_trace"].shape == (11, 5) and k["ref_full"].shape == (11, 11, 2, 2)
  scale = np.abs(k["ref_full"]).max()
  np.testing.assert_allclose(k["sh_trace"], k["ref_trace"], atol=1e-5 * scale)
  np.testing.assert_allclose(k["sh_trace_chunked"], k["ref_trace"], atol=1e-5 * scale)
  np.testing.assert_allclose(k["sh_full"], k["ref_full"], atol=1e-5 * scale)


# -- Two processes (jax.distributed) ----------------------------------------------

def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_multiprocess(cache_dir, workdir, model_dir, num_processes=2, devices_per_process=1):
  port = _free_port()
  procs = []
  for pid in range(num_processes):
    args = _args(model_dir, "linearized", num_processes * devices_per_process, **{
        "distributed.coordinator_address": f"localhost:{port}",
        "distributed.num_processes": num_processes, "distributed.process_id": pid})
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "ntkft.run", f"--workdir={workdir}", *args],
        env=_env(cache_dir, devices_per_process), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, out[-2000:] + err[-4000:]
    outs.append(out)
  return outs


@pytest.mark.slow
def test_two_processes_match_one(runs, cache_dir, model_dir, tmp_path):
  workdir = tmp_path / "w"
  outs = _train_multiprocess(cache_dir, workdir, model_dir)
  assert all("2 process(es)" in o for o in outs)
  ref = _summary(runs("linearized", 1))
  got = _summary(workdir)
  np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=1e-5)
  np.testing.assert_allclose(got["dev_metric"], ref["dev_metric"], rtol=1e-5)
  _assert_same_run(runs("linearized", 1), workdir)
  # Resume: drop the last checkpoints and the summary, run the same 2 processes again.
  for step in range(3, STEPS + 1):
    shutil.rmtree(workdir / "ckpt" / str(step), ignore_errors=True)
  (workdir / "summary.json").unlink()
  outs = _train_multiprocess(cache_dir, workdir, model_dir)
  assert all("resumed from checkpoint at step 2" in o for o in outs)
  _assert_same_run(runs("linearized", 1), workdir)
