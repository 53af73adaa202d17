"""Sweep definitions for ``python -m ntkft.sweep`` (each file: ``get_sweep()``)."""
