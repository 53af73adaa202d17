"""Empirical NTK of MiniLM at θ0 over LoRA parameters, on n examples of a task.

  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py --workdir=runs/ntk_sst2
  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py:task=rte,kind=adam --workdir=...
CPU smoke run (< 1 min): `:runlocal` (n=16, LoRA on layers 4,5).

The kernel is over the trainable subset (peft.*), traced over logits with the
neural-tangents normalization (mean over outputs). With the LoRA init B=0 only
the B factors (and the head) contribute; peft.init="gaussian" activates A too.
"""
import ml_collections

from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", kind="ntk", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.kind = arg.kind                 # "ntk" | "adam" (sign kernel, Malladi et al. 2023)
  c.n = 128                         # examples (a fixed random sample of the split)
  c.seed = 0
  c.model = dict(name="minilm-l6", pooling="mean")
  c.peft = dict(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=False)
  c.data = dict(root=None, split="train", max_len=128)
  c.implementation = "jacobian_contraction"  # or "ntk_vector_products"
  c.block_by = "layer_projection"   # per-block kernels: "layer" | "layer_projection" | "leaf"
  c.chunk_size = 32                 # examples per chunk (0: no chunking)
  c.memory_budget_mb = 0.0          # bound on per-chunk Jacobians (0: none)
  c.adam_eps = 0.0                  # ε of the smoothed sign (0: exact sign)
  c.progress = True
  if arg.runlocal:
    c.n = 16
    c.chunk_size = 8
    c.data.max_len = 64
  return c
