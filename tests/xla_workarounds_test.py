"""ntkft.xla_workarounds: the XLA_FLAGS edit (the numerical guard is tests/xla_reduce_fusion_test.py)."""
import os

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


def test_flag_lookup_in_jaxlib():
  assert xla_workarounds._jaxlib_knows(xla_workarounds.YNN_FUSION_FLAG)
  assert not xla_workarounds._jaxlib_knows("xla_cpu_" + "flag_that_does_not_exist")
