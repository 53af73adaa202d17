"""README Findings §4-§5 (the κ and selection studies) as markdown, from their results.json.

  python tools/render_kappa_findings.py [--kappa=docs/results/kappa_study/results.json]
      [--selection=docs/results/selection_study/results.json] [--out=FILE]

Prints (or writes to ``--out``) ``experiments.kappa_findings.render_kappa`` and
``render_selection`` of the stored results: the verdict table, one sentence per
hypothesis, the partial ρ (depth and size controlled) beside every ρ, and the
exploratory tables once every point exists; before that, "study incomplete: N
of M points" and each hypothesis's status. Pasted into README §4-§5, every
number names the results.json key it comes from. Relative paths that do not
exist from the current folder are read from the repository root.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # the repository root

from experiments import kappa_findings

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _path(arg: str) -> pathlib.Path:
  path = pathlib.Path(arg)
  return path if path.is_absolute() or path.exists() else ROOT / path


def _shown(path: pathlib.Path) -> str:
  try:
    return str(path.resolve().relative_to(ROOT))
  except ValueError:
    return str(path)


def _load(path: pathlib.Path, required: bool):
  if not path.is_file():
    if required:
      raise SystemExit(f"render_kappa_findings: no results at {path}")
    return None
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise SystemExit(f"render_kappa_findings: {path} is not JSON ({e})") from None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kappa", default=kappa_findings.KAPPA_SOURCE,
                      help="the κ study's results.json")
  parser.add_argument("--selection", default=kappa_findings.SELECTION_SOURCE,
                      help="the selection study's results.json (absent: 'not started')")
  parser.add_argument("--out", default="", help="write the markdown here instead of printing")
  args = parser.parse_args(argv)
  kappa_path, selection_path = _path(args.kappa), _path(args.selection)
  kappa, selection = _load(kappa_path, True), _load(selection_path, False)
  try:
    text = "\n\n".join([kappa_findings.render_kappa(kappa, _shown(kappa_path)),
                        kappa_findings.render_selection(selection, _shown(selection_path))])
  except ValueError as e:
    raise SystemExit(f"render_kappa_findings: {e}") from None
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  else:
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
