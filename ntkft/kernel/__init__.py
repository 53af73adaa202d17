"""ntkft.kernel: closed-form solutions of the fully linearized model."""
from ntkft.kernel.predict import gradient_descent_mse_ntk
from ntkft.kernel.predict import kernel_ridge
from ntkft.kernel import classifiers

__all__ = ["classifiers", "gradient_descent_mse_ntk", "kernel_ridge"]
