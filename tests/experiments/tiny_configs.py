"""Runlocal experiment configs shrunk to a tiny random BERT: the settings of the end-to-end
experiment tests, for tests/experiments/conftest.py, tools/recheck_runlocal.py and the
notebook that ``make test`` executes (tests/notebooks/notebooks_test.py).

Pure edits of a ``get_config("runlocal")`` ConfigDict: nothing here imports JAX or pytest
or writes a file. The caller writes the tiny BERT with
``tests.test_util.write_tiny_bert_checkpoint(folder, num_layers=...)`` and passes its folder.

``RECIPES[name] = (num_layers, make)``: ``make(config, model_dir, data_root)`` shrinks the
runlocal config of ``experiments.<name>`` as its end-to-end test does, on a tiny BERT of
``num_layers`` layers (tools/recheck_runlocal.py runs each once per tree).
"""
from typing import Callable

# Per-block kernel experiments (ntk_spectra, perturbation_bounds): the session runs of
# tests/experiments/conftest.py, which their tests check.
KERNEL_NUM_LAYERS = 3
NTK_SPECTRA_FIELDS = dict(chunk_size=4,  # 6 = 4 + 2 padded: exercises the chunking
                          choices=("singles", (0, 2), ("layer_2", "layer_0"), "all", 1))
PERTURBATION_BOUNDS_FIELDS = dict(chunk_size=0, order="2,0,1")  # one chunk; layers 2, 0, 1


def kernel_experiment(config, model_dir, **fields):
  """``config`` (a per-block kernel experiment's runlocal config) on the tiny BERT in
  ``model_dir``: n = 6 examples of max_len 24, with ``fields`` set; returns it."""
  config.model.name = str(model_dir)
  config.n = 6
  config.data.max_len = 24
  for key, value in fields.items():
    config[key] = value
  return config


def layer_study(config, model_dir, data_root, **finetune_train):
  """``config`` (spectrum_correlation's or selection_validation's runlocal config)
  fine-tuning the tiny BERT in ``model_dir`` for 2 steps on 32 train / 32 dev examples
  of the staged data in ``data_root``, kernels on 8 examples in one chunk;
  ``finetune_train`` sets more ``finetune.train`` fields; returns it."""
  f = config.finetune
  f.model.name = str(model_dir)
  f.data.root = str(data_root)
  f.data.n_train = 32
  f.data.n_eval = 32
  f.data.eval_batch_size = 32
  f.train.steps = 2
  for key, value in finetune_train.items():
    f.train[key] = value
  config.n_kernel = 8
  config.kernel_chunk = 8
  return config


def spectrum_correlation(config, model_dir, data_root):
  """As tests/experiments/spectrum_correlation_test.py: 3 layers, sets (0,), (2,), (1, 2)."""
  config = layer_study(config, model_dir, data_root, log_every=1)
  config.layer_sets = ((0,), (2,), (1, 2))
  config.num_boot = 100
  return config


def selection_validation(config, model_dir, data_root):
  """As tests/experiments/selection_validation_test.py: 2 layers, budget 1, seeds 0 and 1."""
  config = layer_study(config, model_dir, data_root)
  config.budget = 1
  config.seeds = (0, 1)
  config.num_random = 1
  return config


def lambda_sweep(config, model_dir, data_root):
  """As tests/experiments/lambda_sweep_test.py: 1 layer, λ 0, 0.1, 1, n = 4, 4 steps.
  (``data_root`` unused: the sweep reads ``$NTKFT_DATA``, as in the test.)"""
  del data_root
  config.model.name = str(model_dir)
  config.peft.layers = (0,)
  config.lams = (0.0, 0.1, 1.0)
  config.n_train = config.n_eval = 4
  config.steps, config.record_every = 4, 2
  return config


RECIPES: dict[str, tuple[int, Callable]] = {
    "lambda_sweep": (1, lambda_sweep),
    "spectrum_correlation": (3, spectrum_correlation),
    "selection_validation": (2, selection_validation),
    "ntk_spectra": (KERNEL_NUM_LAYERS, lambda c, m, d: kernel_experiment(
        c, m, **NTK_SPECTRA_FIELDS)),
    "perturbation_bounds": (KERNEL_NUM_LAYERS, lambda c, m, d: kernel_experiment(
        c, m, **PERTURBATION_BOUNDS_FIELDS)),
}
