"""Tangent models: first- and second-order Taylor expansions around a base point."""
from ntkft.linearize.tangent import quadratic_apply_fn
from ntkft.linearize.tangent import tangent_apply_fn
from ntkft.linearize.tangent import taylor_terms_fn
