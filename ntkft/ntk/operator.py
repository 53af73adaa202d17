"""The empirical NTK as a matrix-free operator: v -> K v without forming K.

For ``f(params, x, *extra) -> (N, O)`` with Jacobian ``J = d f / d params``
(``N O x P``):

    flattened (trace_axes=())    K v = J (J^T v),                        v (N, O)
    traced    (trace_axes=(-1,)) (K v)_n = (1/O) sum_o [J (J^T (v e_o^T))]_{n, o},   v (N,)

(the layouts of :func:`ntkft.ntk.empirical_ntk_fn`). ``J^T u`` is one ``jax.vjp``
and ``J w`` one ``jax.jvp`` of the batched model, ``batch_size`` examples at a time;
the traced kernel needs the ``O`` pairs (one per output) batched by
``jax.vmap``. Memory: the parameters (O copies for the traced kernel) and the
activations of one chunk; never N x P. Cost per product: about two
forward-backward passes over the N examples (times O when traced).

The operator feeds :func:`ntkft.spectral.lanczos_eigs` (extreme eigenvalues)
and :func:`kernel_ridge_cg` (``(K + ridge I) alpha = y`` by conjugate
gradients, :func:`scipy.sparse.linalg.cg`).
"""
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from ntkft import xla_workarounds
from ntkft.ntk import chunking
from ntkft.ntk import layout as layout_lib
from ntkft.ntk import precision as precision_lib


def _vjp_chunk(params, x, v, extra, *, apply_fn, traced):
  """J_chunk^T v: params-shaped (traced: stacked over the O outputs)."""
  out, pullback = jax.vjp(lambda p: apply_fn(p, x, *extra), params)
  if not traced:
    return pullback(v.astype(out.dtype))[0]
  eye = jnp.eye(out.shape[1], dtype=out.dtype)
  return jax.vmap(lambda e: pullback(v[:, None].astype(out.dtype) * e)[0])(eye)


def _jvp_chunk(params, w, x, extra, *, apply_fn, traced):
  """J_chunk w: (n, O); traced: (1/O) sum_o [J w_o]_{n, o} -> (n,)."""
  f = lambda p: apply_fn(p, x, *extra)
  if not traced:
    return jax.jvp(f, (params,), (w,))[1]
  cols = jax.vmap(lambda wo: jax.jvp(f, (params,), (wo,))[1])(w)     # (O, n, O)
  return jnp.mean(jnp.diagonal(cols, axis1=0, axis2=2), axis=-1)


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


def ntk_vp_fn(apply_fn: Callable, trace_axes=(-1,), batch_size: int = 64,
              precision: str = "highest") -> Callable:
  """Returns ``make(x, params, *extra) -> (matvec, dim)``: the NTK of x as an operator.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, O)``; examples independent.
    trace_axes: ``(-1,)`` (N x N kernel, mean over outputs) or ``()`` (the
      flattened N O x N O kernel, rows ordered (n, o)).
    batch_size: examples per vjp/jvp call (memory: one chunk's activations).
    precision: matmul precision of every traced matmul
      (:data:`ntkft.ntk.precision.PRECISIONS`).

  Returns:
    ``make``; its ``matvec(v)`` takes a float (dim,) vector and returns
    ``K v`` as float64 numpy, ``dim = N`` (traced) or ``N O``.
  """
  traced = layout_lib.is_traced(trace_axes, "ntk_vp_fn")
  precision_lib.check_precision(precision)
  chunking.check_positive("batch_size", batch_size)
  xla_workarounds.check_batched_jacobians()  # raises if XLA miscompiles Jacobians here
  vjp = jax.jit(functools.partial(_vjp_chunk, apply_fn=apply_fn, traced=traced))
  jvp = jax.jit(functools.partial(_jvp_chunk, apply_fn=apply_fn, traced=traced))
  add = jax.jit(_add)

  def make(x, params, *extra):
    out = jax.eval_shape(apply_fn, params, x, *extra)
    if len(out.shape) != 2:
      raise ValueError(f"ntk_vp_fn needs outputs (N, O), got {out.shape}")
    n, o = out.shape
    size = min(batch_size, n)
    spans = [(s, min(s + size, n)) for s in range(0, n, size)]
    idx = [np.minimum(np.arange(s, s + size), n - 1) for s, _ in spans]   # pad: repeat last
    chunks = [jax.tree.map(lambda a, i=i: jnp.asarray(a)[i], x) for i in idx]
    dim = n if traced else n * o

    def matvec(v) -> np.ndarray:
      v = np.asarray(v, np.float64).reshape((n,) if traced else (n, o))
      if v.shape[0] != n:
        raise ValueError(f"matvec: expected a vector of size {dim}")
      with precision_lib.matmul_precision(precision):
        w = None
        for (s, e), xc in zip(spans, chunks):
          vc = np.zeros((size,) + v.shape[1:], out.dtype)
          vc[:e - s] = v[s:e]                                  # padded rows: zero cotangent
          part = vjp(params, xc, jnp.asarray(vc), extra)
          w = part if w is None else add(w, part)
        kv = np.empty(v.shape, np.float64)
        for (s, e), xc in zip(spans, chunks):
          kv[s:e] = np.asarray(jvp(params, w, xc, extra), np.float64)[:e - s]
      return kv.reshape(-1)

    return matvec, dim

  return make


def kernel_ridge_cg(matvec: Callable[[np.ndarray], np.ndarray], dim: int, y: np.ndarray,
                    ridge: float, rtol: float = 1e-8, maxiter: Optional[int] = None
                    ) -> np.ndarray:
  """Solves ``(K + ridge I) alpha = y`` by conjugate gradients on the operator.

  Args:
    matvec: ``v -> K v`` (e.g. from :func:`ntk_vp_fn`), K symmetric PSD.
    dim: size of K. y: (dim,) or (dim, k) targets (one CG per column).
    ridge: > 0.
    rtol: relative residual tolerance of :func:`scipy.sparse.linalg.cg`.
    maxiter: CG iterations per column (None: scipy's default, 10 dim).

  Returns:
    alpha with the shape of y (float64).

  Raises:
    RuntimeError: CG did not reach ``rtol`` within ``maxiter``.
  """
  if not ridge > 0:
    raise ValueError(f"kernel_ridge_cg: ridge must be > 0, got {ridge!r}")
  op = scipy.sparse.linalg.LinearOperator(
      (dim, dim), matvec=lambda v: matvec(np.ravel(v)) + ridge * np.ravel(v), dtype=np.float64)
  y = np.asarray(y, np.float64)
  cols = y.reshape(dim, -1)
  out = np.empty_like(cols)
  for j in range(cols.shape[1]):
    out[:, j], info = scipy.sparse.linalg.cg(op, cols[:, j], rtol=rtol, maxiter=maxiter)
    if info != 0:
      raise RuntimeError(f"kernel_ridge_cg: column {j} did not converge ({info} iterations)")
  return out.reshape(y.shape)
