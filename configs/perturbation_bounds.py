"""Weyl bounds vs exact NTK eigenvalues of MiniLM as LoRA layers are added.

  python -m experiments.perturbation_bounds --config=configs/perturbation_bounds.py \
      --workdir=runs/perturbation_bounds
  python -m experiments.perturbation_bounds --config=configs/perturbation_bounds.py:order=greedy \
      --workdir=...
CPU smoke run (~35 s on 2 cores): `:runlocal` (n=16, max_len=64). Expected: 0 violations.

Per-block kernels (``block_by="layer"``) of LoRA r=8 on query/value over all six
MiniLM layers are computed once; the blocks are added one at a time in
``order`` and the Weyl bounds on the spectrum of K_S + K_b are compared with the
exact eigenvalues at every step.
"""
from configs import ntk_common
from ntkft import config_lib
from ntkft.select import bounds


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", order="sequential", runlocal=False)
  c = ntk_common.get_config(arg.task, arg.runlocal, layers="all", block_by="layer")
  c.progress = False
  # "sequential" (0, 1, ..., 5), "greedy" (greedy min-κ order) or "5,4,3" (any blocks).
  c.order = arg.order
  c.ridge = 0.0                     # spectra of K_S + ridge·I
  c.rtol = bounds.DEFAULT_RTOL      # rounding slack of the checks (relative)
  return c
