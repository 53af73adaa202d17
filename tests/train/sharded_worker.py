"""Subprocess side of ``sharded_test.py`` (needs its own device count).

  python -m tests.train.sharded_worker ntk OUT.npz

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``: computes the
eNTK of the tiny attention model (dict inputs) on one device
(``ntkft.ntk.empirical_ntk_fn``) and sharded over an 8-device data mesh
(``ntkft.ntk.sharded.sharded_ntk_fn``) for two layouts and a chunked call, and
writes them all into OUT.npz for the test to compare.
"""
import sys

import jax
import numpy as np

from ntkft import ntk
from ntkft.ntk import sharded
from ntkft.train import mesh as mesh_lib
from tests.ntk import tiny_models


def ntk_main(out_path):
  assert jax.device_count() == 8, jax.devices()
  params = jax.tree.map(np.float32, tiny_models.init_attention(0))
  rng = np.random.RandomState(1)
  n1, n2, t, dim = 11, 5, tiny_models.ATTN_TOKENS, tiny_models.ATTN_DIM
  mask1 = (np.arange(t)[None] < rng.randint(1, t + 1, size=(n1, 1))).astype(np.float32)
  mask2 = (np.arange(t)[None] < rng.randint(1, t + 1, size=(n2, 1))).astype(np.float32)
  x1 = {"tokens": rng.normal(size=(n1, t, dim)).astype(np.float32), "mask": mask1}
  x2 = {"tokens": rng.normal(size=(n2, t, dim)).astype(np.float32), "mask": mask2}
  mesh = mesh_lib.make_mesh((("data", -1),))
  apply_fn = tiny_models.attention_apply
  out = {}
  out["ref_trace"] = np.asarray(ntk.empirical_ntk_fn(apply_fn)(x1, x2, params))
  out["ref_full"] = np.asarray(ntk.empirical_ntk_fn(apply_fn, trace_axes=())(x1, None, params))
  out["sh_trace"] = sharded.sharded_ntk_fn(apply_fn, mesh)(x1, x2, params)
  out["sh_full"] = sharded.sharded_ntk_fn(apply_fn, mesh, trace_axes=())(x1, None, params)
  # 11 rows in chunks of 8 (1 per device): two calls, the second padded.
  out["sh_trace_chunked"] = sharded.sharded_ntk_fn(apply_fn, mesh, rows_per_device=1)(
      x1, x2, params)
  np.savez(out_path, **out)


if __name__ == "__main__":
  cmd, *args = sys.argv[1:]
  {"ntk": ntk_main}[cmd](*args)
