"""ntkft: fine-tuning through linearization and the neural tangent kernel."""
from ntkft import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()

__version__ = "0.1.0"
