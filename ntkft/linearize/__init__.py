"""Tangent models: first- and second-order Taylor expansions around a base point."""
from ntkft.linearize.tangent import quadratic_apply_fn, tangent_apply_fn, taylor_terms_fn
