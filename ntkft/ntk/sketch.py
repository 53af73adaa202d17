"""Cheaper NTK approximations and their errors against the exact kernel.

* :func:`pntk_fn`, the pseudo-NTK / sum-of-logits kernel (Mohamadi, Bae,
  Sutherland, "A Fast, Well-Founded Approximation to the Empirical Neural
  Tangent Kernel", ICML 2023): the NTK of ``g(x) = sum_o f(x)_o / sqrt(O)``,

      pNTK(x, x') = (1/O) sum_{o, o'} J(x)[o] . J(x')[o'],

  one backward pass per example instead of O. It estimates the traced kernel
  ``(1/O) sum_o J[o] . J'[o]`` plus the cross terms ``o != o'``.
* :func:`count_sketch_ntk_fn`: per-example gradients projected to ``dim``
  coordinates by a count sketch (Charikar, Chen, Farach-Colton 2002; Weinberger
  et al. 2009): parameter ``p`` goes to bucket ``h(p)`` with sign ``s(p)``,
  ``(S J)_k = sum_{p: h(p) = k} s(p) J_p``. ``E[(S a) . (S b)] = a . b`` and the
  variance is at most ``(|a|^2 |b|^2 + (a . b)^2) / dim``. The hash is O(P)
  integers; no P x dim matrix is ever formed. The kernel of the sketches costs
  ``N^2 O^2 dim`` instead of ``N^2 O^2 P``, and memory ``N O dim``.
* :func:`kernel_errors`: relative Frobenius error, relative errors of
  lambda_max, lambda_min and kappa, and top-k eigenspace alignment
  ``|U_approx^T U_exact|_F^2 / k`` (1: same subspace); symmetric parts and kappa
  under the one policy of :mod:`ntkft.spectral` (``symmetric_kernel``,
  ``condition_number``).

Both kernels are built on the budgeted path's pieces: the Jacobian rows of
:class:`ntkft.ntk.jacobian_rows.JacobianRows` (the one Jacobian core), their
Gram :data:`ntkft.ntk.jacobian_rows.rows_gram`, and the one leaf packer
:func:`ntkft.ntk.chunking.pack_leaves`; arguments as in
:func:`ntkft.ntk.budgeted.budgeted_ntk_fn`.
"""
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ntkft import spectral
from ntkft.ntk import budgeted, chunking
from ntkft.ntk import jacobian_rows as rows_lib
from ntkft.ntk import layout as layout_lib
from ntkft.ntk import precision as precision_lib


def pntk_fn(apply_fn: Callable, **options) -> Callable:
  """Returns ``kernel_fn(x1, x2, params, *extra) -> (N1, N2)`` float64, the pNTK.

  ``options``: the keyword arguments of :func:`ntkft.ntk.budgeted.budgeted_ntk_fn`
  (memory_budget_bytes, precision, sparse_tables, length_buckets, ...).
  """

  def summed(params, x, *extra):
    out = apply_fn(params, x, *extra)
    return out.sum(-1, keepdims=True) / np.sqrt(out.shape[-1]).astype(out.dtype)

  return budgeted.budgeted_ntk_fn(summed, trace_axes=(-1,), **options)


def _count_sketch(flat, buckets, signs, *, dim):
  """(m, O, P) -> (m, O, dim): sum of signed coordinates per bucket."""
  signed = jnp.moveaxis(flat * signs.astype(flat.dtype), -1, 0)       # (P, m, O)
  return jnp.moveaxis(jax.ops.segment_sum(signed, buckets, num_segments=dim), 0, -1)


