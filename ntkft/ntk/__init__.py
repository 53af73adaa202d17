"""ntkft.ntk: empirical neural tangent kernels (native; no neural-tangents), one family.

Every kernel function is a factory ``*_fn(apply_fn, ...)`` of a model
``apply_fn(params, x, *extra) -> (N, *S)`` whose examples do not interact. Only
the leaves of ``params`` are differentiated; ``*extra`` (frozen weights, ...) is
passed through as jit arguments. The returned function takes
``(x1, x2, params, *extra)``, ``x2=None`` meaning x1 (the kernel is then exactly
symmetric), except the operator's ``make(x, params, *extra)``. Layouts and the
normalized trace are neural-tangents' (``trace_axes=(-1,)`` is the *mean* over
the outputs; see :mod:`ntkft.ntk.empirical`). Shared argument names:

  trace_axes, diagonal_axes  output axes traced / kept diagonal; the (N, O)
                             kernels (budgeted, operator, sketches) take
                             trace_axes (-1,): K (N1, N2), or (): (N1, N2, O, O)
  implementation             exact kernels: "jacobian_contraction" (default) or
                             "ntk_vector_products" (:class:`NtkImplementation`)
  batch_size                 examples per chunk (exact kernels; None: one chunk)
                             or per vjp/jvp call (operator)
  microbatch                 examples per Jacobian call inside a budgeted chunk
  memory_budget_bytes        a bound in bytes, the one budget unit of the API
  precision                  matmul precision of every traced matmul, "highest"
                             by default (:mod:`ntkft.ntk.precision`)
  length_buckets, mask_key   Jacobians of examples cut to their real length
                             (:mod:`ntkft.ntk.lengths`)
  on_chunk                   progress callback, one dict per kernel block

Kernel kinds have one name each (:data:`ntkft.typing.KERNEL_KINDS`): "plain",
K = J(x1) J(x2)ᵀ (the NTK), and "sign", K = J(x1) sign(J(x2))ᵀ
(:func:`sign_ntk_fn`, Malladi et al.'s Adam kernel; asymmetric: analyse
``ntkft.spectral.symmetric_kernel(K, symmetrize=True)``).

Which function for which N (examples), O (outputs per example), P (parameters)
and budget; this is the one table of the family (README points here). The
exact kernels return a jax Array in the model's dtype (chunks accumulated in
float64); budgeted_ntk_fn, pntk_fn and count_sketch_ntk_fn a float64 numpy
array; sharded_ntk_fn a numpy array.

================================  ===============================  ================================
need                              function                         held in memory / work
================================  ===============================  ================================
any layout; chunk Jacobians       empirical_ntk_fn(                two chunk Jacobians (bounded by
(c1 + c2) O P floats fit            implementation=                memory_budget_bytes) / N O
                                    "jacobian_contraction")        backward passes per row chunk
                                                                   + one contraction
--------------------------------  -------------------------------  --------------------------------
wide outputs; an independent      empirical_ntk_fn(                one chunk pair's vjp stack /
check of the above                  implementation=                N1 N2 O jvp passes
                                    "ntk_vector_products")
--------------------------------  -------------------------------  --------------------------------
per-block kernels K_b,            per_block_ntk_fn(block_of)       as above (vector products:
sum_b K_b = K                                                      passes per block)
--------------------------------  -------------------------------  --------------------------------
the sign kernel (asymmetric)      sign_ntk_fn(eps)                 as jacobian_contraction
--------------------------------  -------------------------------  --------------------------------
outputs (N, O), exact, float64:   budgeted_ntk_fn(                 the budget + the output / N O
all Jacobians (N O P floats)        memory_budget_bytes,           backward passes per parameter
fit, or groups of leaves x          microbatch)                    group + (N O)^2 P
all N examples under a budget
--------------------------------  -------------------------------  --------------------------------
lookup tables (word               budgeted_ntk_fn(                 N O T d / (N O)^2 x (ids
embeddings)                         sparse_tables={path: key})     present) x d
--------------------------------  -------------------------------  --------------------------------
x1 rows across a device mesh      sharded_ntk_fn(mesh,             all of J(x2) on every device
                                    rows_per_device)
--------------------------------  -------------------------------  --------------------------------
K too big to form: spectrum       ntk_vp_fn(batch_size) with       P (x O traced) + one chunk's
extremes, kernel ridge            spectral.lanczos_eigs or         activations / 2 (x O traced)
                                  kernel_ridge_cg                  passes over N per product
--------------------------------  -------------------------------  --------------------------------
a cheaper approximation           pntk_fn (sum of logits,          as budgeted (pNTK: 1 backward
(measure: kernel_errors)            biased), count_sketch_ntk_fn   pass, not O) / sketch: N O dim,
                                    (dim, seed) (unbiased)         contraction N^2 O^2 dim
================================  ===============================  ================================

Modules: empirical (the exact kernel functions), engine (their chunking
driver), jacobians (the one Jacobian core: a parameter group's model, its
per-example Jacobians, the one compile cache), contraction (jitted
contractions and NTK-vector products), layout (output axes -> kernel axes),
chunking (memory plans, the one leaf packer, example chunks), lengths,
jacobian_rows (microbatched Jacobian rows and their Gram), budgeted, sharded,
operator (matrix-free K v), sketch (pNTK, count sketch, kernel errors),
precision.
"""
from ntkft.models.blocks import (  # parameter blocks live with the models' paths
    BLOCK_MODES,
    block_names,
    block_of_fn,
    block_param_counts,
    leaf_paths,
)
from ntkft.ntk.budgeted import budgeted_ntk_fn
from ntkft.ntk.chunking import pack_leaves, plan_chunks, plan_param_groups
from ntkft.ntk.empirical import (
    NtkImplementation,
    empirical_ntk_fn,
    per_block_ntk_fn,
    sign_ntk_fn,
)
from ntkft.ntk.operator import kernel_ridge_cg, ntk_vp_fn
from ntkft.ntk.sharded import sharded_ntk_fn
from ntkft.ntk.sketch import count_sketch_ntk_fn, kernel_errors, pntk_fn
from ntkft.typing import KERNEL_KINDS

__all__ = [
    "BLOCK_MODES", "KERNEL_KINDS", "NtkImplementation", "block_names", "block_of_fn",
    "block_param_counts", "budgeted_ntk_fn", "count_sketch_ntk_fn", "empirical_ntk_fn",
    "kernel_errors", "kernel_ridge_cg", "leaf_paths", "ntk_vp_fn", "pack_leaves",
    "per_block_ntk_fn", "plan_chunks", "plan_param_groups", "pntk_fn", "sharded_ntk_fn",
    "sign_ntk_fn",
]
