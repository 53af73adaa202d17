"""ntkft.ntk is one kernel family: every function exported and in the table, one budget
unit (bytes), shared argument names and defaults, one vocabulary of kernel kinds."""
import inspect

import numpy as np
import pytest

from ntkft import ntk
from ntkft import typing as ntkft_typing
from ntkft.ntk import chunking, empirical, engine, layout
from ntkft.spectral import predictors

FACTORIES = ("empirical_ntk_fn", "per_block_ntk_fn", "sign_ntk_fn", "budgeted_ntk_fn",
             "sharded_ntk_fn", "ntk_vp_fn", "pntk_fn", "count_sketch_ntk_fn")


def _functions():
  for name in ntk.__all__:
    obj = getattr(ntk, name)
    if inspect.isfunction(obj):
      yield name, obj


def test_every_kernel_function_is_exported_and_in_the_table():
  for name in FACTORIES + ("kernel_errors", "kernel_ridge_cg", "pack_leaves"):
    assert name in ntk.__all__, name
    assert callable(getattr(ntk, name)), name
  for name in FACTORIES + ("kernel_errors", "kernel_ridge_cg"):
    assert name in ntk.__doc__, f"{name} missing from the family table"


def test_one_budget_unit_bytes():
  for name, fn in _functions():
    params = inspect.signature(fn).parameters
    assert not [p for p in params if p.endswith("_mb")], name
    assert {p for p in params if "budget" in p} <= {"memory_budget_bytes"}, name
  # The exact kernels' options carry the same name (keyword-only, through **options).
  assert "memory_budget_bytes" in inspect.signature(empirical._engine).parameters
  with pytest.raises(TypeError, match="memory_budget_mb"):
    ntk.per_block_ntk_fn(lambda p, x: x, "layer", memory_budget_mb=1.0)


def test_shared_argument_names_and_defaults():
  exact = inspect.signature(empirical._engine).parameters
  for name in ("empirical_ntk_fn", "budgeted_ntk_fn", "sharded_ntk_fn", "ntk_vp_fn",
               "count_sketch_ntk_fn"):
    assert inspect.signature(getattr(ntk, name)).parameters["trace_axes"].default == (-1,), name
  assert exact["trace_axes"].default == (-1,)
  for params in (exact, *(inspect.signature(getattr(ntk, n)).parameters
                          for n in ("budgeted_ntk_fn", "ntk_vp_fn", "count_sketch_ntk_fn"))):
    assert params["precision"].default == "highest"
  for name in ("budgeted_ntk_fn", "count_sketch_ntk_fn"):
    params = inspect.signature(getattr(ntk, name)).parameters
    assert {"length_buckets", "mask_key", "microbatch"} <= set(params), name
    assert params["mask_key"].default == exact["mask_key"].default
  assert "batch_size" in inspect.signature(ntk.ntk_vp_fn).parameters
  assert "batch_size" in exact


def test_one_vocabulary_of_kernel_kinds():
  assert ntkft_typing.KERNEL_KINDS == ("plain", "sign") == ntk.KERNEL_KINDS
  # The κ study's stored predictor keys are built from these names.
  assert predictors.KINDS == ntkft_typing.KERNEL_KINDS
  assert predictors.kernel_name("sign", "traced", "nohead") == "sign_traced_nohead"
  for kind in ("plain", "sign"):
    assert ntkft_typing.check_kernel_kind(kind, "here") == kind
  with pytest.raises(ValueError, match=r"make_engine: unknown kernel kind 'rbf'; choose from"):
    _make_engine("rbf")


def _make_engine(kind):
  return engine.make_engine(lambda p, x: x, block_of=None, trace_axes=(-1,), diagonal_axes=(),
                            implementation="jacobian_contraction", kind=kind, eps=None,
                            batch_size=None, memory_budget_bytes=None, on_chunk=None,
                            length_buckets=None, mask_key="attention_mask")