def count_sketch_ntk_fn(apply_fn: Callable, dim: int, seed: int = 0, trace_axes=(-1,),
                        memory_budget_bytes: int = 2048 * 2**20, microbatch: int = 32,
                        precision: str = "highest",
                        length_buckets: Optional[Sequence[int]] = None,
                        mask_key: str = "attention_mask") -> Callable:
  """Returns ``kernel_fn(x1, x2, params, *extra)``: the NTK of count-sketched Jacobians.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, O)``.
    dim: sketch dimension (buckets).
    seed: seed of the hash and signs (numpy, per parameter group).
    trace_axes: ``(-1,)`` or ``()`` as in :func:`ntkft.ntk.budgeted.budgeted_ntk_fn`.
    memory_budget_bytes: bound in bytes on a microbatch's Jacobian transients
      (``3 microbatch O P_g itemsize``) through the parameter groups; default 2 GiB.
    microbatch, precision, length_buckets, mask_key: as in budgeted_ntk_fn.

  Returns:
    float64 (N1, N2) or (N1, N2, O, O) numpy kernel, unbiased for the exact one.
  """
  if not isinstance(dim, int) or dim < 1:
    raise ValueError(f"count_sketch_ntk_fn: dim must be a positive int, got {dim!r}")
  traced = layout_lib.is_traced(trace_axes, "count_sketch_ntk_fn")
  transform = functools.partial(_count_sketch, dim=dim)
  budget = chunking.check_positive("memory_budget_bytes", memory_budget_bytes)

  def kernel_fn(x1, x2, params, *extra) -> np.ndarray:
    leaves = jax.tree.leaves(params)
    out = jax.eval_shape(apply_fn, params, x1, *extra)
    o = out.shape[-1]
    sizes = [int(np.size(l)) for l in leaves]
    cap = max(max(sizes), budget // (3 * microbatch * o * out.dtype.itemsize))
    groups = chunking.pack_leaves(sizes, cap)
    rows = rows_lib.JacobianRows(apply_fn, params, extra, precision, length_buckets, mask_key)
    rng = np.random.default_rng(seed)
    hashes = []
    for group in groups:
      p = sum(sizes[i] for i in group)
      hashes.append((jnp.asarray(rng.integers(0, dim, p, dtype=np.int32)),
                     jnp.asarray(rng.choice(np.array([-1, 1], np.int8), p))))

    def sketched(x, order):
      total = None
      for group, args in zip(groups, hashes):
        part = rows.dense(x, order, group, min(microbatch, len(order)), transform,
                          width=dim, out_size=o, dtype=out.dtype, transform_args=args)
        total = part if total is None else total + part
      return total

    symmetric = x2 is None
    order1 = rows_lib.length_order(x1, length_buckets, mask_key)
    s1 = sketched(x1, order1)
    if symmetric:
      order2, s2 = order1, s1
    else:
      order2 = rows_lib.length_order(x2, length_buckets, mask_key)
      s2 = sketched(x2, order2)
    with precision_lib.matmul_precision(precision):
      k = rows_lib.rows_gram(s1, s2, out_size=o, traced=traced, precision=precision)
      k = np.asarray(k, np.float64)[:len(order1), :len(order2)]
    return k[np.ix_(np.argsort(order1), np.argsort(order2))]

  return kernel_fn


def _rel(a: float, b: float) -> Optional[float]:
  if not np.isfinite(a) or not np.isfinite(b) or b == 0:
    return None
  return float(abs(a - b) / abs(b))


def kernel_errors(approx, exact, top: int = 10) -> dict:
  """Errors of a symmetric (n, n) approximation against the exact kernel.

  Returns:
    ``rel_error`` |A - K|_F / |K|_F; ``lambda_max_rel_error``,
    ``lambda_min_rel_error``, ``kappa_rel_error`` (None where undefined: kappa
    of a kernel with lambda_min <= 0, e.g. a sketch of rank dim < n);
    ``top{k}_alignment`` |U_A^T U_K|_F^2 / k over the top-k eigenvectors.
  """
  a = np.asarray(approx, np.float64)
  k = np.asarray(exact, np.float64)
  if a.shape != k.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"kernel_errors needs two square kernels of one shape, got {a.shape} "
                     f"and {k.shape}")
  ea, ua = np.linalg.eigh(spectral.symmetric_kernel(a, "approx", symmetrize=True))
  ek, uk = np.linalg.eigh(spectral.symmetric_kernel(k, "exact", symmetrize=True))
  top = min(top, k.shape[0])
  overlap = ua[:, -top:].T @ uk[:, -top:]
  return {"rel_error": float(np.linalg.norm(a - k) / np.linalg.norm(k)),
          "lambda_max_rel_error": _rel(ea[-1], ek[-1]),
          "lambda_min_rel_error": _rel(ea[0], ek[0]),
          "kappa_rel_error": _rel(spectral.condition_number(ea), spectral.condition_number(ek)),
          f"top{top}_alignment": float(np.sum(overlap**2) / top)}

