"""Empirical NTK of MiniLM at θ0 over LoRA parameters, on n examples of a task.

  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py --workdir=runs/ntk_sst2
  python -m ntkft.ntk_report --config=configs/ntk_spectrum.py:task=rte,kind=sign --workdir=...
CPU smoke run (< 1 min): `:runlocal` (n=16, LoRA on layers 4,5).

The kernel is over the trainable subset (peft.*), traced over logits with the
neural-tangents normalization (mean over outputs). With the LoRA init B=0 only
the B factors (and the head) contribute; peft.init="gaussian" activates A too.
"""
from configs import ntk_common
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", kind="plain", runlocal=False)
  c = ntk_common.get_config(arg.task, arg.runlocal, layers=(4, 5), block_by="layer_projection")
  c.kind = arg.kind                 # "plain" (the NTK) | "sign" (Malladi et al. 2023's Adam kernel)
  c.sign_eps = 0.0                  # ε of the smoothed sign (kind "sign"; 0: exact sign)
  return c
