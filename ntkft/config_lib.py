"""Config argument parsing: ``configs/x.py:task=rte,runlocal`` (after big_vision).

``parse_arg("task=rte,runlocal", task="sst2", runlocal=False)`` returns a
ConfigDict with every default, overridden by the string; bare words set booleans
to True; values are cast to the type of their default.

``with_overrides(config, {"optim.lr": 1e-4}, "sweep")`` is the one way code
(sweeps, experiments) sets fields of a config it did not build: dotted keys,
every key must exist.

``shrink_to_smoke_run(config, n=..., max_len=..., ...)`` is the one ``runlocal``
shape of a fine-tuning config: n train / n eval examples, one bucket.
"""
from typing import Any, Mapping

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not _:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r} is not a boolean")
      out[key] = value.lower() in ("true", "1")
    else:
      out[key] = type(default)(value) if default is not None else value
  return out


def flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict:
  """``{"data": {"kshot": "512-13"}}`` -> ``{"data.kshot": "512-13"}``."""
  out = {}
  for key, value in overrides.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def with_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                   where: str) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the overrides set (dotted keys, or nested dicts).

  ``ConfigDict.update_from_flattened_dict`` on a locked copy, so a key the config
  does not declare is an error, and values keep the fields' types.

  Raises:
    ValueError: ``"<where> override '<key>': no config field ..."``.
  """
  locked = config.is_locked
  config = config.copy_and_resolve_references()
  config.lock()
  for key, value in flatten(overrides).items():
    try:
      config.update_from_flattened_dict({key: value})
    except KeyError as e:
      raise ValueError(f"{where} override {key!r}: no config field {key.split('.')[-1]!r} "
                       f"({e.args[0]})") from None
  if not locked:
    config.unlock()
  return config


def shrink_to_smoke_run(config: ml_collections.ConfigDict, *, n: int, max_len: int,
                        batch_size: int, warmup_steps: int, steps: int, log_every: int) -> None:
  """Sets, in place, the sizes of a CPU smoke run of a configs/glue_common.py-shaped config.

  ``n`` train and ``n`` eval examples, one bucket of ``max_len`` tokens, batches
  of ``batch_size``, ``steps`` optimizer steps after ``warmup_steps`` warm-up,
  a log line every ``log_every`` steps. Other fields stay as they are.
  """
  config.data.update(n_train=n, n_eval=n, max_len=max_len, buckets=(max_len,),
                     batch_size=batch_size)
  config.optim.warmup_steps = warmup_steps
  config.train.update(steps=steps, log_every=log_every)
