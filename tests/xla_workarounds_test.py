"""ntkft.xla_workarounds: the XLA_FLAGS edit and the guard (numerics: xla_reduce_fusion_test.py)."""
import os
import pathlib
import subprocess
import sys

import pytest

from ntkft import xla_workarounds


def test_flag_is_active_in_this_process():
  # conftest imports ntkft before any JAX computation, so the setting is in effect.
  assert xla_workarounds.YNN_FUSION_FLAG in os.environ.get("XLA_FLAGS", "")


def test_apply_appends_to_existing_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_workarounds.apply(env)
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                              + xla_workarounds.YNN_FUSION_SETTING)


def test_apply_keeps_a_user_setting_of_the_flag():
  user = f"--{xla_workarounds.YNN_FUSION_FLAG}=individual_dot"
  env = {"XLA_FLAGS": user}
  assert not xla_workarounds.apply(env)
  assert env["XLA_FLAGS"] == user


def test_apply_sets_flags_when_none():
  env = {}
  assert xla_workarounds.apply(env)
  assert env["XLA_FLAGS"] == xla_workarounds.YNN_FUSION_SETTING


def test_initial_flags_are_those_the_process_started_with():
  """Read from /proc/self/environ: a later edit of os.environ does not show."""
  code = ("import os; from ntkft import xla_workarounds as w; os.environ['XLA_FLAGS'] = 'late';"
          "print(repr(w._initial_xla_flags()))")
  env = {**os.environ, "XLA_FLAGS": "--xla_dump_to=/dev/null"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout.strip()
  if pathlib.Path("/proc/self/environ").exists():
    assert "--xla_dump_to=/dev/null" in out and "late" not in out
  else:
    assert out == "None"


def test_flag_lookup_in_jaxlib():
  assert xla_workarounds._jaxlib_knows(xla_workarounds.YNN_FUSION_FLAG)
  assert not xla_workarounds._jaxlib_knows("xla_cpu_" + "flag_that_does_not_exist")


# -- The guard (its canary in a JAX-first process: tests/xla_reduce_fusion_test.py) --

def _miscompiling_process(monkeypatch, canary_error):
  monkeypatch.setattr(xla_workarounds, "_setting_in_effect", False)
  monkeypatch.setattr(xla_workarounds, "canary_error", lambda: canary_error)


def test_every_kernel_function_refuses_when_the_canary_fails(monkeypatch):
  import jax.numpy as jnp

  from ntkft import ntk
  from ntkft.ntk import sharded, sketch
  from ntkft.train import mesh
  apply = lambda p, x: x @ p
  params, x = jnp.ones((3, 2)), jnp.arange(12.0).reshape(4, 3)
  # Built -> refused when built; the budgeted family refuses at its first call.
  builders = {
      "empirical_ntk_fn": lambda: ntk.empirical_ntk_fn(apply),
      "ntk_vector_products": lambda: ntk.empirical_ntk_fn(
          apply, implementation="ntk_vector_products"),
      "per_block_ntk_fn": lambda: ntk.per_block_ntk_fn(apply, ntk.block_of_fn("layer")),
      "sign_ntk_fn": lambda: ntk.sign_ntk_fn(apply),
      "sharded_ntk_fn": lambda: sharded.sharded_ntk_fn(apply, mesh.make_mesh((("data", -1),))),
      "ntk_vp_fn": lambda: ntk.ntk_vp_fn(apply),
      "budgeted_ntk_fn": lambda: ntk.budgeted_ntk_fn(apply)(x, None, params),
      "pntk_fn": lambda: sketch.pntk_fn(apply)(x, None, params),
      "count_sketch_ntk_fn": lambda: sketch.count_sketch_ntk_fn(apply, 4)(x, None, params),
  }
  _miscompiling_process(monkeypatch, 7e-2)
  for name, build in builders.items():
    with pytest.raises(xla_workarounds.MiscompiledJacobianError,
                       match=r"canary relative error 7\.0e-02.*import ntkft"):
      build()
      print(f"{name} did not refuse")
  _miscompiling_process(monkeypatch, 1e-7)  # a correct compiler: no refusal
  for build in builders.values():
    build()


def test_guard_is_free_when_the_setting_is_in_effect(monkeypatch):
  def canary_error():
    raise AssertionError("the canary ran although the setting is in effect")
  monkeypatch.setattr(xla_workarounds, "canary_error", canary_error)
  monkeypatch.setattr(xla_workarounds, "_setting_in_effect", True)
  xla_workarounds.check_batched_jacobians()


def test_only_a_setting_before_backend_start_counts_as_in_effect(monkeypatch):
  monkeypatch.setattr(xla_workarounds, "_setting_in_effect", False)
  monkeypatch.setattr(xla_workarounds, "_added_to_process_env", False)
  monkeypatch.setattr(xla_workarounds, "_backends_started", lambda: True)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  with pytest.warns(RuntimeWarning, match="imported after JAX started"):
    assert xla_workarounds.apply()  # added, but too late
  assert not xla_workarounds._setting_in_effect
  assert not xla_workarounds.apply()  # a second call does not trust its own late edit
  assert not xla_workarounds._setting_in_effect
  # Exported by the user before Python started: in effect whatever the import order.
  monkeypatch.setattr(xla_workarounds, "_added_to_process_env", False)
  monkeypatch.setenv("XLA_FLAGS", xla_workarounds.YNN_FUSION_SETTING)
  monkeypatch.setattr(xla_workarounds, "_initial_xla_flags",
                      lambda: xla_workarounds.YNN_FUSION_SETTING)
  assert not xla_workarounds.apply()
  assert xla_workarounds._setting_in_effect
  # Written into os.environ after JAX started (not in the start-up environment): XLA
  # never read it, so it is not trusted; nor where the start-up environment is unknown.
  for initial in ("", None):
    monkeypatch.setattr(xla_workarounds, "_initial_xla_flags", lambda v=initial: v)
    assert not xla_workarounds.apply()
    assert not xla_workarounds._setting_in_effect
  # Set in os.environ before the backend started: read by XLA, trusted.
  monkeypatch.setattr(xla_workarounds, "_backends_started", lambda: False)
  assert not xla_workarounds.apply()
  assert xla_workarounds._setting_in_effect
  # Another value of the flag (e.g. +dot keeps the reduce fusions): not trusted.
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_workarounds.YNN_FUSION_FLAG}=+dot")
  assert not xla_workarounds.apply()
  assert not xla_workarounds._setting_in_effect
