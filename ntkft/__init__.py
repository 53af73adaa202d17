"""ntkft: fine-tuning through linearization and the neural tangent kernel."""
__version__ = "0.1.0"
