"""NTK spectra at θ0 of MiniLM for different choices of fine-tuned layers.

  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py --workdir=runs/ntk_spectra
  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py:task=rte --workdir=...
CPU smoke run (~35 s on 2 cores): `:runlocal` (n=16, max_len=64).

Per-block kernels (``block_by="layer"``) of LoRA r=8 on query/value over all six
MiniLM layers are computed once; each choice S in ``choices`` is analysed via
K_S = Σ_{b∈S} K_b. With the LoRA init B=0 only the B factors contribute.
"""
from configs import ntk_common
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", runlocal=False)
  c = ntk_common.get_config(arg.task, arg.runlocal, layers="all", block_by="layer")
  c.progress = False
  # Layer choices S: "singles" (each block), "all", or tuples of layer indices /
  # block names.
  c.choices = ("singles", (0, 1), (2, 3), (4, 5), (0, 5), "all")
  c.ridge = 0.0                     # spectra of K_S + ridge·I
  return c
