"""Results as JSON: numpy/inf/nan-safe values and where they were computed.

Every experiment writes ``results.json`` through :func:`write_json`, so a
stored result never holds ``Infinity``/``NaN`` (not JSON) and always says which
machine produced it (``experiments.figures`` prints that under each figure).
"""
import json
import math
import os
import pathlib
import platform
from typing import Any, Optional

import jax
import numpy as np


def jsonable(value: Any) -> Any:
  """numpy -> Python (arrays -> lists), inf/nan -> None, recursively; keys -> str."""
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path, results: dict) -> dict:
  """Writes ``jsonable(results)`` to ``path`` (indent 1); returns what was written."""
  out = jsonable(results)
  pathlib.Path(path).write_text(json.dumps(out, indent=1))
  return out


def provenance(config) -> dict:
  """``{"config": <the ConfigDict as JSON>, "machine": machine_info()}``: what every
  results.json records about how and where it was made."""
  return {"config": json.loads(config.to_json_best_effort()), "machine": machine_info()}


def machine_info() -> dict:
  """Platform, Python/JAX versions, backend, device kind and counts, XLA_FLAGS of this process."""
  device = jax.devices()[0]
  return {"platform": platform.platform(), "machine": platform.machine(),
          "python": platform.python_version(), "jax": jax.__version__,
          "backend": jax.default_backend(), "device": device.device_kind,
          "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def finished_summary(run_dir) -> Optional[dict]:
  """The ``summary.json`` of a finished run in ``run_dir``, or None if it has none.

  The one "skip this point if its summary exists" of sweeps and studies:
  ``ntkft.train.loop.run`` writes ``summary.json`` last, so its presence
  means the run finished.
  """
  path = pathlib.Path(run_dir) / "summary.json"
  return json.loads(path.read_text()) if path.exists() else None
