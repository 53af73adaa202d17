"""How far fine-tuning left the tangent model: the relative linearization gap.

For a run from θ0 to θ_T and f̄ the tangent model at θ0,

  lin_gap = ‖f(θ_T) − f̄(θ_T)‖₂ / ‖f(θ_T) − f(θ0)‖₂,  f̄(θ_T) = f(θ0) + J(θ0)(θ_T − θ0),

with the outputs of all (real) examples and logits stacked into one vector; one
``jax.jvp`` per batch. 0: the run stayed exactly linear; 1: the nonlinear part
is as large as the whole move of the outputs.
"""
from typing import Callable, Iterable

import jax
import jax.numpy as jnp

from ntkft.typing import Params


def gap_sums(apply_fn: Callable, p0: Params, p: Params, fr: Params, batch: dict,
             f=None) -> tuple[jax.Array, jax.Array]:
  """``(‖f − f0 − J d‖², ‖f − f0‖²)`` over a batch's real rows, d = p − p0 (one jax.jvp).

  Args:
    apply_fn: ``apply_fn(params, frozen, batch) -> (B, C)``, deterministic.
    p0, p: θ0 and θ_T (same pytree); fr: passed through to ``apply_fn``.
    batch: with ``weights`` (B,), 0 for padding rows.
    f: (B, C) outputs f(θ_T) of the batch if the caller has them (its evaluation
      pass); None: computed here, after the jvp.

  Returns:
    Two scalars, the sums of squares over rows with ``weights > 0`` and all C
    outputs. Unjitted; :func:`gap_sums_fn` and :func:`gap_sums_given_outputs_fn`
    are its jitted forms.
  """
  d = jax.tree.map(jnp.subtract, p, p0)
  f0, jd = jax.jvp(lambda q: apply_fn(q, fr, batch), (p0,), (d,))
  if f is None:
    f = apply_fn(p, fr, batch)
  w = (batch["weights"] > 0)[:, None]
  return (jnp.sum(jnp.where(w, jnp.square(f - f0 - jd), 0.0)),
          jnp.sum(jnp.where(w, jnp.square(f - f0), 0.0)))


def gap_sums_fn(apply_fn: Callable) -> Callable:
  """jit of ``sums(p0, p, frozen, batch) -> (‖f − f0 − J d‖², ‖f − f0‖²)``
  (:func:`gap_sums`, f computed in the same program); keep it to reuse its compilations."""

  @jax.jit
  def sums(p0, p, fr, batch):
    return gap_sums(apply_fn, p0, p, fr, batch)

  return sums


def gap_sums_given_outputs_fn(apply_fn: Callable) -> Callable:
  """Like :func:`gap_sums_fn` for a caller that already has f = f(θ_T) of the batch (its
  evaluation pass): ``sums(p0, p, frozen, batch, f)``, one jax.jvp, no second forward."""

  @jax.jit
  def sums(p0, p, fr, batch, f):
    return gap_sums(apply_fn, p0, p, fr, batch, f)

  return sums


def gap_from_sums(pairs) -> dict:
  """``{"lin_gap", "nonlinear_norm", "move_norm"}`` from per-batch (‖f − f̄‖², ‖f − f0‖²)."""
  gap2 = sum(float(g) for g, _ in pairs)
  move2 = sum(float(m) for _, m in pairs)
  gap, move = gap2 ** 0.5, move2 ** 0.5
  return {"lin_gap": gap / move if move > 0 else float("nan"),
          "nonlinear_norm": gap, "move_norm": move}


def linearization_gap(apply_fn: Callable, params0: Params, params: Params, frozen: Params,
                      batches: Iterable[dict], put: Callable = lambda b: b) -> dict:
  """``{"lin_gap", "nonlinear_norm", "move_norm"}`` over the real rows of ``batches``.

  Args:
    apply_fn: ``apply_fn(params, frozen, batch) -> (B, C)``, deterministic.
    params0, params: θ0 and θ_T (same pytree).
    frozen: passed through to ``apply_fn``.
    batches: dicts with ``weights`` (B,), 0 for padding rows.
    put: host batch -> the arrays ``apply_fn`` takes (e.g. sharding, cached states).
  """
  sums = gap_sums_fn(apply_fn)
  return gap_from_sums([sums(params0, params, frozen, put(batch)) for batch in batches])
