"""ntkft.select: which parameter blocks to fine-tune, from per-block NTKs at θ0.

Adding block b to the fine-tuned set S adds a PSD block to the kernel,
K_{S+b} = K_S + K_b; Weyl's inequalities bound the new spectrum
(:mod:`ntkft.select.bounds`), which prunes the greedy subset search of
:mod:`ntkft.select.selection` (the exhaustive search enumerates). CLI: ``python -m ntkft.select
--config=configs/select_layers.py:runlocal --workdir=W``.

Public API:
  weyl_bounds(eigs_s, eig_min_b, eig_max_b) -> (lower, upper)
  extreme_bounds(...), interval_bounds(...) -> {lambda_min_lower, ...}
  kappa_bounds(lam_min_s, lam_max_s, lam_min_b, lam_max_b, ridge, slack)
  check_bounds(k_s, k_b, ridge, rtol) -> dict
  greedy_select(kernels, criterion, k, ...), exhaustive_select(...),
  select(kernels, search, ...) -> Selection
  criterion_value, block_stats (the alignment criterion is
  ntkft.spectral.kernel_target_alignment)
  peft_fragment, peft_flags (from ntkft.peft.fragment)
"""
from ntkft.peft.fragment import peft_flags, peft_fragment
from ntkft.select.bounds import (
    check_bounds,
    condition_number,
    extreme_bounds,
    interval_bounds,
    kappa_bounds,
    kappa_from_bounds,
    weyl_bounds,
)
from ntkft.select.selection import (
    CRITERIA,
    SEARCHES,
    Selection,
    block_stats,
    criterion_value,
    exhaustive_select,
    greedy_select,
    select,
)

__all__ = [
    "CRITERIA", "SEARCHES", "Selection", "block_stats", "check_bounds",
    "condition_number", "criterion_value", "exhaustive_select",
    "extreme_bounds", "greedy_select", "interval_bounds", "kappa_bounds",
    "kappa_from_bounds", "peft_flags",
    "peft_fragment", "select", "weyl_bounds",
]
