"""Timing helpers shared by the benchmarks: best-of-n timing, XLA FLOP counts, matmul peak."""
import json
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def best_time(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
  """Minimum wall time of ``fn(*args)`` (results blocked on) over ``repeats`` runs."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times)


def interleaved_best(timers: dict, rounds: int = 5) -> dict:
  """Best wall time of each zero-argument callable, timed round-robin.

  On a shared machine the load drifts over minutes; timing the candidates (and
  the matmul peak) in alternating rounds exposes each to the same drift, so the
  ratios of best times are far steadier than those of back-to-back blocks.
  Every callable is run once first (compilation) and must block on its result.
  """
  for fn in timers.values():
    fn()
  best = {name: float("inf") for name in timers}
  for _ in range(rounds):
    for name, fn in timers.items():
      t = time.perf_counter()
      fn()
      best[name] = min(best[name], time.perf_counter() - t)
  return best


def matmul_peak_timer(n: int = 2048):
  """(callable running one f32 n×n matmul, its FLOPs): the reference peak for
  :func:`interleaved_best`."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), jnp.float32)
  mm = jax.jit(lambda x, y: x @ y)
  return (lambda: jax.block_until_ready(mm(a, b))), 2.0 * n**3


_FLOPS_CACHE = {}


def flops(jitted, *args) -> float:
  """FLOPs XLA counts for one call of a jitted function on these arguments.

  Cached per (function, argument shapes): ahead-of-time compiles are not cached
  by jit, and one compile per batch would dominate a benchmark.
  """
  key = (id(jitted), tuple((getattr(a, "shape", None), str(getattr(a, "dtype", "")))
                           for a in jax.tree.leaves(args)))
  if key not in _FLOPS_CACHE:
    _FLOPS_CACHE[key] = _flops(jitted, *args)
  return _FLOPS_CACHE[key]


def _flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", 0.0))


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> str:
  return f"{platform.machine()} {jax.devices()[0].device_kind} x{jax.device_count()}, " \
         f"{__import__('os').cpu_count()} cpus"


def emit(result: dict, as_json: bool) -> None:
  """Prints a table (human) or one JSON line (``--json``)."""
  if as_json:
    print(json.dumps(result))
    return
  width = max(len(k) for k in result)
  for k, v in result.items():
    print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  sys.stdout.flush()
