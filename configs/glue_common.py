"""Shared fields of the GLUE fine-tuning configs (every key is declared here).

Config arguments (after the file name, comma-separated): ``task=<name>``,
``runlocal`` (a tiny run for CPU smoke tests: 128 train / 128 dev examples,
max_len 64, batch 16, 16 steps).
"""
import ml_collections
from ml_collections import config_dict

from ntkft import config_lib


def get_config(arg=None, mode="linearized"):
  arg = config_lib.parse_arg(arg, task="sst2", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.mode = mode                   # "nonlinear" | "linearized"
  c.seed = 0
  c.lam = 0.0                     # λ of the pull λ/2‖θ − θ0‖² (0: off)
  c.pull = dict(form="loss",      # "loss": added to the gradient; "decoupled": optax transform
                selective="none")  # "none" | "global" | "per_block" (paper eq. 8)
  c.loss = "auto"                 # "auto": "squared" for regression (STS-B), else
  #                                 "cross_entropy"; or set "cross_entropy" | "squared"
  #                                 (the theory's loss)

  c.model = dict(name="minilm-l6",  # or a local HF BERT/RoBERTa folder
                 pooling="mean",    # "mean" | "cls"
                 dropout=0.0, load_head=True)
  c.peft = dict(methods=("lora",), layers="all", targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=True)

  c.data = dict(root=config_dict.placeholder(str),  # None: $NTKFT_DATA or ../shared/data
                # "<k>-<seed>" (e.g. "512-13"): read every split from the LM-BFF
                # few-shot folder <root>/k-shot-1k-test/<TASK>/<k>-<seed> (its
                # "test" split is the GLUE dev set); "": the full GLUE folders.
                kshot="",
                train_split="train", eval_split="dev",
                n_train=2000, n_eval=0,  # 0: all
                stratified=False, max_len=128, buckets=(32, 64, 128),
                batch_size=32, eval_batch_size=128)
  c.optim = dict(name="adam", lr=1e-3, warmup_steps=20, decay="linear", momentum=0.0,
                 weight_decay=0.0, clip_norm=1.0, grad_accum_steps=1)
  c.train = dict(steps=250, log_every=10, eval_every=0, ckpt_every=50, ckpt_keep=2,
                 progress=True)
  c.prefix_cache = False          # True: states below the lowest trained layer computed once
  #   per example (ntkft.train.prefix_cache; needs model.dropout = 0)
  c.lin_gap = False               # True (nonlinear runs): summary["lin_gap"] on the eval split
  c.mesh = (("data", -1),)        # device mesh axes; -1 takes the remaining devices
  #   CLI: --config.mesh="(('data', 8),)"  (batch sizes must divide by the data size)
  c.fsdp = False                  # split big matrices (not LoRA) along 'data' (ntkft.train.mesh)
  c.distributed = dict(           # multi-process jax.distributed (ntkft.train.distributed)
      enabled=False,              # True: auto-detect the cluster (TPU pod, SLURM, ...)
      # "host:port" (or env JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)
      coordinator_address=config_dict.placeholder(str),
      num_processes=config_dict.placeholder(int),
      process_id=config_dict.placeholder(int),
      cpu_collectives="gloo")     # CPU cross-process collectives (tests, CPU clusters)

  if arg.runlocal:
    config_lib.shrink_to_smoke_run(c, n=128, max_len=64, batch_size=16, warmup_steps=2,
                                   steps=16, log_every=4)
    c.train.ckpt_every = 8
  return c
