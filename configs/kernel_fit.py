"""Kernel classifiers (ridge, logistic, SVM, asymmetric LS-SVM) on the plain and sign kernels.

  python -m ntkft.kernel_fit --config=configs/kernel_fit.py --workdir=runs/kfit_sst2_16
  python -m ntkft.kernel_fit --config=configs/kernel_fit.py:task=mrpc,kshot=512-13 --workdir=...
CPU smoke run (seconds): `:runlocal` (SST-2 16-shot, 64 eval examples, LoRA on layers 4, 5).

The kernel is over LoRA r=8 on query/value of every layer plus the head (the
parameters configs/glue_*.py fine-tune), at θ0, traced over logits. With the
LoRA init B = 0 only the B factors and the head contribute. Examples: the
LM-BFF k-shot split ``kshot`` ("<k>-<seed>": k per class; train = its train
split, eval = its "test" split, which is the GLUE dev set).

``reg`` is λ of ``(1/n) Σ loss + λ/2 ‖w‖²`` per solver, on kernels divided by
the mean diagonal of the train×train kernel (ntkft.kernel.classifiers).
"""
import ml_collections
from ml_collections import config_dict

from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", kshot="16-13", runlocal=False)
  c = ml_collections.ConfigDict()
  c.task = arg.task
  c.seed = 0                        # head init and subsampling
  c.model = dict(name="minilm-l6", pooling="mean")
  c.peft = dict(methods=("lora",), layers=(4, 5) if arg.runlocal else "all",
                targets=("query", "value"), rank=8, alpha=16.0, dropout=0.0, init="zero_b",
                head=True)
  c.data = dict(root=config_dict.placeholder(str),  # None: $NTKFT_DATA or ../shared/data
                kshot=arg.kshot,    # "<k>-<seed>" or "" (the full GLUE folders)
                train_split="train", eval_split="test",  # use "dev" with kshot=""
                n_train=0, n_eval=0,  # subsample to this many (0: all)
                max_len=128)
  c.kernels = ("plain", "sign")     # J Jᵀ (the NTK), J sign(J)ᵀ (Malladi et al.'s Adam kernel)
  c.solvers = ("ridge", "logistic", "svm", "asym_ls_svm")
  c.reg = dict(ridge=1e-3, logistic=1e-3, svm=1e-3, asym_ls_svm=1e-3)
  c.sign_eps = 0.0                  # ε of the smoothed sign (0: exact sign)
  # Examples per kernel chunk (0: all at once). A column chunk's Jacobians are
  # recomputed for every row chunk, so big chunks save work (memory permitting).
  c.chunk_size = 256
  c.length_buckets = (32, 64, 128)  # Jacobians of examples cut to these lengths
  c.progress = True
  if arg.runlocal:
    c.data.n_eval = 64
    c.data.max_len = 64
    c.chunk_size = 32
    c.length_buckets = (32, 64)
    c.progress = False
  return c
