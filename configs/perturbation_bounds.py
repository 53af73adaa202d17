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
import ml_collections

from ntkft import config_lib
from ntkft.select import bounds


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", order="sequential", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.n = 128                         # examples (a fixed random sample of the split)
  c.seed = 0
  c.model = dict(name="minilm-l6", pooling="mean")
  c.peft = dict(methods=("lora",), layers="all", targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=False)
  c.block_by = "layer"              # "layer" | "layer_projection"
  # "sequential" (0, 1, ..., 5), "greedy" (greedy min-κ order) or "5,4,3" (any blocks).
  c.order = arg.order
  c.ridge = 0.0                     # spectra of K_S + ridge·I
  c.rtol = bounds.DEFAULT_RTOL      # rounding slack of the checks (relative)
  c.data = dict(root=None, split="train", max_len=128)
  c.implementation = "jacobian_contraction"
  c.chunk_size = 32                 # examples per NTK chunk (0: no chunking)
  if arg.runlocal:
    c.n = 16
    c.chunk_size = 8
    c.data.max_len = 64
  return c
