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
import ml_collections

from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.n = 128                         # examples (a fixed random sample of the split)
  c.seed = 0
  c.model = dict(name="minilm-l6", pooling="mean")
  # The candidate subset: every block of it is a candidate.
  c.peft = dict(methods=("lora",), layers="all", targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=False)
  c.block_by = "layer"              # "layer" | "layer_projection"
  c.budget = 2                      # k: number of blocks to select (0: no limit)
  c.param_budget = 0                # max parameters of the selection (0: no limit)
  c.criterion = "min_kappa"         # "min_kappa" | "max_lambda_min" | "max_alignment"
  c.ridge = 0.0                     # λ: spectra of K_S + λI (spectral criteria)
  c.residual = True                 # alignment with y - f(θ0) (False: y)
  c.search = "greedy"               # "greedy" | "exhaustive"
  c.prune = True                    # Weyl-bound pruning (False: evaluate everything)
  c.data = dict(root=None, split="train", max_len=128)
  c.implementation = "jacobian_contraction"
  c.chunk_size = 32                 # examples per NTK chunk (0: no chunking)
  c.memory_budget_mb = 0.0          # bound on per-chunk Jacobians (0: none)
  c.progress = True
  if arg.runlocal:
    c.n = 16
    c.chunk_size = 8
    c.data.max_len = 64
  return c
