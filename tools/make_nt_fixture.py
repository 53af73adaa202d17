"""Writes the neural-tangents reference fixture for ntkft's native NTK.

neural-tangents 0.6.5 (the last PyPI release) does not import with jax >= 0.5,
so ntkft reimplements ``empirical_ntk_fn`` and checks it against numbers this
script produced once, in a separate pinned env::

  python3 -m venv /tmp/ntenv
  /tmp/ntenv/bin/pip install "jax[cpu]==0.4.38" "jaxlib==0.4.38" \
      neural-tangents==0.6.5 "numpy==2.2.6" "scipy==1.15.3"
  /tmp/ntenv/bin/python tools/make_nt_fixture.py \
      --out tests/fixtures/nt/nt_reference.npz

It imports ``tests/ntk/tiny_models.py`` by file path (so it needs nothing from
ntkft), enables x64, and for each tiny model (MLP with array inputs; attention
with dict inputs ``{"tokens", "mask"}``) stores, all float64:

* ``{model}/params/<path>``: the params (nested-dict path joined with '/');
* ``{model}/x1``, ``{model}/x2`` (MLP) or ``{model}/x1/tokens``,
  ``{model}/x1/mask``, ... (attention): inputs with N1 = 5, N2 = 3;
* ``{model}/apply/x1``, ``{model}/apply/x2``: ``apply(params, x)``;
* ``{model}/{impl}/trace={t}/diag={d}/x2={none|given}``: the empirical NTK from
  ``nt.empirical_ntk_fn(apply, trace_axes, diagonal_axes, vmap_axes=0,
  implementation)``, with impl ``jc`` (JACOBIAN_CONTRACTION) or ``vp``
  (NTK_VECTOR_PRODUCTS), ``(t, d)`` in ``{(-1, ''), ('', ''), ('', -1)}``;
* ``meta/*``: versions and the command line, as unicode strings.

STRUCTURED_DERIVATIVES is skipped (it fails on these versions). Before writing,
the script checks JC against VP and ``vmap_axes=0`` against ``vmap_axes=None``
and prints the largest differences; it exits non-zero if any exceeds 1e-10
relative to the kernel's largest entry.
"""

import argparse
import importlib.util
import pathlib
import platform
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import neural_tangents as nt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import scipy  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_MODELS = REPO / "tests" / "ntk" / "tiny_models.py"

N1, N2 = 5, 3
MODELS = {
    # model: (init_fn name, apply_fn name, params seed, x1 seed, x2 seed)
    "mlp": ("init_mlp", "mlp_apply", 0, 10, 11),
    "attention": ("init_attention", "attention_apply", 1, 20, 21),
}
IMPLEMENTATIONS = {
    "jc": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "vp": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
}
# (trace_axes, diagonal_axes)
AXES = [((-1,), ()), ((), ()), ((), (-1,))]
TOLERANCE = 1e-10


def load_tiny_models():
  spec = importlib.util.spec_from_file_location("tiny_models", TINY_MODELS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def axes_str(axes):
  return ",".join(str(a) for a in axes)


def kernel_key(model, impl, trace_axes, diagonal_axes, has_x2):
  return (
      f"{model}/{impl}/trace={axes_str(trace_axes)}"
      f"/diag={axes_str(diagonal_axes)}/x2={'given' if has_x2 else 'none'}"
  )


def flatten(tree, prefix):
  """Nested dict (or bare array) -> {prefix/path: float64 numpy array}."""
  if isinstance(tree, dict):
    out = {}
    for name, sub in tree.items():
      out.update(flatten(sub, f"{prefix}/{name}"))
    return out
  return {prefix: np.asarray(tree, dtype=np.float64)}


def to_jnp(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def rel_diff(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, type=pathlib.Path)
  args = parser.parse_args(argv)

  tiny_models = load_tiny_models()
  arrays = {
      "meta/command": np.array(" ".join([sys.executable] + sys.argv)),
      "meta/versions": np.array(
          f"neural_tangents={nt.__version__} jax={jax.__version__} "
          f"jaxlib={jax.lib.__version__} numpy={np.__version__} "
          f"scipy={scipy.__version__} python={platform.python_version()} "
          f"platform={jax.default_backend()}"
      ),
      "meta/n1_n2": np.array([N1, N2]),
  }
  worst = {"jc_vs_vp": 0.0, "vmap0_vs_none": 0.0}
  worst_abs_jc_vs_vp = 0.0

  for model, (init_name, apply_name, seed, seed1, seed2) in MODELS.items():
    params_np = getattr(tiny_models, init_name)(seed)
    apply_fn = getattr(tiny_models, apply_name)
    x1_np = tiny_models.make_inputs(model, N1, seed1)
    x2_np = tiny_models.make_inputs(model, N2, seed2)
    arrays.update(flatten(params_np, f"{model}/params"))
    arrays.update(flatten(x1_np, f"{model}/x1"))
    arrays.update(flatten(x2_np, f"{model}/x2"))
    params, x1, x2 = to_jnp(params_np), to_jnp(x1_np), to_jnp(x2_np)

    arrays[f"{model}/apply/x1"] = np.asarray(apply_fn(params, x1))
    arrays[f"{model}/apply/x2"] = np.asarray(apply_fn(params, x2))

    for trace_axes, diagonal_axes in AXES:
      for has_x2 in (False, True):
        kernels = {}
        for impl, implementation in IMPLEMENTATIONS.items():
          results = {}
          for vmap_axes in (0, None):
            ntk_fn = jax.jit(
                nt.empirical_ntk_fn(
                    apply_fn,
                    trace_axes=trace_axes,
                    diagonal_axes=diagonal_axes,
                    vmap_axes=vmap_axes,
                    implementation=implementation,
                )
            )
            results[vmap_axes] = np.asarray(
                ntk_fn(x1, x2 if has_x2 else None, params), dtype=np.float64
            )
          key = kernel_key(model, impl, trace_axes, diagonal_axes, has_x2)
          d = rel_diff(results[0], results[None])
          worst["vmap0_vs_none"] = max(worst["vmap0_vs_none"], d)
          arrays[key] = kernels[impl] = results[0]
          print(f"{key:50s} shape={results[0].shape} vmap0-vs-none rel={d:.2e}")
        d = rel_diff(kernels["jc"], kernels["vp"])
        worst["jc_vs_vp"] = max(worst["jc_vs_vp"], d)
        worst_abs_jc_vs_vp = max(
            worst_abs_jc_vs_vp,
            float(np.max(np.abs(kernels["jc"] - kernels["vp"]))),
        )
        print(
            "  jc vs vp: max"
            f" abs={np.max(np.abs(kernels['jc'] - kernels['vp'])):.2e}"
            f" rel={d:.2e}"
        )

  print("versions:", arrays["meta/versions"])
  print("worst relative differences:", worst)
  print(f"worst abs jc vs vp: {worst_abs_jc_vs_vp:.3e}")
  if max(worst.values()) > TOLERANCE:
    sys.exit(f"disagreement above {TOLERANCE}: {worst}; fixture not written")
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(
      f"wrote {len(arrays)} arrays to {args.out} "
      f"({args.out.stat().st_size} bytes)"
  )


if __name__ == "__main__":
  main()
