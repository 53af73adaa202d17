"""Exact empirical NTKs with the whole computation under a memory budget.

For ``f(params, x, *extra) -> (N, O)`` with per-example Jacobians
``J(x_n) in R^{O x P}``, :func:`budgeted_ntk_fn` computes

    flattened  (trace_axes=())    K[n, m, o, o'] = J(x_n)[o] . J(x2_m)[o']       (N1, N2, O, O)
    traced     (trace_axes=(-1,)) K[n, m] = (1/O) sum_o J(x_n)[o] . J(x2_m)[o]   (N1, N2)

(the layout and mean normalization of :func:`ntkft.ntk.empirical_ntk_fn`) as a
float64 numpy array, holding at most ``memory_budget_bytes`` besides the output:

* the parameter leaves are split into groups of ``P_g`` parameters and the
  examples into chunks of ``c`` (:func:`plan_budget`): per group, the Jacobian
  rows of a row chunk and of a column chunk ``(c O, P_g)`` are held (one chunk
  when ``c >= N`` and x2 is None: every Jacobian of the group is computed
  once), computed ``microbatch`` examples at a time
  (:class:`ntkft.ntk.jacobian_rows.JacobianRows`), contracted by one matmul
  (:data:`ntkft.ntk.jacobian_rows.rows_gram`) and added into the float64
  kernel. The groups are packed greedily (:func:`ntkft.ntk.chunking.pack_leaves`).
  ``c`` is the largest size for which the biggest leaf fits, so Jacobians are
  recomputed only when they must be;
* ``sparse_tables`` (e.g. ``{"embeddings/word/embedding": "input_ids"}``):
  lookup tables whose Jacobian lives in the token rows only. Their kernel is
  ``sum_v J_n[v] . J_m[v]`` over the vocabulary ids present, from the gradients
  with respect to the looked-up vectors (n, O, T, d) scattered into blocks of
  ids; never the (V x d) Jacobian. MiniLM's 11.7M word-embedding parameters
  then cost O(N T d) memory instead of O(N V d).

Memory model used by the plan (bytes; ``a`` = itemsize, 4 for float32):
``(stores * c + 3 * microbatch) * O * P_g * a + 12 (c O)^2`` (two chunk stores,
microbatch Jacobian transients, the chunk's kernel block in float32 and
float64); Jacobian rows are held in the model's output dtype. Activations of
the forward/backward pass of a microbatch are not modeled: keep ``microbatch``
small for long sequences; the benchmark (``benchmarks/ntk_scale.py``) measures
the real peak.

``precision`` (default ``"highest"``) is the matmul precision of every traced
matmul, the model's and the contraction's (on GPUs JAX's default uses TF32
for float32 matmuls, which moves small eigenvalues and so kappa).
"""
import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from ntkft.models import blocks as blocks_lib
from ntkft.ntk import chunking
from ntkft.ntk import jacobian_rows as rows_lib
from ntkft.ntk import layout as layout_lib
from ntkft.ntk import precision as precision_lib


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
  """How a budgeted kernel is computed.

  Attributes:
    chunk: examples per side whose Jacobian rows are held at once.
    microbatch: examples per vmap(jacrev) call.
    groups: dense leaf groups (indices into the params leaves).
    sparse: (leaf index, ids key) of the sparse lookup tables.
    vocab_block: vocabulary ids per block of a sparse table's rows.
    bytes: the model's estimate of the peak held bytes (output excluded).
  """
  chunk: int
  microbatch: int
  groups: tuple
  sparse: tuple
  vocab_block: int
  bytes: int


