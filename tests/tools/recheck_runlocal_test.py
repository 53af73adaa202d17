"""tools/recheck_runlocal.py: its exact comparison of two runs' outputs (no experiment runs)."""
import importlib.util
import json
import math

import numpy as np
import pytest

from tests.conftest import REPO


def _load_tool():
  spec = importlib.util.spec_from_file_location("recheck_runlocal",
                                                REPO / "tools" / "recheck_runlocal.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


rr = _load_tool()


@pytest.mark.parametrize("key", ["seconds", "wall_seconds", "kernel_seconds", "run_seconds",
                                 "examples_per_s", "wall_seconds_this_session", "machine",
                                 "timestamp", "hostname", "load"])
def test_wall_clock_and_machine_keys_are_ignored(key):
  assert rr.ignored_key(key)
  assert rr.differences({key: 1.0, "x": 2}, {key: 7.5, "x": 2}) == []
  assert rr.differences({key: {"a": 1}}, {}) == []   # even when only one side has it


@pytest.mark.parametrize("key", ["kappa", "lambda_min", "load_head", "lr_times_lipschitz",
                                 "steps", "dev_metrics", "seed"])
def test_number_keys_are_compared(key):
  assert not rr.ignored_key(key)
  assert rr.differences({key: 1}, {key: 2}) == [f"$.{key}: base 1 (int) != current 2 (int)"]


def test_floats_compare_bit_for_bit():
  assert rr.differences(0.1 + 0.2, 0.1 + 0.2) == []
  assert len(rr.differences(0.1 + 0.2, 0.3)) == 1              # 1 ulp apart
  x = 1.2345678
  assert len(rr.differences(x, math.nextafter(x, 2.0))) == 1
  assert len(rr.differences(0.0, -0.0)) == 1                   # == in Python, not bitwise
  assert rr.differences(math.nan, math.nan) == []              # same NaN as JSON parses it
  assert rr.differences(json.loads("NaN"), json.loads("NaN")) == []
  assert len(rr.differences(1, 1.0)) == 1                      # type changed
  assert len(rr.differences(True, 1)) == 1
  assert len(rr.differences(None, 0)) == 1
  assert rr.differences("a", "a") == [] and len(rr.differences("a", "b")) == 1


def test_nested_paths_lengths_and_missing_keys():
  base = {"tasks": {"sst2": {"rows": [{"kappa": 3.0, "seconds": 1.0}, {"kappa": 4.0}]}},
          "old": 1, "order": [1, 2]}
  current = {"order": [1, 2], "tasks": {"sst2": {"rows": [{"kappa": 3.0, "seconds": 9.0},
                                                          {"kappa": 4.5}]}}, "new": 1}
  assert rr.differences(base, current) == [
      "$.new: only in current", "$.old: only in base",
      "$.tasks.sst2.rows[1].kappa: base 4.0 (float) != current 4.5 (float)"]
  # A length mismatch is one difference; the elements are not paired up.
  assert rr.differences({"l": [1.0, 2.0]}, {"l": [1.0, 2.0, 3.0]}) == [
      "$.l: length 2 in base != 3 in current"]
  assert rr.differences([], []) == [] and len(rr.differences([1], {"0": 1})) == 1


def test_normalize_replaces_run_paths_longest_first():
  value = {"a": ["/tmp/r/base/work/sst2/runs", 1.5], "b": "/tmp/r/base/tree/x", "c": None}
  out = rr.normalize(value, {"/tmp/r/base": "<r>", "/tmp/r/base/work": "<workdir>"})
  assert out == {"a": ["<workdir>/sst2/runs", 1.5], "b": "<r>/tree/x", "c": None}


def _write_run(workdir, kappa, seconds, kernel):
  (workdir / "sst2" / "xla_cache").mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps(
      {"kappa": kappa, "wall_seconds": seconds, "workdir": str(workdir / "sst2")}))
  (workdir / "sst2" / "metrics.jsonl").write_text(
      json.dumps({"step": 1, "loss": 0.5, "examples_per_s": seconds}) + "\n")
  (workdir / "sst2" / "xla_cache" / "cache.json").write_text(json.dumps({"t": seconds}))
  np.savez(workdir / "sst2" / "kernels.npz", **{"block/head": kernel})


def test_compare_runs_over_files(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  kernel = np.arange(4.0, dtype=np.float32).reshape(2, 2)
  _write_run(a, 2.5, 1.0, kernel)
  _write_run(b, 2.5, 3.0, kernel.copy())
  paths = lambda w: {str(w): "<workdir>"}
  assert rr.compare_runs(a, b, paths(a), paths(b)) == ([], 3)  # times, workdirs, cache ignored

  moved = kernel.copy()
  moved[1, 1] = np.nextafter(moved[1, 1], np.float32(10))
  np.savez(b / "sst2" / "kernels.npz", **{"block/head": moved})
  (b / "extra.json").write_text("{}")
  diff, num_files = rr.compare_runs(a, b, paths(a), paths(b))
  assert num_files == 3
  assert diff == ["extra.json: written only by current",
                  "sst2/kernels.npz: [block/head]: 1 of 4 elements differ"]
  np.savez(b / "sst2" / "kernels.npz", **{"block/head": kernel.astype(np.float64)})
  assert rr.compare_runs(a, b, paths(a), paths(b))[0][1] == (
      "sst2/kernels.npz: [block/head]: float32[2, 2] in base != float64[2, 2]")


def test_every_experiment_found_has_a_tiny_recipe():
  found = rr.discover(REPO)
  assert set(rr.EXPERIMENTS) <= set(found) and not set(rr.EXCLUDED) & set(found)
  missing = set(found) - set(rr._load_tiny_configs().RECIPES)
  assert not missing, f"add a recipe for {missing} to tests/experiments/tiny_configs.py"
