"""Which layers (or layer x projection blocks) to fine-tune, from the NTK at θ0.

  python -m ntkft.select --config=configs/select_layers.py --workdir=runs/select_sst2
  python -m ntkft.select --config=configs/select_layers.py:task=rte --workdir=... \
      --config.criterion=max_lambda_min --config.budget=3 --config.search=exhaustive
CPU smoke run (< 1 min): `:runlocal` (n=16, max_len=64).

Candidates are the blocks of the peft subset below (LoRA on query/value of every
layer by default), split by ``block_by``; per-block NTKs (trace over logits,
mean normalization) are computed once at θ0, then a subset of ``budget`` blocks
(and at most ``param_budget`` parameters, 0 = no limit) is chosen for
``criterion`` with ``search``. The other criteria's choices are reported too.
With the LoRA init B=0 only the B factors contribute to the kernel (see
configs/ntk_spectrum.py); ``peft.init="gaussian"`` activates A too.
"""
from configs import ntk_common
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", runlocal=False)
  # The candidate subset (LoRA on every layer): every block of it is a candidate.
  c = ntk_common.get_config(arg.task, arg.runlocal, layers="all", block_by="layer")
  c.budget = 2                      # k: number of blocks to select (0: no limit)
  c.param_budget = 0                # max parameters of the selection (0: no limit)
  c.criterion = "min_kappa"         # "min_kappa" | "max_lambda_min" | "max_alignment"
  c.ridge = 0.0                     # λ: spectra of K_S + λI (spectral criteria)
  c.residual = True                 # alignment with y - f(θ0) (False: y)
  c.search = "greedy"               # "greedy" | "exhaustive"
  c.prune = True                    # greedy: Weyl-bound pruning (False: evaluate everything);
  #                                   exhaustive search always enumerates
  return c