@pytest.mark.parametrize("old, new", [("ntk", "plain"), ("adam", "sign")])
def test_former_kind_names_are_refused_with_one_line_naming_the_new_one(old, new, tmp_path):
  # The kinds were once "ntk"/"adam" in some modules: every entry point refuses them,
  # before any model or data is loaded, with one line naming the value, where, and the kinds.
  from configs import kernel_fit as kernel_fit_config
  from configs import ntk_spectrum
  from ntkft import kernel_fit, ntk_report
  from ntkft.theta0 import kernels as theta0_kernels

  fit_config = kernel_fit_config.get_config("runlocal")
  fit_config.kernels = (old,)
  report_config = ntk_spectrum.get_config(f"runlocal,kind={old}")
  report_config.model.name = str(tmp_path / "no_model_here")
  calls = {
      "here": lambda: ntkft_typing.check_kernel_kind(old, "here"),
      "make_engine": lambda: _make_engine(old),
      "kernels_of_config": lambda: theta0_kernels.kernels_of_config(report_config, old),
      "config.kind": lambda: ntk_report.run(report_config, str(tmp_path / "report")),
      "config.kernels": lambda: kernel_fit.run(fit_config, str(tmp_path / "fit")),
  }
  for where, call in calls.items():
    with pytest.raises(ValueError) as err:
      call()
    message = str(err.value)
    assert "\n" not in message, where
    assert message.startswith(f"{where}"), message
    assert f"unknown kernel kind {old!r} (renamed to {new!r}); " \
           "choose from ('plain', 'sign')" in message, message


@pytest.mark.parametrize("trace_axes, traced", [((-1,), True), ((1,), True), (-1, True),
                                                ((), False)])
def test_is_traced(trace_axes, traced):
  assert layout.is_traced(trace_axes, "f") is traced


def test_is_traced_rejects_other_axes():
  with pytest.raises(ValueError, match=r"budgeted_ntk_fn takes outputs \(N, O\)"):
    layout.is_traced((0,), "budgeted_ntk_fn")
  with pytest.raises(ValueError, match="trace_axes"):
    layout.is_traced((-1, -2), "f")


def test_pack_leaves_on_known_cases():
  assert chunking.pack_leaves([3, 4, 2, 5, 1], 7) == [(0, 1), (2, 3), (4,)]
  assert chunking.pack_leaves([2, 10, 3], 5) == [(0,), (1,), (2,)]   # oversized: alone
  assert chunking.pack_leaves([3, 4, 2, 5, 1], 7, leaves=[0, 2, 4]) == [(0, 2, 4)]
  assert chunking.pack_leaves([1, 1, 1, 1], 10, labels=["a", "a", "b", "a"]) == \
      [(0, 1), (2,), (3,)]
  assert chunking.pack_leaves([], 5) == []


@pytest.mark.parametrize("seed", range(5))
def test_pack_leaves_invariants(seed):
  """Order kept, every leaf once, groups under the cap, and greedy: no group could
  have taken the next group's first leaf."""
  rng = np.random.default_rng(seed)
  sizes = list(rng.integers(1, 50, size=30))
  labels = list(rng.choice(["a", "b"], size=30, p=[0.8, 0.2]))
  cap = int(rng.integers(40, 120))
  groups = chunking.pack_leaves(sizes, cap, labels=labels)
  assert [i for g in groups for i in g] == list(range(30))
  for g, nxt in zip(groups, groups[1:] + [None]):
    assert len({labels[i] for i in g}) == 1
    assert len(g) == 1 or sum(sizes[i] for i in g) <= cap
    if nxt is not None and labels[nxt[0]] == labels[g[0]]:
      assert sum(sizes[i] for i in g) + sizes[nxt[0]] > cap


def test_plan_param_groups_fit_one_example():
  # cap = 2400 // (2 O itemsize) = 150 parameters.
  assert chunking.plan_param_groups([100, 50, 30], 2, 4, 2400) == [(0, 1), (2,)]
  with pytest.raises(ValueError, match="leaf 'big' alone"):
    chunking.plan_param_groups([100, 151], 2, 4, 2400, leaf_names=["small", "big"])
