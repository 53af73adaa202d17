"""ntkft.sweep: deterministic shards, resumable points, collected results."""
import csv
import json
import os
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from ntkft import sweep
from tests import test_util
from tests.conftest import GLUE_DIR, REPO

SWEEP_FILE = '''
def get_sweep(arg=None):
  return [{"seed": s, "lam": lam} for s in (0, 1) for lam in (0.0, 0.5)][:int(arg or 3)]
'''


def _config(*extra):
  argv = ["x", f"--config={REPO / 'configs' / 'glue_linearized.py'}:runlocal", *extra]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


@pytest.fixture
def sweep_file(tmp_path):
  path = tmp_path / "grid.py"
  path.write_text(SWEEP_FILE)
  return path


def _fake_run(calls):
  def run(cfg, workdir):
    calls.append((cfg.seed, cfg.lam, workdir))
    summary = {"train_loss": 0.5 + cfg.seed + cfg.lam, "dev_metric": 0.25, "task": cfg.task,
               "dev_metrics": {"accuracy": 0.25}}
    (sweep.pathlib.Path(workdir) / "summary.json").write_text(json.dumps(summary))
  return run


def test_shards_partition_points_and_rerun_skips(tmp_path, sweep_file):
  points = sweep.load_sweep(f"{sweep_file}:3")
  assert points == [{"seed": 0, "lam": 0.0}, {"seed": 0, "lam": 0.5}, {"seed": 1, "lam": 0.0}]
  base = _config()
  calls = []
  status0 = sweep.run_shard(base, points, tmp_path / "w", (0, 2), run_fn=_fake_run(calls))
  status1 = sweep.run_shard(base, points, tmp_path / "w", (1, 2), run_fn=_fake_run(calls))
  names = [sweep.point_name(k, p) for k, p in enumerate(points)]
  assert list(status0) == [names[0], names[2]] and list(status1) == [names[1]]
  assert sorted((s, l) for s, l, _ in calls) == [(0, 0.0), (0, 0.5), (1, 0.0)]
  assert base.seed == 0 and base.lam == 0.0  # overrides go to copies
  # A rerun of every shard runs nothing; a lost summary reruns just that point.
  (tmp_path / "w" / names[1] / "summary.json").unlink()
  for i in range(2):
    sweep.run_shard(base, points, tmp_path / "w", (i, 2), run_fn=_fake_run(calls))
  assert len(calls) == 4 and calls[-1][:2] == (0, 0.5)


def test_collect_writes_rows(tmp_path, sweep_file):
  points = sweep.load_sweep(f"{sweep_file}:3")
  sweep.run_shard(_config(), points[:2], tmp_path / "w", run_fn=_fake_run([]))
  rows = sweep.collect(points, tmp_path / "w")
  assert [r["status"] for r in rows] == ["done", "done", "missing"]
  assert rows[1]["lam"] == 0.5 and rows[1]["train_loss"] == pytest.approx(1.0)
  assert "dev_metrics" not in rows[0]  # nested dicts are left out
  assert json.loads((tmp_path / "w" / "results.json").read_text()) == rows
  with open(tmp_path / "w" / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["point"] for r in table] == [r["point"] for r in rows]
  assert float(table[0]["train_loss"]) == pytest.approx(0.5) and table[2]["train_loss"] == ""


def test_bad_inputs(tmp_path, sweep_file):
  with pytest.raises(ValueError, match="--shard"):
    sweep.parse_shard("2/2")
  assert sweep.parse_shard("1/3") == (1, 3)
  with pytest.raises(ValueError, match="no config field 'nope'"):
    sweep.apply_overrides(_config(), {"optim.nope": 1})
  with pytest.raises(ValueError, match="not found"):
    sweep.load_sweep(str(tmp_path / "missing.py"))


def test_lambda_grid_default_is_small():
  points = sweep.load_sweep(str(REPO / "experiments" / "sweeps" / "lambda_grid.py"))
  assert len(points) == 6
  for p in points:
    sweep.apply_overrides(_config(), p)  # every key exists in the GLUE config
  assert len(sweep.load_sweep(f"{REPO / 'experiments' / 'sweeps' / 'lambda_grid.py'}:full")) == 90


@pytest.mark.slow  # ~30-60 s: one real training subprocess on 2 busy cores
def test_cli_runs_shards_and_collects(tmp_path, sweep_file):
  """A real tiny training point through the CLI (shard 1/2 of 2), a skipping rerun, --collect."""
  if not GLUE_DIR.is_dir():
    pytest.fail(f"GLUE data not found at {GLUE_DIR}")
  model = test_util.write_tiny_bert_checkpoint(tmp_path / "bert", num_layers=1, hidden=8)
  common = [sys.executable, "-m", "ntkft.sweep", f"--sweep={sweep_file}:2",
            f"--config={REPO / 'configs' / 'glue_linearized.py'}:runlocal",
            f"--workdir={tmp_path / 'w'}", f"--config.model.name={model}",
            "--config.data.n_train=32", "--config.data.n_eval=32", "--config.data.max_len=32",
            "--config.data.buckets=(32,)", "--config.data.eval_batch_size=32",
            "--config.train.steps=2", "--config.train.progress=False"]
  env = _env()

  def sh(*args):
    out = subprocess.run(common + list(args), env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout

  assert "running" in sh("--shard=1/2")  # point 1 only
  assert [p.name for p in (tmp_path / "w").iterdir()] == ["p001_seed=0_lam=0.5"]
  assert "skipped" in sh("--shard=1/2")
  sh("--collect")
  rows = json.loads((tmp_path / "w" / "results.json").read_text())
  assert [r["status"] for r in rows] == ["missing", "done"]
  assert rows[1]["steps"] == 2 and rows[1]["train_loss"] > 0 and rows[1]["lam"] == 0.5
  assert rows[1]["point"] == "p001_seed=0_lam=0.5"


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return env
