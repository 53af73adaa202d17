"""Does spectral layer selection pick good layers? Selector vs fixed and random pairs.

  python -m experiments.selection_validation --config=configs/selection_validation.py \
      --workdir=runs/selection_validation
  python -m experiments.selection_validation \
      --config=configs/selection_validation.py:runlocal --workdir=/tmp/sv

Config arguments: ``runlocal``; ``task=rte`` (one task) or ``tasks=sst2+rte``
('+'-separated).

Per task, a budget of ``budget`` = 2 layers: the selector's choice
(``criterion`` over K_S = Σ_{i∈S} K_{layer_i} + K_head on ``n_kernel``
training examples at θ0 of ``seed``; the other criteria's choices are
recorded), the last two layers (4, 5), the first two (0, 1) and
``num_random`` random pairs (seeded by ``random_seed`` and the task name,
distinct from the other arms while enough pairs remain). Every arm is
fine-tuned with the settings of configs/spectrum_correlation.py
(``finetune_settings``) but 24 instead of 32 Adam steps (budget), for each seed
of ``seeds``; a seed sets the head and LoRA init, the data order and the
256-example training subsample, while the k-shot split stays 512-13 for every
seed (the split is data, the seed is the run's randomness).

Cost (2-core CPU; measured on the correlation study's runs, shared machine at
load ~5, and scaled by CPU time to a quiet machine): a run takes ~25-30 s quiet
on SST-2 (~45 s at load 5) and ~35-40 s on MRPC/QNLI (64-token buckets; deeper
layer sets backpropagate through more layers), plus ~30-45 s of kernels per task.
6 arms x 3 seeds x 3 tasks = 54 runs (fewer when arms coincide, e.g. the
selector picks (4, 5)): about 25-30 min on a quiet machine, ~45-50 min at load
~5. Cut with ``tasks=sst2+mrpc`` or ``--config.seeds='(0,1)'``. A rerun in the
same workdir skips finished runs.
`:runlocal` (SST-2, n=16, one seed, one random pair, 6 steps): < 3 min.
"""
import ml_collections

from configs import spectrum_correlation
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="", tasks="", runlocal=False)
  c = ml_collections.ConfigDict()
  c.tasks = spectrum_correlation.tasks_arg(
      arg, ("sst2",) if arg.runlocal else spectrum_correlation.DEFAULT_TASKS)
  c.seed = 0                        # θ0 of the kernels the selector sees
  c.seeds = (0, 1, 2)               # fine-tuning seeds of every arm
  c.n_kernel = 128
  c.kernel_chunk = 32
  c.budget = 2                      # layers per arm
  c.criterion = "min_kappa"         # the selector: "min_kappa" | "max_lambda_min" | "max_alignment"
  # "exhaustive" is exact for K_S + K_head; "greedy" sees the head split over the
  # blocks (K_b + K_head/budget) also at its intermediate steps.
  c.search = "exhaustive"
  c.ridge = 0.0                     # spectra of K_S + ridge I (spectral criteria)
  c.residual = True                 # alignment with y - f(θ0) (False: y)
  c.num_random = 3                  # random pairs
  c.random_seed = 0
  c.xla_cache = True
  c.keep_checkpoints = False
  c.finetune = spectrum_correlation.finetune_settings(arg.runlocal)
  if not arg.runlocal:
    # 24 steps instead of the correlation study's 32: 54 runs must fit ~25-30 min.
    c.finetune.train.steps = 24
    c.finetune.optim.warmup_steps = 3
  if arg.runlocal:
    c.n_kernel = 16
    c.kernel_chunk = 16
    c.seeds = (0,)
    c.num_random = 1
  return c
