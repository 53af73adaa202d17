"""XLA:CPU settings ntkft needs for correct results, applied when ntkft is imported.

**YNNPACK reduce fusions (jaxlib 0.10.2, CPU).** XLA:CPU hands some fusions to
YNNPACK. Its *reduce* fusions miscompile the LayerNorm backward of MiniLM when
the per-example Jacobian is batched over 32 or more examples and 2 output
classes (``jax.vmap`` of ``jax.jacrev``, the Jacobian-contraction NTK): the
second class's Jacobian rows came out wrong by up to 25% (the whole N=32 kernel
by 1.3% of its largest entry, 2-4% for N=64 or untraced outputs), while N <= 24,
the first class, forward passes and train-step gradients were right. Removing
the reduce fusions (``--xla_cpu_experimental_ynn_fusion_type=-reduce``) gives
kernels equal to those of unfused dots and to per-example ``jax.grad``;
``tests/xla_reduce_fusion_test.py`` guards it.

The flag is added to ``XLA_FLAGS`` unless the user set that flag already, and
only if this jaxlib knows it (XLA aborts on unknown flags). XLA reads
``XLA_FLAGS`` when the first backend starts, so ``import ntkft`` must come
before the first JAX computation; otherwise a warning says the fix is not active.
"""
import importlib.util
import mmap
import os
import pathlib
import warnings

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNN_FUSION_SETTING = f"--{YNN_FUSION_FLAG}=-reduce"


def _jaxlib_knows(flag: str) -> bool:
  """Whether the installed jaxlib's XLA defines ``flag`` (searched in its library)."""
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or spec.origin is None:
    return False
  for lib in sorted(pathlib.Path(spec.origin).parent.glob("libjax_common.*")):  # .so / .dylib
    with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
      if m.find(flag.encode()) >= 0:
        return True
  return False


def _backends_started() -> bool:
  try:
    from jax._src import xla_bridge
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def apply(environ=os.environ) -> bool:
  """Adds the YNN reduce-fusion setting to ``environ["XLA_FLAGS"]``; True if added."""
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG in flags or not _jaxlib_knows(YNN_FUSION_FLAG):
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_SETTING}".strip()
  if environ is os.environ and _backends_started():
    warnings.warn(
        f"ntkft was imported after JAX started its backends, so {YNN_FUSION_SETTING} "
        "(XLA_FLAGS) is not active in this process: per-example Jacobians and NTKs of "
        "32+ examples can be wrong on CPU (see ntkft/xla_workarounds.py). Import ntkft "
        "first or export XLA_FLAGS.", RuntimeWarning, stacklevel=3)
  return True
