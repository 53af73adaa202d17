"""XLA:CPU settings ntkft needs for correct results, and a guard that they hold.

**YNNPACK reduce fusions (jaxlib 0.10.2, CPU).** XLA:CPU hands some fusions to
YNNPACK. Its *reduce* fusions miscompile the LayerNorm backward of MiniLM when
the per-example Jacobian is batched over 32 or more examples and 2 output
classes (``jax.vmap`` of ``jax.jacrev``, the Jacobian-contraction NTK): the
second class's Jacobian rows came out wrong by up to 25% (the whole N=32 kernel
by 1.3% of its largest entry, 2-4% for N=64 or untraced outputs), while N <= 24,
the first class, forward passes and train-step gradients were right. Removing
the reduce fusions (``--xla_cpu_experimental_ynn_fusion_type=-reduce``) gives
kernels equal to those of unfused dots and to per-example ``jax.grad``;
``tests/xla_reduce_fusion_test.py`` guards it. ``tools/xla_ynn_reduce_repro.py``
reproduces it with JAX alone.

The flag is added to ``XLA_FLAGS`` unless the user set that flag already, and
only if this jaxlib knows it (XLA aborts on unknown flags). XLA reads
``XLA_FLAGS`` when the first backend starts, so the setting is only in effect
if ``import ntkft`` comes before the first JAX computation (or the user exported
it).

**Guard.** When the setting is not known to be in effect (JAX started first,
the user set the flag to something else, or this jaxlib lacks the flag), every
kernel function calls :func:`check_batched_jacobians` when it is built. On the
CPU backend it runs, once per process, a canary that reproduces the miscompile
(:func:`canary_error`: per-example Jacobians of a LayerNorm, 32 examples x 2
outputs x 384 features, batched vs one example at a time; 0.6-0.7 s of CPU
time on a 2-core VM) and raises :class:`MiscompiledJacobianError`, saying what to do,
if they differ. With the setting in effect it costs nothing.
"""
import functools
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


def _initial_xla_flags() -> str | None:
  """``XLA_FLAGS`` as the process started (Linux /proc); None where unreadable."""
  try:
    environ = pathlib.Path("/proc/self/environ").read_bytes().split(b"\0")
  except OSError:
    return None
  for entry in environ:
    if entry.startswith(b"XLA_FLAGS="):
      return entry[len(b"XLA_FLAGS="):].decode(errors="replace")
  return ""


# Whether this process's XLA runs with YNN_FUSION_SETTING (decided by the first
# apply() on os.environ, at import), and whether that apply() added it.
_setting_in_effect = False
_added_to_process_env = False


def apply(environ=os.environ) -> bool:
  """Adds the YNN reduce-fusion setting to ``environ["XLA_FLAGS"]``; True if added."""
  global _setting_in_effect, _added_to_process_env
  flags = environ.get("XLA_FLAGS", "")
  is_process_env = environ is os.environ
  if YNN_FUSION_FLAG in flags or not _jaxlib_knows(YNN_FUSION_FLAG):
    if is_process_env and not _added_to_process_env:
      # The user's own setting counts only if XLA read it: set before the backend
      # started, or (backend already running) in the environment Python started with.
      read_by_xla = _initial_xla_flags() if _backends_started() else flags
      _setting_in_effect = YNN_FUSION_SETTING in (read_by_xla or "").split()
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_SETTING}".strip()
  if is_process_env:
    _added_to_process_env = True
    _setting_in_effect = not _backends_started()
    if not _setting_in_effect:
      warnings.warn(
          f"ntkft was imported after JAX started its backends, so {YNN_FUSION_SETTING} "
          "(XLA_FLAGS) is not active in this process: per-example Jacobians and NTKs of "
          "32+ examples can be wrong on CPU, and ntkft's kernel functions check for it "
          "and refuse (see ntkft/xla_workarounds.py). Import ntkft first or export "
          "XLA_FLAGS.", RuntimeWarning, stacklevel=3)
  return True


# -- The guard -------------------------------------------------------------------

CANARY_EXAMPLES, CANARY_TOKENS, CANARY_FEATURES = 32, 64, 384
CANARY_TOLERANCE = 1e-3  # miscompiled: ~7e-2; correct: 0 (identical float32 programs)


class MiscompiledJacobianError(RuntimeError):
  """XLA in this process computes batched per-example Jacobians wrongly."""


def _canary_outputs(scale, x, head):
  """One example: x (T, F) -> (2,) = mean over tokens of LayerNorm(x * (1 + scale)) @ head."""
  import jax
  h = x * (1 + scale)
  mean = h.mean(-1, keepdims=True)
  var = ((h - mean) ** 2).mean(-1, keepdims=True)
  return ((h - mean) * jax.lax.rsqrt(var + 1e-12)).mean(0) @ head


@functools.cache
def canary_error() -> float:
  """max |J_batched − J_one| / max |J_one| of the canary's per-example Jacobians.

  J_batched: ``vmap(jacrev)`` over the 32 examples (the NTK engine's form, which
  the YNN reduce fusions miscompile); J_one: ``lax.map`` of ``jacrev``, one
  example at a time. Both (32, 2, 384), float32, in one jitted program; computed
  once per process on the default backend.
  """
  import jax
  import numpy as np
  rng = np.random.default_rng(0)
  scale = (0.1 * rng.normal(size=CANARY_FEATURES)).astype(np.float32)
  x = rng.normal(size=(CANARY_EXAMPLES, CANARY_TOKENS, CANARY_FEATURES)).astype(np.float32)
  head = (rng.normal(size=(CANARY_FEATURES, 2)) / CANARY_FEATURES**0.5).astype(np.float32)
  jac = jax.jacrev(_canary_outputs)

  def both(scale, x, head):
    batched = jax.vmap(jac, in_axes=(None, 0, None))(scale, x, head)
    one_at_a_time = jax.lax.map(lambda x_one: jac(scale, x_one, head), x)
    return batched, one_at_a_time

  batched, one = (np.asarray(a) for a in jax.jit(both)(scale, x, head))
  return float(np.abs(batched - one).max() / np.abs(one).max())


def check_batched_jacobians() -> None:
  """Raises MiscompiledJacobianError if this process's XLA miscompiles per-example Jacobians.

  Free when the reduce-fusion setting is in effect (ntkft imported before JAX
  started) or the default backend is not CPU; otherwise runs the canary once.
  """
  if _setting_in_effect:
    return
  import jax
  if jax.default_backend() != "cpu":
    return
  error = canary_error()
  if error <= CANARY_TOLERANCE:
    return
  if _jaxlib_knows(YNN_FUSION_FLAG):
    fix = ("Restart Python and `import ntkft` before any JAX computation, or start it with "
           f"`export XLA_FLAGS={YNN_FUSION_SETTING}` (in place of any other "
           f"--{YNN_FUSION_FLAG} value there).")
  else:
    fix = (f"This jaxlib has no --{YNN_FUSION_FLAG} flag to turn the faulty fusions off; "
           "use jaxlib 0.10.2 (ntkft sets the flag) or a jaxlib with the fix.")
  raise MiscompiledJacobianError(
      "XLA:CPU in this process miscompiles batched per-example Jacobians (YNNPACK reduce "
      f"fusions; canary relative error {error:.1e}), so ntkft's kernels would be wrong. "
      f"{fix} Reproducer: tools/xla_ynn_reduce_repro.py.")
