"""Ordinary (nonlinear) LoRA fine-tuning of MiniLM on a GLUE task.

  python -m ntkft.run --config=configs/glue_nonlinear.py --workdir=runs/sst2_nonlin
CPU smoke run (< 2 min on 2 cores): `--config=configs/glue_nonlinear.py:runlocal`.

Same data, parameter subset and optimizer as configs/glue_linearized.py; only the
model differs (f(θ) instead of its tangent at θ0).

Measured (2-core AMD EPYC VM, CPU only, 2026-11-23, before θ0's fresh leaves were
keyed by name, which changed the head init; not rerun since), default config = SST-2,
2,000 train examples (seed 0), full 872-example dev set, 250 Adam steps of 32:
  dev accuracy 0.822, train loss 0.183, ‖θ−θ0‖ 5.32, 432 s wall (machine shared;
  a second run under heavier load took 923 s and gave bit-identical metrics).
"""
from configs import glue_common


def get_config(arg=None):
  return glue_common.get_config(arg, mode="nonlinear")
