"""ntkft.kernel: closed-form solutions of the fully linearized model."""
from ntkft.kernel import classifiers
from ntkft.kernel.predict import gradient_descent_mse_ntk, kernel_ridge

__all__ = ["classifiers", "gradient_descent_mse_ntk", "kernel_ridge"]
