"""ntkft: fine-tuning through linearization and the neural tangent kernel.

The top level holds only two kinds of module (tests/import_layers_test.py keeps it so):

* commands, ``python -m ntkft.<name>``: ``run``, ``sweep``, ``ntk_report``,
  ``kernel_fit``, ``export_peft`` (and the packages ``select`` and ``merge``,
  through their ``__main__``);
* base modules, below every other: ``typing``, ``xla_workarounds``, ``records``
  (JSON results and the machine record), ``config_lib``, ``cli`` (flags and
  one-line errors of every command), ``targets``.

The library is in subpackages: ``models``, ``peft``, ``linearize``, ``ntk``,
``spectral``, ``kernel``, ``data``, ``evals``, ``theta0`` (a config's model at
θ0 and its kernels), ``train``, ``diagnostics``, ``select``, ``merge``.
"""
from ntkft import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()

__version__ = "0.1.0"
