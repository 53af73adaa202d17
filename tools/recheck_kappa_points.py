"""Recomputes stored κ-study points with the current code and compares them bit for bit.

  python tools/recheck_kappa_points.py [--workdir=docs/results/kappa_study] [ID ...]

Default ids: the first kernel point and the first run points of each kind (regime a and b,
λ 0 and 10, the tangent run) of SST-2 seed 0. Every number of a recomputed point except
wall times (``seconds``, ``train_seconds``, ``jacobian_seconds``) must equal the stored
one exactly (issue 21: a refactor changes no number the sweep computes). Exit 1 on any
difference, printing the first few. Bit-identity holds on the kind of CPU that computed the
points (the stored ``machine`` of results.json); on another CPU float32 results differ in the
last bits (vector width, XLA's partitioning), and then only a tolerance check is meaningful.
"""
import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # the repository root

from configs import kappa_study as kappa_config
from experiments import common, kappa_study
from ntkft import records

TIMES = {"seconds", "train_seconds", "jacobian_seconds"}
DEFAULT = ["kernel_sst2_s0", "run_sst2_L0_s0_a_lam0_nonlinear",
           "run_sst2_L0_s0_b_lam10_nonlinear", "run_sst2_L0_s0_a_lam0_linearized"]


def differences(a, b, path=""):
  """Paths where the JSON values a and b differ (times ignored)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f"{path}/{k}: key only on one side" for k in set(a) ^ set(b)]
    for k in set(a) & set(b):
      if k not in TIMES:
        out += differences(a[k], b[k], f"{path}/{k}")
    return out
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f"{path}: lengths {len(a)} != {len(b)}"]
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
  return [] if a == b else [f"{path}: stored {a!r} != recomputed {b!r}"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="docs/results/kappa_study")
  parser.add_argument("ids", nargs="*", default=DEFAULT)
  args = parser.parse_args()
  config = kappa_config.get_config()
  plan = {p["id"]: p for p in kappa_study.points(config)}
  stored = pathlib.Path(args.workdir) / "points"
  bad = 0
  with tempfile.TemporaryDirectory() as tmp, common.compilation_cache(pathlib.Path(tmp)):
    groups = {}
    for pid in args.ids:
      p = plan[pid]
      key = (p["task"], p["seed"])
      if key not in groups:
        groups[key] = kappa_study.group_runs(config, *key)
      group = groups[key]
      if p["kind"] == "kernel":
        new = kappa_study.kernel_point(config, group, p["seed"])
      else:
        kernel = json.loads((stored / f"{kappa_study.kernel_id(*key)}.json").read_text())
        new = kappa_study.run_point(config, p, group, kernel)
      new = json.loads(json.dumps(records.jsonable(new)))  # exactly as a point file stores it
      old = json.loads((stored / f"{pid}.json").read_text())
      diff = differences(old, new)
      bad += bool(diff)
      print(f"{pid}: {'bit-identical' if not diff else f'{len(diff)} differences'}", flush=True)
      for d in diff[:5]:
        print("   ", d)
  sys.exit(1 if bad else 0)


if __name__ == "__main__":
  main()
