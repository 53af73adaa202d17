"""Tangent (linearized) models by forward-mode differentiation.

For a model ``f(params, x)`` and a base point ``params0`` the tangent model is

    f_lin(params0, params, x) = f(params0, x) + J_f(params0, x) (params - params0),

computed exactly with one ``jax.jvp`` (primal and tangent in one pass; no finite
differences). The second-order Taylor term

    f_quad(params0, params, x) = f_lin(...) + 1/2 d^T H_f(params0, x) d,   d = params - params0,

uses a jvp of a jvp. ``params0`` is always an argument, never a closed-over
constant, so ``jax.jit`` does not bake the base point into the program.

Only the differentiated subset appears in ``params``/``params0``; anything held
fixed (frozen weights, the batch) is passed through ``*args`` to ``apply_fn``.
"""
from typing import Any

import jax

from ntkft.typing import ApplyFn, Params


def _sub(a: Params, b: Params) -> Params:
  return jax.tree.map(lambda x, y: x - y, a, b)


def tangent_apply_fn(apply_fn: ApplyFn) -> ApplyFn:
  """Returns ``f_lin(params0, params, *args)``, the first-order Taylor model.

  Args:
    apply_fn: ``apply_fn(params, *args) -> pytree of arrays``.

  Returns:
    ``f_lin(params0, params, *args)`` with the output structure of ``apply_fn``;
    equals ``apply_fn(params0, *args)`` at ``params == params0`` and is exactly
    affine in ``params - params0``.
  """

  def f_lin(params0: Params, params: Params, *args: Any):
    out0, jvp_out = jax.jvp(lambda p: apply_fn(p, *args), (params0,),
                            (_sub(params, params0),))
    return jax.tree.map(lambda a, b: a + b, out0, jvp_out)

  return f_lin


def taylor_terms_fn(apply_fn: ApplyFn) -> ApplyFn:
  """Returns ``terms(params0, params, *args) -> (f0, Jd, dHd)``.

  ``f0 = f(params0)``, ``Jd = J(params0) d`` and ``dHd = d^T H(params0) d`` (the
  full second directional derivative, so the quadratic model is
  ``f0 + Jd + dHd / 2``), all from nested ``jax.jvp`` calls at ``params0``.
  """

  def terms(params0: Params, params: Params, *args: Any):
    d = _sub(params, params0)
    f = lambda p: apply_fn(p, *args)
    jvp_fn = lambda p: jax.jvp(f, (p,), (d,))
    (f0, jd), (_, dhd) = jax.jvp(jvp_fn, (params0,), (d,))
    return f0, jd, dhd

  return terms


def quadratic_apply_fn(apply_fn: ApplyFn) -> ApplyFn:
  """Returns ``f_quad(params0, params, *args) = f0 + J d + d^T H d / 2``."""
  terms = taylor_terms_fn(apply_fn)

  def f_quad(params0: Params, params: Params, *args: Any):
    f0, jd, dhd = terms(params0, params, *args)
    return jax.tree.map(lambda a, b, c: a + b + 0.5 * c, f0, jd, dhd)

  return f_quad
