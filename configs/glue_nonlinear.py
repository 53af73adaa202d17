"""Ordinary (nonlinear) LoRA fine-tuning of MiniLM on a GLUE task.

  python -m ntkft.run --config=configs/glue_nonlinear.py --workdir=runs/sst2_nonlin
CPU smoke run (< 2 min on 2 cores): `--config=configs/glue_nonlinear.py:runlocal`.

Same data, parameter subset and optimizer as configs/glue_linearized.py; only the
model differs (f(θ) instead of its tangent at θ0).
"""
from configs import glue_common


def get_config(arg=None):
  return glue_common.get_config(arg, mode="nonlinear")
