"""Linearized LoRA fine-tuning of MiniLM on a GLUE task (the tangent model f̄).

  python -m ntkft.run --config=configs/glue_linearized.py --workdir=runs/sst2_lin
  python -m ntkft.run --config=configs/glue_linearized.py:task=rte --config.lam=0.1 ...
CPU smoke run (< 2 min on 2 cores): `--config=configs/glue_linearized.py:runlocal`.

The model is f̄(θ) = f(θ0) + J(θ0)(θ − θ0), one jax.jvp per forward, over LoRA
r=8 adapters on query/value of every layer plus the classification head.
With the LoRA init B = 0, ∂f/∂A = 0 at θ0, so the tangent model moves through B
and the head only (see ntkft.peft).

Measured (2-core CPU, 2026-11-23; see README "Results"): filled in by the
fine-tuning runs recorded there.
"""
from configs import glue_common


def get_config(arg=None):
  return glue_common.get_config(arg, mode="linearized")
