"""Experiment runs on a tiny random BERT, made once per pytest run and shared by modules.

ntk_spectra_test and perturbation_bounds_test check these runs; figures_test draws its
figures from their results.json (one run of each experiment instead of two). Under
pytest-xdist the workers share them too: the first worker to ask computes a run in the
run's common temp folder while holding a file lock, the others wait for it and read it
(``make test``'s 2 workers otherwise computed each run twice whenever figures_test and
the module checking it landed on different workers). The layer studies' tests shrink
their configs with :func:`tiny_layer_study_config`. The shrinking itself is
tests/experiments/tiny_configs.py (also used by tools/recheck_runlocal.py).
"""
import contextlib
import fcntl
import os
import pathlib
import pickle
import shutil

import pytest

from configs import ntk_spectra as ntk_spectra_config
from configs import perturbation_bounds as perturbation_bounds_config
from experiments import ntk_spectra, perturbation_bounds
from tests.experiments import tiny_configs
from tests.test_util import write_tiny_bert_checkpoint

NUM_LAYERS = tiny_configs.KERNEL_NUM_LAYERS


def _run_folder(tmp_path_factory) -> pathlib.Path:
  """The temp folder of this pytest run that every process of the run sees: under
  pytest-xdist the workers' common parent (the controller's base temp, new each run),
  else the base temp itself."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _exclusive(lock_path):
  """Holds an exclusive lock on the file ``lock_path`` (created) against every other
  process; the OS releases it if the holder dies."""
  with open(lock_path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _tiny_run(tmp_path_factory, name, config_module, experiment, **fields):
  """(config, workdir, returned results) of ``experiment.run`` at runlocal scale on a tiny
  BERT of NUM_LAYERS layers, n = 6 examples of max_len 24, with ``fields`` set.

  Computed once per pytest run in ``<run folder>/session_<name>``: the process that
  computes it stores what ``run`` returned (pickled, so equal to it) beside the workdir;
  every other process of the run reads that. A run that failed left no pickle: the next
  process to ask computes it again from an empty folder.
  """
  root = _run_folder(tmp_path_factory) / f"session_{name}"
  config = tiny_configs.kernel_experiment(config_module.get_config("runlocal"),
                                          root / "tiny_bert", **fields)
  returned_file = root / "returned.pickle"
  with _exclusive(f"{root}.lock"):
    if returned_file.is_file():
      return config, root / "w", pickle.loads(returned_file.read_bytes())
    shutil.rmtree(root, ignore_errors=True)
    write_tiny_bert_checkpoint(root / "tiny_bert", num_layers=NUM_LAYERS)
    returned = experiment.run(config, str(root / "w"))
    returned_file.write_bytes(pickle.dumps(returned))
  return config, root / "w", returned


@pytest.fixture
def tiny_layer_study_config(tmp_path, data_root):
  """``make(config_module, num_layers, **finetune_train)``: the runlocal config of a layer
  study (spectrum_correlation, selection_validation) fine-tuning a tiny BERT of
  ``num_layers`` layers for 2 steps on 32 train / 32 dev examples of the staged data,
  kernels on 8 examples in one chunk; ``finetune_train`` sets more ``finetune.train`` fields."""

  def make(config_module, num_layers: int, **finetune_train):
    return tiny_configs.layer_study(
        config_module.get_config("runlocal"),
        write_tiny_bert_checkpoint(tmp_path / "tiny_bert", num_layers=num_layers), data_root,
        **finetune_train)

  return make


@pytest.fixture(scope="session")
def ntk_spectra_run(tmp_path_factory):
  """ntk_spectra: chunks of 4 (6 = 4 + 2 padded: exercises the chunking), several choices."""
  return _tiny_run(tmp_path_factory, "ntk_spectra", ntk_spectra_config, ntk_spectra,
                   **tiny_configs.NTK_SPECTRA_FIELDS)


@pytest.fixture(scope="session")
def perturbation_bounds_run(tmp_path_factory):
  """perturbation_bounds: one chunk, layers added in the order 2, 0, 1."""
  return _tiny_run(tmp_path_factory, "perturbation_bounds", perturbation_bounds_config,
                   perturbation_bounds, **tiny_configs.PERTURBATION_BOUNDS_FIELDS)
