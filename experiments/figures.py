"""Regenerates every figure as PNG from stored results (no recomputation).

  python -m experiments.figures --results=docs/results --out=docs/figures
  make figures

For each experiment of ``EXPERIMENTS`` whose ``<results>/<name>/results.json``
exists, loads it and writes that experiment's figures into ``<out>/`` (file names
start with the experiment name); experiments without stored results, whose
module is not there, or whose results give no figure yet (the κ and selection
studies until they are complete) are skipped with a printed line. Also writes
``<out>/index.md``: markdown that embeds each figure with the command that
regenerates it and, when the results record it, the machine that produced them
(for the README).
"""
import importlib
import json
import os
import pathlib
from typing import Callable, Optional, Sequence

from absl import flags

from ntkft import cli


def _plot_all(name: str, module: str = "", function: str = "plot_all") -> Callable:
  """``experiments.<module or name>.<function>(results, outdir) -> [PNG paths]``,
  imported when called."""

  def draw(results, outdir):
    return getattr(importlib.import_module(f"experiments.{module or name}"), function)(
        results, outdir)

  return draw


# name -> (notebook or None, title, fn(results dict, outdir) -> [PNG paths]), in notebook
# order; the pilots of the κ and selection studies last (their notebooks now show the studies).
EXPERIMENTS: dict[str, tuple[Optional[str], str, Callable]] = {
    "lambda_sweep": ("01_regimes_vs_lambda.ipynb", "The three regimes vs λ",
                     _plot_all("lambda_sweep")),
    "ntk_spectra": ("02_ntk_spectra.ipynb", "NTK spectra at θ0 per layer choice",
                    _plot_all("ntk_spectra")),
    "kappa_study": ("03_kappa_vs_outcomes.ipynb",
                    "κ study: verdicts, ρ against median lin_gap, κ vs N",
                    _plot_all("kappa_study", "kappa_figures", "plot_kappa_study")),
    "perturbation_bounds": ("04_perturbation_bounds.ipynb",
                            "Weyl bounds vs exact eigenvalues as layers are added",
                            _plot_all("perturbation_bounds")),
    "selection_study": ("05_layer_selection.ipynb", "Selection study: selector vs baselines",
                        _plot_all("selection_study", "kappa_figures", "plot_selection_study")),
    "spectrum_correlation": (None, "Pilot of the κ study: κ vs train loss and dev metric",
                             _plot_all("spectrum_correlation")),
    "selection_validation": (None, "Pilot of the selection study: spectral layer selection vs "
                             "baselines", _plot_all("selection_validation")),
}


def _machine(results: dict) -> str:
  m = results.get("machine")
  if isinstance(m, str) and m:
    return m
  if not isinstance(m, dict):
    return "not recorded in results.json"
  return (f"{m.get('device', '?')} x{m.get('device_count', '?')} ({m.get('backend', '?')}), "
          f"{m.get('cpu_count', '?')} CPUs, {m.get('platform', '?')}, jax {m.get('jax', '?')}")


def regenerate(results_dir, out_dir, names: Optional[Sequence[str]] = None) -> dict:
  """Writes the figures of every experiment with stored results.

  Args:
    results_dir: folder with ``<name>/results.json`` per experiment.
    out_dir: folder for the PNGs (created).
    names: experiments to consider (default: all of ``EXPERIMENTS``).

  Returns:
    {name: [PNG paths]} for the experiments drawn; skipped ones are printed.

  Raises:
    ValueError: an unknown experiment name.
  """
  results_dir, out_dir = pathlib.Path(results_dir), pathlib.Path(out_dir)
  names = list(EXPERIMENTS) if names is None else list(names)
  unknown = [n for n in names if n not in EXPERIMENTS]
  if unknown:
    raise ValueError(f"unknown experiment(s) {unknown}; known: {list(EXPERIMENTS)}")
  out_dir.mkdir(parents=True, exist_ok=True)
  written: dict[str, list[str]] = {}
  index = ["<!-- written by `python -m experiments.figures`; do not edit -->", ""]
  for name in names:
    notebook, title, draw = EXPERIMENTS[name]
    path = results_dir / name / "results.json"
    if not path.is_file():
      print(f"skip {name}: no stored results at {path}")
      continue
    results = json.loads(path.read_text())
    try:
      pngs = draw(results, out_dir)
    except ModuleNotFoundError as e:
      if e.name != f"experiments.{name}":
        raise
      print(f"skip {name}: experiments/{name}.py not available ({e})")
      continue
    if not pngs:
      print(f"skip {name}: its results give no figures yet")
      continue
    written[name] = [str(p) for p in pngs]
    print(f"{name}: wrote {', '.join(written[name])}")
    wall = results.get("wall_seconds")
    index += [f"### {title}", "",
              (f"Notebook `notebooks/{notebook}`; " if notebook else "")
              + f"results `{path}`; machine: {_machine(results)}"
              + (f"; {wall:.0f} s." if isinstance(wall, (int, float)) else "."), ""]
    index += [f"![{name}]({os.path.relpath(p, out_dir)})" for p in written[name]] + [""]
  index += ["Regenerate: `python -m experiments.figures "
            f"--results={results_dir} --out={out_dir}` (or `make figures`).", ""]
  (out_dir / "index.md").write_text("\n".join(index))
  return written


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (the module is importable as a library)."""
  flags.DEFINE_string("results", "docs/results", "Folder with <experiment>/results.json.")
  flags.DEFINE_string("out", "docs/figures", "Folder for the PNGs.")
  flags.DEFINE_string("only", "", "Comma-separated experiments (default: all).")


def main() -> dict:
  """The program: :func:`regenerate` with the flags' folders and experiments."""
  names = [n.strip() for n in flags.FLAGS.only.split(",") if n.strip()] or None
  return regenerate(flags.FLAGS.results, flags.FLAGS.out, names)


if __name__ == "__main__":
  _define_flags()
  cli.main(main)
