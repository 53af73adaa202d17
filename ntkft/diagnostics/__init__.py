"""Linearity diagnostics: nonlinear vs linearized vs closed-form fine-tuning, with bounds."""
from ntkft.diagnostics.linearity import REGIMES
from ntkft.diagnostics.linearity import agreement
from ntkft.diagnostics.linearity import batch_order
from ntkft.diagnostics.linearity import check_objective
from ntkft.diagnostics.linearity import flat_ntk
from ntkft.diagnostics.linearity import lipschitz
from ntkft.diagnostics.linearity import objective_bound
from ntkft.diagnostics.linearity import remainder
from ntkft.diagnostics.linearity import rms
from ntkft.diagnostics.linearity import run_regimes
from ntkft.diagnostics.linearity import tree_norm

__all__ = ["REGIMES", "agreement", "batch_order", "check_objective", "flat_ntk", "lipschitz",
           "objective_bound", "remainder", "rms", "run_regimes", "tree_norm"]
