"""Runs each earlier experiment at a base revision and in this tree; outputs must be bit-identical.

  python tools/recheck_runlocal.py --base=REV                        # tiny BERT (default scale)
  python tools/recheck_runlocal.py --base=REV --experiments=ntk_spectra,lambda_sweep
  python tools/recheck_runlocal.py --base=REV --scale=runlocal       # the real `:runlocal` configs

Issue 21's check that a refactor changes no number: every experiment of ``EXPERIMENTS`` (the
ones with a ``configs/<name>.py`` that has a ``runlocal`` variant, except those of
``EXCLUDED``: the κ study has tools/recheck_kappa_points.py) runs twice, each time in its own
subprocess with its own temporary workdir: once in a temporary ``git worktree`` of REV
(removed at the end) and once in this tree (its working files, uncommitted changes included).
Each subprocess has cwd and ``PYTHONPATH`` = its tree, so it imports that tree's ``ntkft``,
``configs`` and ``experiments`` (checked), with this Python (``sys.executable``),
``PYTHONHASHSEED=0``, ``JAX_PLATFORMS=cpu`` unless set, no ``JAX_COMPILATION_CACHE_DIR`` and
the same ``NTKFT_DATA``.

``--scale=tiny`` shrinks each runlocal config as the experiment's end-to-end test does
(tests/experiments/tiny_configs.py, taken from this tree for both runs) onto tiny random BERTs
written once by this tree and read by both runs (a run stops if the recipe sets a field its
tree's config does not declare, which that tree would ignore). Estimated (not yet measured):
about 6 min on 2 quiet CPU cores, ~12 min when the cores are shared. ``--scale=runlocal`` runs
the ``:runlocal`` configs unchanged (MiniLM): estimated ~15 min on 2 quiet cores.

Then every ``*.json`` and ``*.jsonl`` file the two runs wrote (results.json, the runs'
summary.json, config.json and metrics.jsonl, ...; not under ``xla_cache/`` or ``ckpt/``) is
compared leaf by leaf, and every ``*.npz`` array by dtype, shape and bytes. "Bitwise" means:
each JSON number equals the other exactly (floats as the same 64-bit pattern, so -0.0 != 0.0,
and NaN equals NaN; 1 != 1.0 != True), strings equal after each run's workdir and tree are
replaced by ``<workdir>`` and ``<tree>``, the same keys and list lengths, the same files.
Keys that hold wall-clock or machine facts are skipped (:func:`ignored_key`: ``seconds``,
``*_seconds``, ``*_s``, timestamps, ``machine``, host, load). Exit 0 when everything is
identical; 1 on any difference or a failed run (the first ``--show`` differences and the log's
tail are printed); 2 on bad arguments.

Bit-identity holds on one kind of CPU: both runs here run on this machine. Across CPUs (vector
width, XLA's thread partitioning) float32 results differ in their last bits, and only a
tolerance check is meaningful.
"""
import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent   # the tree being checked
TINY_CONFIGS = REPO / "tests" / "experiments" / "tiny_configs.py"
# The earlier experiments, in running order; others with a runlocal config are found too.
EXPERIMENTS = ("ntk_spectra", "perturbation_bounds", "lambda_sweep", "spectrum_correlation",
               "selection_validation")
EXCLUDED = ("kappa_study", "selection_study", "task_arithmetic")
COMPARED_SUFFIXES = (".json", ".jsonl", ".npz")
SKIPPED_FOLDERS = ("xla_cache", "ckpt")   # compilation cache; orbax checkpoints (timestamps)

# ------------------------------------------------------------------ comparison (pure)

WALL_CLOCK_KEYS = frozenset({"seconds", "time", "timestamp", "date", "datetime", "machine",
                             "host", "hostname", "load", "loadavg", "load_average"})
WALL_CLOCK_SUFFIXES = ("_seconds", "_s", "_secs", "_time", "_timestamp", "_date", "_host",
                       "_hostname")


