"""Shared fields of the configs that compute NTKs at θ0 on a sample of a task.

Used by configs/{ntk_spectrum,select_layers,ntk_spectra,perturbation_bounds}.py
(read by ``ntkft.theta0.build_theta0`` and ``ntkft.theta0.kernels.kernel_sample`` /
``kernels_of_config``). ``runlocal``:
n=16 examples, chunks of 8, max_len 64 (a CPU smoke run).
"""
import ml_collections
from ml_collections import config_dict


def get_config(task: str, runlocal: bool, layers="all",
               block_by: str = "layer") -> ml_collections.ConfigDict:
  """Args: task name; runlocal; the LoRA ``layers`` ("all" or indices); ``block_by``."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.n = 128                         # examples (a fixed random sample of the split)
  c.seed = 0
  c.model = dict(name="minilm-l6", pooling="mean")
  # LoRA r=8 on query/value; with the init B=0 only the B factors contribute to
  # the kernel (peft.init="gaussian" activates A too).
  c.peft = dict(methods=("lora",), layers=layers, targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=False)
  c.block_by = block_by             # per-block kernels: "layer" | "layer_projection" | "leaf"
  c.data = dict(root=config_dict.placeholder(str), split="train", max_len=128)
  c.implementation = "jacobian_contraction"  # or "ntk_vector_products"
  c.chunk_size = 32                 # examples per NTK chunk (0: no chunking)
  c.memory_budget_mb = 0.0          # MiB bound on per-chunk Jacobians (0: none); bytes in ntkft.ntk
  # e.g. (16, 32, 64, 128): Jacobians of examples cut to the shortest bucket that
  # holds their tokens (ntkft.ntk.lengths; same kernel, less padding work, one
  # compile per bucket and group size). (): off. Needs jacobian_contraction.
  c.length_buckets = ()
  c.progress = True                 # a progress bar over kernel chunks
  if runlocal:
    c.n = 16
    c.chunk_size = 8
    c.data.max_len = 64
  return c
