"""Run (a shard of) a sweep of training runs, resumably; collect the results.

  python -m ntkft.sweep --sweep=experiments/sweeps/lambda_grid.py \\
      --config=configs/glue_linearized.py:runlocal --workdir=W --shard=0/4
  python -m ntkft.sweep --sweep=experiments/sweeps/lambda_grid.py[:arg] \\
      --config=... --workdir=W --collect

A sweep file defines ``get_sweep(arg=None) -> list[dict]``: one dict of config
overrides per point (dotted keys: ``{"lam": 0.1, "peft.layers": "4,5"}``).
Point ``k`` goes to shard ``k mod n`` (``--shard=i/n``, deterministic), and runs
in ``W/<point name>/`` through ``ntkft.train.loop.run`` with the base
``--config`` (plus any ``--config.*`` flags) and its overrides. Points whose
``summary.json`` exists are skipped, and an interrupted point resumes from its
checkpoint, so re-running a preempted shard finishes it. ``--collect`` writes
``W/results.json`` and ``W/results.csv``: one row per point with its name,
overrides, status (``done``/``missing``) and the scalar summary fields.
"""
import csv
import importlib.util
import json
import pathlib
import re

from absl import app, flags

from ntkft import cli, config_lib, records


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (the module is importable as a library)."""
  cli.define_flags()  # --config (the base config; only needed to run points), --workdir
  flags.DEFINE_string("sweep", None, "Sweep file (path[:arg]) defining get_sweep().")
  flags.DEFINE_string("shard", "0/1", "i/n: run the points k with k mod n == i.")
  flags.DEFINE_bool("collect", False, "Merge the summaries into results.csv/json.")


def load_sweep(spec: str) -> list[dict]:
  """Points of ``path[:arg]``'s ``get_sweep(arg)``, validated."""
  path, _, arg = spec.partition(":")
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"sweep file {path} not found")
  module_spec = importlib.util.spec_from_file_location(f"_sweep_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"sweep file {path} defines no get_sweep()")
  points = module.get_sweep(arg or None)
  if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
    raise ValueError(f"{path}: get_sweep() must return a list of dicts, got {type(points)}")
  names = [point_name(k, p) for k, p in enumerate(points)]
  if len(set(names)) != len(names):
    raise ValueError(f"{path}: duplicate points")
  return points


def point_name(k: int, overrides: dict) -> str:
  """``p<k>_<key>=<value>_...``, filesystem-safe, unique by the index k."""
  parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in overrides.items()]
  text = re.sub(r"[^A-Za-z0-9_.=,-]+", "", "_".join(parts).replace(",", "-"))
  return f"p{k:03d}_{text}"[:120]


def parse_shard(text: str) -> tuple[int, int]:
  match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
  if not match or not 0 <= int(match[1]) < int(match[2]):
    raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
  return int(match[1]), int(match[2])


def shard_points(num_points: int, shard: tuple[int, int]) -> list[int]:
  """Indices k of the points of shard (i, n): k mod n == i."""
  i, n = shard
  return [k for k in range(num_points) if k % n == i]


def apply_overrides(config, overrides: dict):
  """A copy of ``config`` with the dotted-key overrides set (unknown keys raise)."""
  return config_lib.with_overrides(config, overrides, "sweep")


def run_shard(config, points: list[dict], workdir, shard=(0, 1), run_fn=None) -> dict:
  """Runs this shard's unfinished points; returns {name: "ran" | "skipped"}."""
  if run_fn is None:
    from ntkft.train import loop
    run_fn = loop.run
  workdir = pathlib.Path(workdir)
  status = {}
  for k in shard_points(len(points), shard):
    name = point_name(k, points[k])
    point_dir = workdir / name
    if records.finished_summary(point_dir) is not None:
      print(f"[sweep] {name}: done, skipped")
      status[name] = "skipped"
      continue
    cfg = apply_overrides(config, points[k])
    point_dir.mkdir(parents=True, exist_ok=True)
    (point_dir / "overrides.json").write_text(json.dumps(points[k], indent=2))
    print(f"[sweep] {name}: running ({k + 1}/{len(points)})")
    run_fn(cfg, str(point_dir))
    status[name] = "ran"
  return status


def collect(points: list[dict], workdir) -> list[dict]:
  """Writes results.json / results.csv in ``workdir``; returns the rows."""
  workdir = pathlib.Path(workdir)
  rows = []
  for k, overrides in enumerate(points):
    name = point_name(k, overrides)
    row = {"point": name, **overrides}
    summary = records.finished_summary(workdir / name)
    if summary is not None:
      row.update({"status": "done"}, **{key: v for key, v in summary.items()
                                        if not isinstance(v, (dict, list))})
    else:
      row["status"] = "missing"
    rows.append(row)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "results.json").write_text(json.dumps(rows, indent=2))
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with open(workdir / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  return rows


def main() -> None:
  """The program: runs this shard's points, or ``--collect``s them (reads the flags)."""
  f = flags.FLAGS
  points = load_sweep(f.sweep)
  if f.collect:
    rows = collect(points, f.workdir)
    done = sum(r["status"] == "done" for r in rows)
    print(f"[sweep] collected {done}/{len(rows)} points into {f.workdir}/results.csv")
    return
  if f.config is None:
    raise app.UsageError("--config is required to run points")
  run_shard(f.config, points, f.workdir, parse_shard(f.shard))


if __name__ == "__main__":
  _define_flags()
  cli.main(main, required=("sweep", "workdir"))
