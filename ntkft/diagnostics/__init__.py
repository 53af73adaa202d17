"""Linearity diagnostics: nonlinear vs linearized vs closed-form fine-tuning, with bounds."""
from ntkft.diagnostics.linearity import (
           REGIMES,
           agreement,
           batch_order,
           check_objective,
           flat_ntk,
           lipschitz,
           objective_bound,
           remainder,
           rms,
           run_regimes,
)

__all__ = ["REGIMES", "agreement", "batch_order", "check_objective", "flat_ntk", "lipschitz",
           "objective_bound", "remainder", "rms", "run_regimes"]
