"""Experiment runs on a tiny random BERT, made once per session and shared by modules.

ntk_spectra_test and perturbation_bounds_test check these runs; figures_test draws its
figures from their results.json (one run of each experiment instead of two).
"""
import pytest

from configs import ntk_spectra as ntk_spectra_config
from configs import perturbation_bounds as perturbation_bounds_config
from experiments import ntk_spectra, perturbation_bounds
from tests.test_util import write_tiny_bert_checkpoint

NUM_LAYERS = 3


@pytest.fixture(scope="session")
def ntk_spectra_run(tmp_path_factory):
  """(config, workdir, returned results) of ntk_spectra.run: 3 layers, n = 6."""
  root = tmp_path_factory.mktemp("ntk_spectra")
  config = ntk_spectra_config.get_config("runlocal")
  config.model.name = str(write_tiny_bert_checkpoint(root / "tiny_bert", num_layers=NUM_LAYERS))
  config.n = 6
  config.chunk_size = 4          # 6 = 4 + 2 padded: exercises the chunking
  config.data.max_len = 24
  config.choices = ("singles", (0, 2), ("layer_2", "layer_0"), "all", 1)
  returned = ntk_spectra.run(config, str(root / "w"))
  return config, root / "w", returned


@pytest.fixture(scope="session")
def perturbation_bounds_run(tmp_path_factory):
  """(config, workdir, returned results) of perturbation_bounds.run: 3 layers, n = 6."""
  root = tmp_path_factory.mktemp("perturbation_bounds")
  config = perturbation_bounds_config.get_config("runlocal")
  config.model.name = str(write_tiny_bert_checkpoint(root / "tiny_bert", num_layers=NUM_LAYERS))
  config.n = 6
  config.chunk_size = 0
  config.data.max_len = 24
  config.order = "2,0,1"
  returned = perturbation_bounds.run(config, str(root / "w"))
  return config, root / "w", returned
