"""How linear is fine-tuning? Nonlinear vs linearized vs closed-form runs over a λ grid.

  python -m experiments.lambda_sweep --config=configs/lambda_sweep.py --workdir=runs/lambda_sst2
  python -m experiments.lambda_sweep --config=configs/lambda_sweep.py:runlocal --workdir=/tmp/ls

The theory's setting: squared loss on one-hot targets, plain (S)GD with the pull
λ/2‖θ − θ0‖² added to the gradient, full batch over a fixed sample of n_train
training examples (batch_size=0), so the linearized run equals the closed-form
kernel trajectory step for step. ``lr_relative > 0`` sets η = lr_relative · 2/L
with L = λmax(K)/n + max(lams) (the stable-step limit of the stiffest λ);
otherwise η = lr. ``:runlocal`` is a CPU smoke run (< 3 min): MiniLM, LoRA on
layer 5, n_train = n_eval = 8, max_len 32, 12 steps.
"""
import ml_collections
from ml_collections import config_dict

from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.seed = 0
  c.n_train = 64                    # fixed sample of the train split (the full batch)
  c.n_eval = 64                     # sample of the eval split
  c.model = dict(name="minilm-l6", pooling="mean")
  c.peft = dict(methods=("lora",), layers=(4, 5), targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=True)
  c.lams = (0.0, 0.01, 0.1, 1.0)    # λ grid of the pull
  c.selective = "none"              # "none" | "global" | "per_block" (paper eq. 8)
  c.block_by = "layer_projection"   # blocks of selective="per_block" (ntkft.models.blocks)
  c.optimizer = "sgd"               # the theory's optimizer (the only one supported here)
  c.lr = 0.1                        # η (used when lr_relative == 0)
  c.lr_relative = 0.5               # > 0: η = lr_relative · 2/L
  c.batch_size = 0                  # 0: full batch (closed form exact); else minibatch SGD
  c.steps = 100
  c.record_every = 10
  c.ntk_batch_size = 16             # example chunk of the kernel computation
  c.data = dict(root=config_dict.placeholder(str),  # None: $NTKFT_DATA or ../shared/data
                train_split="train", eval_split="dev", max_len=64)
  if arg.runlocal:
    c.n_train = 8
    c.n_eval = 8
    c.peft.layers = (5,)
    c.steps = 12
    c.record_every = 4
    c.ntk_batch_size = 8
    c.data.max_len = 32
  return c
