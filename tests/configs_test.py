"""Every leaf of every config in configs/ can be overridden on the command line.

Goes through the real absl parser (``config_flags.DEFINE_config_file`` on a fresh
``FlagValues``, argv ``--config.a.b=value``), as ``python -m ntkft.run`` does;
loads no model.
"""
import pathlib

import pytest
from absl import flags
from ml_collections import config_dict, config_flags

CONFIGS = sorted(p for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.name != "__init__.py" and not p.stem.endswith("_common"))


def _leaves(config, prefix=""):
  """(dotted name, value type, value) of every leaf; placeholders keep their type."""
  for key, value in config.items(preserve_field_references=True):
    if isinstance(value, config_dict.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(value, config_dict.FieldReference):
      yield f"{prefix}{key}", value.get_type(), value.get()
    else:
      yield f"{prefix}{key}", type(value), value


def _new_value(kind, value):
  """A valid value of ``kind`` different from ``value``, and its flag text."""
  if kind is bool:
    return (not value), str(not value)
  if kind is int:
    new = 1 if value is None else value + 1
    return new, str(new)
  if kind is float:
    new = 0.5 if value is None else value + 0.5
    return new, repr(new)
  if kind is str:
    new = "x" if value is None else value + "x"
    return new, new
  if kind is tuple:
    new = value + value[:1] if value else (1,)
    return new, repr(new)
  raise AssertionError(f"leaf type {kind} has no command-line form")


def _parse(argv):
  argv = ["prog", *argv]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


@pytest.mark.parametrize("variant", ["", ":runlocal"])
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_leaf_overrides_through_the_flags_parser(path, variant):
  spec = f"--config={path}{variant}"
  leaves = list(_leaves(_parse([spec])))
  assert leaves
  expected, argv = {}, [spec]
  for name, kind, value in leaves:
    expected[name], text = _new_value(kind, value)
    argv.append(f"--config.{name}={text}")
  config = _parse(argv)
  arrived = {name: value for name, _, value in _leaves(config)}
  wrong = {name: (arrived[name], want) for name, want in expected.items()
           if arrived[name] != want}
  assert not wrong, f"{path.name}{variant}: override did not arrive: {wrong}"


def test_data_root_placeholder_is_none_by_default_and_takes_a_path(tmp_path):
  path = pathlib.Path(__file__).parents[1] / "configs" / "glue_linearized.py"
  assert _parse([f"--config={path}"]).data.root is None
  config = _parse([f"--config={path}", f"--config.data.root={tmp_path}"])
  assert config.data.root == str(tmp_path)