def plan_budget(leaf_sizes: Sequence[int], out_size: int, n1: int, n2: int, symmetric: bool,
                memory_budget_bytes: int, microbatch: Optional[int] = None,
                sparse: Sequence[tuple] = (), sparse_dims: Sequence[tuple] = (),
                leaf_names: Optional[Sequence[str]] = None, itemsize: int = 4) -> BudgetPlan:
  """Largest example chunk (then groups) under the memory model of the module docstring.

  Args:
    leaf_sizes: parameters per leaf (sparse leaves included; they are skipped).
    out_size: O. n1, n2: examples on each side. symmetric: x2 is None.
    memory_budget_bytes: the budget, in bytes.
    microbatch: examples per Jacobian call; None: min(32, chunk).
    sparse: (leaf, ids key) pairs; sparse_dims: (T, d) of each (for its budget).
    leaf_names: for the error message.
    itemsize: bytes per Jacobian element (4: float32, 8: float64).

  Raises:
    ValueError: not even one example of the biggest dense leaf fits.
  """
  skip = {leaf for leaf, _ in sparse}
  dense = [i for i in range(len(leaf_sizes)) if i not in skip]
  o = out_size
  n = max(n1, n2)
  biggest = max((leaf_sizes[i] for i in dense), default=0)
  chunk = n
  while True:
    mb = min(microbatch or 32, chunk)
    stores = 1 if (symmetric and chunk >= n) else 2
    free = memory_budget_bytes - 12 * (chunk * o) ** 2
    cap = free // (o * itemsize * (stores * chunk + 3 * mb)) if free > 0 else 0
    if cap >= max(biggest, 1):
      break
    if chunk == 1:
      name = leaf_names[dense[int(np.argmax([leaf_sizes[i] for i in dense]))]] \
          if leaf_names else "?"
      raise ValueError(
          f"memory_budget_bytes={memory_budget_bytes} is too small: leaf {name!r} "
          f"({biggest} params) does not fit with one example; raise the budget or list "
          "it in sparse_tables if it is a lookup table")
    chunk = -(-chunk // 2)
  groups = chunking.pack_leaves(leaf_sizes, cap, leaves=dense)
  held = max((sum(leaf_sizes[i] for i in g) for g in groups), default=0)
  used = o * itemsize * held * (stores * chunk + 3 * mb) + 12 * (chunk * o) ** 2
  vocab_block = None
  for t, d in sparse_dims:
    g_bytes = (n1 + (0 if symmetric else n2)) * o * t * d * itemsize
    rows_per_id = (n1 + (0 if symmetric else n2)) * o * d * itemsize * 2   # rows + scatter
    free = memory_budget_bytes - g_bytes - 12 * (n1 * o) * (n2 * o)
    if free < rows_per_id:
      raise ValueError(
          f"memory_budget_bytes={memory_budget_bytes} is too small for the sparse "
          f"table gradients of {n1}+{n2} examples ((T, d) = {(t, d)})")
    fit = int(free // rows_per_id)
    vocab_block = fit if vocab_block is None else min(vocab_block, fit)
    used = max(used, memory_budget_bytes - free + int(free // rows_per_id) * rows_per_id)
  return BudgetPlan(chunk, mb, tuple(groups), tuple(sparse), vocab_block or 1, int(used))


def budgeted_ntk_fn(apply_fn: Callable, trace_axes=(-1,), memory_budget_bytes: int = 4096 * 2**20,
                    precision: str = "highest",
                    sparse_tables: Optional[Mapping[str, str]] = None,
                    length_buckets: Optional[Sequence[int]] = None,
                    mask_key: str = "attention_mask", microbatch: Optional[int] = None,
                    on_chunk: Optional[Callable[[dict], None]] = None) -> Callable:
  """Returns ``kernel_fn(x1, x2, params, *extra) -> float64 np.ndarray``.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, O)``; examples independent.
    trace_axes: ``(-1,)`` (N1, N2) mean over outputs, or ``()`` (N1, N2, O, O).
    memory_budget_bytes: bound in bytes on everything held besides the output
      kernel (module docstring); default 4 GiB.
    precision: ``"highest"`` (default), ``"high"`` or ``"default"``.
    sparse_tables: '/'-joined params path of a lookup table -> key of its ids
      in the (dict) inputs.
    length_buckets, mask_key: cut padding as in :mod:`ntkft.ntk.lengths`.
    microbatch: examples per Jacobian call (None: up to 32).
    on_chunk: called with a dict per kernel block (``stage``, ``plan``, ...).

  Returns:
    The kernel function; ``x2=None`` means x1 (exactly symmetric result).
  """
  traced = layout_lib.is_traced(trace_axes, "budgeted_ntk_fn")
  precision_lib.check_precision(precision)
  budget = chunking.check_positive("memory_budget_bytes", memory_budget_bytes)
  sparse_tables = dict(sparse_tables or {})
  report = on_chunk or (lambda info: None)

  def kernel_fn(x1, x2, params, *extra) -> np.ndarray:
    paths = blocks_lib.leaf_paths(params)
    leaves = jax.tree.leaves(params)
    unknown = sorted(set(sparse_tables) - set(paths))
    if unknown:
      raise ValueError(f"sparse_tables names {unknown}, not params leaves; leaves: {paths}")
    sparse = tuple((paths.index(p), k) for p, k in sparse_tables.items())
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    out = jax.eval_shape(apply_fn, params, x1, *extra)
    if len(out.shape) != 2:
      raise ValueError(f"budgeted kernels need outputs (N, O), got {out.shape}")
    n1, o = out.shape
    n2 = n1 if symmetric else jax.tree.leaves(x2)[0].shape[0]
    dims = [(np.shape(x1[k])[1], leaves[i].shape[-1]) for i, k in sparse]
    plan = plan_budget([int(np.size(l)) for l in leaves], o, n1, n2, symmetric, budget,
                       microbatch, sparse, dims, paths, out.dtype.itemsize)
    rows = rows_lib.JacobianRows(apply_fn, params, extra, precision, length_buckets, mask_key)
    order1 = rows_lib.length_order(x1, length_buckets, mask_key)
    order2 = order1 if symmetric else rows_lib.length_order(x2, length_buckets, mask_key)
    tail = () if traced else (o, o)
    perm = (1, 0) if traced else (1, 0, 3, 2)
    kernel = np.zeros((n1, n2) + tail, np.float64)          # in (order1, order2) order
    gram = lambda a, b: np.asarray(rows_lib.rows_gram(a, b, out_size=o, traced=traced,
                                                      precision=precision), np.float64)
    spans1 = chunking.example_chunks(n1, plan.chunk)[0]
    spans2 = chunking.example_chunks(n2, plan.chunk)[0]
    for g, group in enumerate(plan.groups):
      for r0, r1 in spans1:
        a = rows.dense(x1, order1[r0:r1], group, plan.microbatch, out_size=o,
                       dtype=out.dtype)
        for c0, c1 in spans2:
          if symmetric and c0 < r0:
            continue
          same = symmetric and c0 == r0
          b = a if same else rows.dense(x2, order2[c0:c1], group, plan.microbatch,
                                        out_size=o, dtype=out.dtype)
          with precision_lib.matmul_precision(precision):
            k = gram(a, b)[:r1 - r0, :c1 - c0]
          del b
          kernel[r0:r1, c0:c1] += k
          if symmetric and not same:
            kernel[c0:c1, r0:r1] += np.transpose(k, perm)
          report(dict(stage="dense", group=g, num_groups=len(plan.groups), rows=(r0, r1),
                      cols=(c0, c1), plan=plan))
        del a
    for leaf, ids_key in plan.sparse:
      g1 = rows.lookup_gradients(x1, order1, leaf, ids_key, plan.microbatch, o)
      ids1 = np.asarray(x1[ids_key])[order1]
      g2, ids2 = (g1, ids1) if symmetric else (
          rows.lookup_gradients(x2, order2, leaf, ids_key, plan.microbatch, o),
          np.asarray(x2[ids_key])[order2])
      vocab = np.unique(np.concatenate([ids1.ravel(), ids2.ravel()]))
      for v0, v1 in chunking.example_chunks(len(vocab), plan.vocab_block)[0]:
        block = vocab[v0:v1]
        a = rows_lib.scatter_rows(g1, ids1, block)
        b = a if symmetric else rows_lib.scatter_rows(g2, ids2, block)
        with precision_lib.matmul_precision(precision):
          kernel += gram(a, b)
        report(dict(stage="sparse", leaf=paths[leaf], vocab=(v0, v1), plan=plan))
    if symmetric:
      kernel = (kernel + np.transpose(kernel, perm)) / 2
    return kernel[np.ix_(np.argsort(order1), np.argsort(order2))]

  return kernel_fn

