"""NTK spectra at θ0 of MiniLM for different choices of fine-tuned layers.

  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py --workdir=runs/ntk_spectra
  python -m experiments.ntk_spectra --config=configs/ntk_spectra.py:task=rte --workdir=...
CPU smoke run (~35 s on 2 cores): `:runlocal` (n=16, max_len=64).

Per-block kernels (``block_by="layer"``) of LoRA r=8 on query/value over all six
MiniLM layers are computed once; each choice S in ``choices`` is analysed via
K_S = Σ_{b∈S} K_b. With the LoRA init B=0 only the B factors contribute.
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
  c.peft = dict(methods=("lora",), layers="all", targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=False)
  c.block_by = "layer"              # "layer" | "layer_projection"
  # Layer choices S: "singles" (each block), "all", or tuples of layer indices /
  # block names.
  c.choices = ("singles", (0, 1), (2, 3), (4, 5), (0, 5), "all")
  c.ridge = 0.0                     # spectra of K_S + ridge·I
  c.data = dict(root=None, split="train", max_len=128)
  c.implementation = "jacobian_contraction"
  c.chunk_size = 32                 # examples per NTK chunk (0: no chunking)
  if arg.runlocal:
    c.n = 16
    c.chunk_size = 8
    c.data.max_len = 64
  return c
