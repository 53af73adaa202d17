"""ntkft.ntk: empirical neural tangent kernels (native; no neural-tangents).

Public API:
  empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes, implementation,
                   batch_size, memory_budget_bytes, on_chunk)
      -> ntk_fn(x1, x2, params, *extra)
  per_block_ntk_fn(apply_fn, block_of, ...) -> fn(...) -> {block: K_b}
  adam_ntk_fn(apply_fn, trace_axes, diagonal_axes, eps, ...) -> fn(...)
  symmetric_part(K), NtkImplementation
  block_names(params, by), block_param_counts(params, by), block_of_fn(by), leaf_paths(params)
      (from ntkft.models.blocks)
  plan_chunks(num_examples, out_size, num_params, itemsize, budget)
  budgeted_ntk_fn(apply_fn, trace_axes, memory_budget_mb, precision, sparse_tables, ...)
      -> kernel_fn(x1, x2, params, *extra): exact, whole computation under the budget
  ntk_vp_fn(apply_fn, trace_axes, chunk, precision) -> make(x, params, *extra)
      -> (matvec v -> K v, dim); kernel_ridge_cg(matvec, dim, y, ridge)

Modules: empirical (the kernel functions above), engine (chunking driver),
contraction (jitted Jacobian / NTK-vp pieces), layout (output axes -> kernel
axes), chunking (memory plans, example chunks), lengths, sharded,
budgeted and jacobian_rows (memory-budgeted kernels), operator (matrix-free K v).
"""
from ntkft.models.blocks import (  # parameter blocks live with the models' paths
    BLOCK_MODES,
    block_names,
    block_of_fn,
    block_param_counts,
    leaf_paths,
)
from ntkft.ntk.budgeted import budgeted_ntk_fn
from ntkft.ntk.chunking import plan_chunks, plan_param_groups
from ntkft.ntk.empirical import (
    NtkImplementation,
    adam_ntk_fn,
    empirical_ntk_fn,
    per_block_ntk_fn,
    symmetric_part,
)
from ntkft.ntk.operator import kernel_ridge_cg, ntk_vp_fn

__all__ = [
    "BLOCK_MODES", "NtkImplementation", "adam_ntk_fn", "block_names", "block_param_counts",
    "block_of_fn", "budgeted_ntk_fn", "empirical_ntk_fn", "kernel_ridge_cg", "leaf_paths",
    "ntk_vp_fn", "per_block_ntk_fn",
    "plan_chunks", "plan_param_groups", "symmetric_part",
]