def ignored_key(key) -> bool:
  """Whether a JSON key holds a wall time or a fact about the machine (not compared):
  ``seconds``, ``time``, ``timestamp``, ``date``, ``machine``, ``host(name)``, ``load``,
  any key ending in ``_seconds``, ``_s`` (``examples_per_s``), ``_secs``, ``_time``,
  ``_timestamp``, ``_date``, ``_host(name)``, or with a ``seconds`` word
  (``wall_seconds_this_session``)."""
  k = str(key).lower()
  return k in WALL_CLOCK_KEYS or k.endswith(WALL_CLOCK_SUFFIXES) or "seconds" in k.split("_")


def same_leaf(a, b) -> bool:
  """Bitwise equality of two JSON leaves: same Python type (bool, int, float, str, None),
  floats with the same IEEE-754 double bit pattern (NaN == NaN, -0.0 != 0.0)."""
  if type(a) is not type(b):
    return False
  if isinstance(a, float):
    return struct.pack("<d", a) == struct.pack("<d", b)
  return a == b


def differences(base, current, path: str = "$") -> list[str]:
  """Every place where two parsed JSON values differ, as ``"<path>: <what>"`` lines
  (``path`` like ``$.tasks.sst2.rows[0].kappa``); keys with :func:`ignored_key` are skipped
  on both sides, dict key order does not matter, lists must have the same length."""
  if isinstance(base, dict) and isinstance(current, dict):
    out = [f"{path}.{k}: only in {'base' if k in base else 'current'}"
           for k in sorted(set(base) ^ set(current), key=str) if not ignored_key(k)]
    for k in sorted(set(base) & set(current), key=str):
      if not ignored_key(k):
        out += differences(base[k], current[k], f"{path}.{k}")
    return out
  if isinstance(base, list) and isinstance(current, list):
    if len(base) != len(current):
      return [f"{path}: length {len(base)} in base != {len(current)} in current"]
    return [d for i, (x, y) in enumerate(zip(base, current))
            for d in differences(x, y, f"{path}[{i}]")]
  if same_leaf(base, current):
    return []
  return [f"{path}: base {base!r} ({type(base).__name__}) != current {current!r} "
          f"({type(current).__name__})"]


def normalize(value, replacements: dict[str, str]):
  """``value`` (parsed JSON) with each ``replacements`` key (a path prefix, e.g. a run's
  workdir) replaced by its value in every string, longest key first."""
  if isinstance(value, dict):
    return {k: normalize(v, replacements) for k, v in value.items()}
  if isinstance(value, list):
    return [normalize(v, replacements) for v in value]
  if isinstance(value, str):
    for old in sorted(replacements, key=len, reverse=True):
      value = value.replace(old, replacements[old])
  return value


# ------------------------------------------------------------------ outputs of one run


