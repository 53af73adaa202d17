"""Linearized LoRA fine-tuning of MiniLM on a GLUE task (the tangent model f̄).

  python -m ntkft.run --config=configs/glue_linearized.py --workdir=runs/sst2_lin
  python -m ntkft.run --config=configs/glue_linearized.py:task=rte --config.lam=0.1 ...
CPU smoke run (< 2 min on 2 cores): `--config=configs/glue_linearized.py:runlocal`.

The model is f̄(θ) = f(θ0) + J(θ0)(θ − θ0), one jax.jvp per forward, over LoRA
r=8 adapters on query/value of every layer plus the classification head.
With the LoRA init B = 0, ∂f/∂A = 0 at θ0, so the tangent model moves through B
and the head only (see ntkft.peft).

Measured (2-core AMD EPYC VM, CPU only, 2026-12-01), default config = SST-2,
2,000 train examples sampled with seed 0, full 872-example dev set, 250 Adam
steps of 32 (4 epochs), LoRA r=8 q/v on all 6 layers + head (74,498 params):
  dev accuracy 0.780, train loss 0.443, ‖θ−θ0‖ 4.27, 286 s wall.
The nonlinear run of configs/glue_nonlinear.py reached 0.822 in 432 s (measured
2026-11-23, before θ0's fresh leaves were keyed by name); a linear
probe on frozen mean-pooled MiniLM features reaches ~0.76.
"""
from configs import glue_common


def get_config(arg=None):
  return glue_common.get_config(arg, mode="linearized")
