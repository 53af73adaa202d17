"""Multi-process JAX (``jax.distributed``) from the config or the environment.

``config.distributed`` holds ``enabled``, ``coordinator_address``,
``num_processes``, ``process_id`` and ``cpu_collectives``. The runtime is
initialized when

* ``coordinator_address`` is set (config, or env ``JAX_COORDINATOR_ADDRESS``
  with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``): explicit cluster, e.g.
  one process per GPU node; or
* ``enabled=True`` with no address: ``jax.distributed.initialize()`` detects the
  cluster itself (Cloud TPU pods, SLURM, Open MPI, ...).

Otherwise nothing happens (single process). Must run before JAX touches a
device; calling it again after initialization is a no-op.

On CPU, cross-process collectives need an implementation:
``jax_cpu_collectives_implementation = "gloo"`` (set here when the platform is
CPU and ``cpu_collectives`` is not None).
"""
import os
from typing import Any, Mapping, Optional

import jax

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def settings(cfg: Optional[Mapping[str, Any]]) -> Optional[dict]:
  """The kwargs for ``jax.distributed.initialize``, or None for single process.

  Config values win over the environment variables in ``ENV``.

  Raises:
    ValueError: an address without num_processes / process_id.
  """
  cfg = dict(cfg or {})
  kw = {}
  for key, env in ENV.items():
    value = cfg.get(key)
    if value is None and os.environ.get(env):
      value = os.environ[env]
    if value is not None:
      kw[key] = value if key == "coordinator_address" else int(value)
  if "coordinator_address" in kw:
    missing = [k for k in ("num_processes", "process_id") if k not in kw]
    if missing:
      raise ValueError(f"distributed: coordinator_address={kw['coordinator_address']!r} also "
                       f"needs {missing} (config.distributed.* or env {[ENV[k] for k in missing]})")
    return kw
  if cfg.get("enabled"):
    return kw  # auto-detection (TPU pod, SLURM, ...), possibly with partial settings
  return None


def initialize(cfg: Optional[Mapping[str, Any]]) -> bool:
  """Initializes ``jax.distributed`` if configured; returns whether it is initialized."""
  if jax.distributed.is_initialized():
    return True
  kw = settings(cfg)
  if kw is None:
    return False
  collectives = dict(cfg or {}).get("cpu_collectives", "gloo")
  platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
  if collectives and "cpu" in platforms.split(","):
    jax.config.update("jax_cpu_collectives_implementation", collectives)
  jax.distributed.initialize(**kw)
  return True