def output_files(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
  """{path relative to workdir: path} of the compared files a run wrote."""
  return {str(p.relative_to(workdir)): p for p in sorted(workdir.rglob("*"))
          if p.is_file() and p.name.endswith(COMPARED_SUFFIXES)
          and not set(p.relative_to(workdir).parts) & set(SKIPPED_FOLDERS)}


def read_json(path: pathlib.Path):
  """A .json file's value, or a .jsonl file's list of line values."""
  text = path.read_text()
  if path.suffix == ".jsonl":
    return [json.loads(line) for line in text.splitlines() if line.strip()]
  return json.loads(text)


def npz_differences(base: pathlib.Path, current: pathlib.Path) -> list[str]:
  """Arrays of two .npz files that differ in name, dtype, shape or bytes."""
  import numpy as np
  with np.load(base) as a, np.load(current) as b:
    out = [f"[{k}]: only in {'base' if k in a.files else 'current'}"
           for k in sorted(set(a.files) ^ set(b.files))]
    for k in sorted(set(a.files) & set(b.files)):
      x, y = a[k], b[k]
      if x.dtype != y.dtype or x.shape != y.shape:
        out.append(f"[{k}]: {x.dtype}{list(x.shape)} in base != {y.dtype}{list(y.shape)}")
      elif x.tobytes() != y.tobytes():
        bad = int(np.sum(x != y)) if x.dtype.kind in "fciub" else "some"
        out.append(f"[{k}]: {bad} of {x.size} elements differ")
  return out


def compare_runs(base: pathlib.Path, current: pathlib.Path, base_paths: dict[str, str],
                 current_paths: dict[str, str]) -> tuple[list[str], int]:
  """(differences, number of files compared) between two runs' workdirs; ``*_paths``: the
  path prefixes of each run (workdir, tree) and what :func:`normalize` makes of them."""
  a, b = output_files(base), output_files(current)
  out = [f"{rel}: written only by {'base' if rel in a else 'current'}"
         for rel in sorted(set(a) ^ set(b))]
  for rel in sorted(set(a) & set(b)):
    if rel.endswith(".npz"):
      diff = npz_differences(a[rel], b[rel])
    else:
      diff = differences(normalize(read_json(a[rel]), base_paths),
                         normalize(read_json(b[rel]), current_paths))
    out += [f"{rel}: {d}" for d in diff]
  return out, len(set(a) & set(b))


# ------------------------------------------------------------------ child processes


def _load_tiny_configs():
  """tests/experiments/tiny_configs.py of this tree, by file (a base tree may not have it)."""
  spec = importlib.util.spec_from_file_location("_recheck_tiny_configs", TINY_CONFIGS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _check_imported_from(tree: pathlib.Path, *modules) -> None:
  for m in modules:
    where = pathlib.Path(m.__file__).resolve()
    if tree not in where.parents:
      sys.exit(f"recheck_runlocal: {m.__name__} was imported from {where}, not from {tree}")


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
  """Dotted names of the fields of a nested config dict."""
  keys = set()
  for k, v in tree.items():
    keys.add(prefix + k)
    if isinstance(v, dict):
      keys |= _flat_keys(v, f"{prefix}{k}.")
  return keys


def tiny_model_dir(models: pathlib.Path, num_layers: int) -> pathlib.Path:
  return models / f"tiny_bert_L{num_layers}"


def child(args) -> None:
  """In a subprocess (cwd = a tree): ``prepare`` writes the tiny BERTs; ``run`` runs one
  experiment into ``args.workdir``."""
  tree = pathlib.Path.cwd().resolve()
  sys.path[:] = [p for p in sys.path if not p or pathlib.Path(p).resolve() != REPO / "tools"]
  models = pathlib.Path(args.models) if args.models else None
  if args.child == "prepare":
    from tests import test_util
    _check_imported_from(tree, test_util)
    for num_layers in sorted({int(n) for n in args.layers.split(",")}):
      test_util.write_tiny_bert_checkpoint(tiny_model_dir(models, num_layers),
                                           num_layers=num_layers)
    return
  config_module = importlib.import_module(f"configs.{args.experiment}")
  experiment = importlib.import_module(f"experiments.{args.experiment}")
  import ntkft
  _check_imported_from(tree, ntkft, config_module, experiment)
  config = config_module.get_config("runlocal")
  if args.scale == "tiny":
    declared = _flat_keys(config.to_dict())
    num_layers, make = _load_tiny_configs().RECIPES[args.experiment]
    config = make(config, tiny_model_dir(models, num_layers), args.data_root)
    undeclared = sorted(_flat_keys(config.to_dict()) - declared)
    if undeclared:   # a field this tree would silently ignore: the two runs would differ
      sys.exit(f"recheck_runlocal: the tiny recipe of {args.experiment} sets {undeclared}, "
               f"which configs/{args.experiment}.py of {tree} does not declare")
  experiment.run(config, args.workdir)


def run_child(tree: pathlib.Path, argv: list[str], log: pathlib.Path,
              data_root: pathlib.Path) -> tuple[bool, float]:
  """(succeeded, seconds) of this script with ``--child`` ``argv`` in ``tree``; its output
  goes to ``log``."""
  env = dict(os.environ, PYTHONPATH=str(tree), NTKFT_DATA=str(data_root), PYTHONHASHSEED="0")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  log.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  with open(log, "w") as f:
    rc = subprocess.call([sys.executable, str(pathlib.Path(__file__).resolve()), *argv],
                         cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
  return rc == 0, time.time() - t0


def log_tail(log: pathlib.Path, lines: int = 25) -> str:
  return "\n".join("      " + line for line in log.read_text().splitlines()[-lines:])


# ------------------------------------------------------------------ the check


def discover(tree: pathlib.Path) -> list[str]:
  """Experiments of ``tree`` with ``def run(`` and a ``configs/<name>.py`` mentioning
  ``runlocal``, minus ``EXCLUDED``; ``EXPERIMENTS`` first, in that order."""
  found = []
  for path in sorted((tree / "experiments").glob("*.py")):
    config = tree / "configs" / path.name
    if (path.stem not in EXCLUDED and config.is_file() and "runlocal" in config.read_text()
        and re.search(r"^def run\(", path.read_text(), re.M)):
      found.append(path.stem)
  return [n for n in EXPERIMENTS if n in found] + [n for n in found if n not in EXPERIMENTS]


def git(*argv: str) -> str:
  return subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True,
                        text=True).stdout.strip()


@contextlib.contextmanager
def worktree(rev: str, path: pathlib.Path):
  """A detached ``git worktree`` of ``rev`` at ``path``, removed on exit."""
  git("worktree", "add", "--detach", str(path), rev)
  try:
    yield path.resolve()
  finally:
    try:
      git("worktree", "remove", "--force", str(path))
    except subprocess.CalledProcessError:
      shutil.rmtree(path, ignore_errors=True)
      git("worktree", "prune")


def check_experiment(name: str, base_tree: pathlib.Path, runs: pathlib.Path,
                     common_argv: list[str], data_root: pathlib.Path, show: int) -> bool:
  """Runs ``name`` in both trees and compares; prints one verdict line; True if identical."""
  outcome = {}
  for side, tree in (("base", base_tree), ("current", REPO)):
    workdir = runs / name / side / "work"
    log = runs / name / f"{side}.log"
    ok, seconds = run_child(tree, [*common_argv, "--child=run", f"--experiment={name}",
                                   f"--workdir={workdir}"], log, data_root)
    if not ok:
      print(f"{name}: FAILED in the {side} tree after {seconds:.0f} s; log {log}:\n"
            f"{log_tail(log)}", flush=True)
      return False
    outcome[side] = (workdir, tree, seconds)
  (w_base, t_base, s_base), (w_cur, t_cur, s_cur) = outcome["base"], outcome["current"]
  diff, num_files = compare_runs(
      w_base, w_cur,
      {str(w_base): "<workdir>", str(w_base.resolve()): "<workdir>", str(t_base): "<tree>"},
      {str(w_cur): "<workdir>", str(w_cur.resolve()): "<workdir>", str(t_cur): "<tree>"})
  times = f"base {s_base:.0f} s, current {s_cur:.0f} s"
  if not num_files and not diff:
    diff = ["no JSON or npz file written"]
  if diff:
    print(f"{name}: {len(diff)} DIFFERENCES ({times}); the first {min(show, len(diff))}:",
          flush=True)
    for d in diff[:show]:
      print("    " + d)
    return False
  print(f"{name}: bit-identical, {num_files} files ({times})", flush=True)
  return True


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", help="git revision to compare against (a commit, branch, ...)")
  parser.add_argument("--experiments", default="",
                      help="comma-separated experiment names (default: all found)")
  parser.add_argument("--scale", choices=("tiny", "runlocal"), default="tiny")
  parser.add_argument("--show", type=int, default=10, help="differences printed per experiment")
  parser.add_argument("--keep", action="store_true",
                      help="keep the runs' workdirs and logs (kept anyway after a failure)")
  for hidden in ("--child", "--experiment", "--workdir", "--models", "--data_root", "--layers"):
    parser.add_argument(hidden, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child is None and not args.base:
    parser.error("--base=REV is required")
  return parser, args


def main(argv=None) -> int:
  parser, args = parse_args(argv)
  if args.child:
    child(args)
    return 0
  found = discover(REPO)
  names = [n.strip() for n in args.experiments.split(",") if n.strip()] or found
  for n in names:
    if n in EXCLUDED:
      parser.error(f"--experiments: {n} is not rechecked here (the κ study: "
                   "tools/recheck_kappa_points.py)")
    if n not in found:
      parser.error(f"--experiments: {n} is not an experiment with a runlocal config; "
                   f"choose from {','.join(found)}")
  recipes = _load_tiny_configs().RECIPES if args.scale == "tiny" else {}
  skipped = [n for n in names if args.scale == "tiny" and n not in recipes]
  if skipped and args.experiments:
    parser.error(f"--experiments: no tiny recipe for {','.join(skipped)} in {TINY_CONFIGS}; "
                 "use --scale=runlocal")
  try:
    rev = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
  except subprocess.CalledProcessError:
    parser.error(f"--base={args.base}: not a commit of {REPO}")
  data_root = pathlib.Path(os.environ.get("NTKFT_DATA", REPO.parent / "shared" / "data"))
  if not (data_root / "glue").is_dir():
    parser.error(f"GLUE data not found at {data_root / 'glue'} (set NTKFT_DATA)")
  names = [n for n in names if n not in skipped]
  dirty = " (with uncommitted changes)" if git("status", "--porcelain") else ""
  print(f"recheck_runlocal: base {rev[:10]} ({args.base}) vs {REPO}{dirty}, scale {args.scale}: "
        f"{', '.join(names)}", flush=True)

  tmp = pathlib.Path(tempfile.mkdtemp(prefix="recheck_runlocal_"))
  failed, not_at_base = [], []
  try:
    with worktree(rev, tmp / "base_tree") as base_tree:
      models = tmp / "models"
      common_argv = [f"--scale={args.scale}", f"--models={models}", f"--data_root={data_root}"]
      if recipes and names:
        layers = ",".join(str(recipes[n][0]) for n in names)
        log = tmp / "runs" / "prepare.log"
        ok, _ = run_child(REPO, [*common_argv, "--child=prepare", f"--layers={layers}"], log,
                          data_root)
        if not ok:
          print(f"writing the tiny BERTs FAILED; log {log}:\n{log_tail(log)}")
          failed.append("prepare")
          return 1
      for name in names:
        if not all((base_tree / d / f"{name}.py").is_file() for d in ("experiments", "configs")):
          print(f"{name}: not at {args.base}: not compared", flush=True)
          not_at_base.append(name)
        elif not check_experiment(name, base_tree, tmp / "runs", common_argv, data_root,
                                  args.show):
          failed.append(name)
  finally:
    if args.keep or failed:   # a failure's logs and outputs stay for a look
      print(f"workdirs and logs kept in {tmp / 'runs'}")
    else:
      shutil.rmtree(tmp, ignore_errors=True)
  identical = len(names) - len(failed) - len(not_at_base)
  notes = [f"{len(failed)} differ or failed ({', '.join(failed)})" if failed else "",
           f"{len(not_at_base)} new since base" if not_at_base else "",
           f"not checked at tiny scale (no recipe): {', '.join(skipped)}" if skipped else ""]
  print(f"recheck_runlocal: {identical} of {len(names)} experiments bit-identical"
        + "".join(f"; {n}" for n in notes if n))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
