"""Device mesh, sharding rules by parameter name, and global batches.

The mesh is given as ``(name, size)`` pairs, e.g. ``(("data", -1), ("model", 1))``;
one size may be -1 and takes the remaining devices. The training loop is data
parallel over the ``"data"`` axis: every batch array (B, ...) is split along its
first axis, so each of the D = ``mesh.shape["data"]`` data shards holds B / D
rows. Parameters are replicated by default; with ``fsdp=True`` every large
matrix (at least ``min_size`` elements, not a LoRA factor) is split along
``"data"`` on its largest axis divisible by D (ZeRO-3 / FSDP style: XLA
all-gathers it for the forward pass and reduce-scatters its gradient).
Optimizer moments share their parameter's path suffix and shape, so the same
rules place them alongside.

Every function here is pure given the mesh; the same code runs on one device
(a 1x1 mesh, where every sharding is trivially replicated).
"""
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
FSDP_MIN_SIZE = 2 ** 16  # elements; smaller arrays stay replicated under fsdp


def resolve_axes(axes: Sequence[Sequence[Any]], num_devices: int) -> tuple[tuple[str, int], ...]:
  """``(name, size)`` pairs with the -1 resolved so that sizes multiply to num_devices.

  Raises:
    ValueError: malformed pairs, duplicate names, more than one -1, or sizes
      that do not divide / multiply to ``num_devices``.
  """
  try:
    pairs = [(str(name), int(size)) for name, size in axes]
  except (TypeError, ValueError) as e:
    raise ValueError(f"mesh must be (name, size) pairs, e.g. (('data', -1),); got {axes!r}") from e
  if not pairs:
    raise ValueError("mesh needs at least one axis, e.g. (('data', -1),)")
  names = [n for n, _ in pairs]
  if len(set(names)) != len(names):
    raise ValueError(f"mesh axis names must be unique, got {names}")
  if DATA not in names:
    raise ValueError(f"mesh needs a {DATA!r} axis (batches are split along it); got {names}")
  free = [n for n, s in pairs if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for _, s in pairs):
    raise ValueError(f"mesh sizes must be positive with at most one -1, got {pairs}")
  fixed = int(np.prod([s for _, s in pairs if s != -1]))
  if num_devices % fixed:
    raise ValueError(f"mesh {pairs}: fixed sizes multiply to {fixed}, which does not divide "
                     f"the {num_devices} devices")
  if not free and fixed != num_devices:
    raise ValueError(f"mesh {pairs} has {fixed} devices but {num_devices} are available; "
                     "use -1 for one axis to take the rest")
  return tuple((n, num_devices // fixed if s == -1 else s) for n, s in pairs)


def make_mesh(axes: Sequence[Sequence[Any]], devices=None) -> jax.sharding.Mesh:
  """A mesh over ``devices`` (default: all, every process) with Auto axis types.

  Args:
    axes: ``(name, size)`` pairs; one size may be -1 (the rest). Must include
      ``"data"``.
    devices: optional device list.

  Returns:
    A ``jax.sharding.Mesh``; Auto axes (``jax.make_mesh``'s Explicit default
    breaks embedding lookups on data-sharded ids).
  """
  devices = list(jax.devices() if devices is None else devices)
  pairs = resolve_axes(axes, len(devices))
  names, sizes = zip(*pairs)
  return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def data_size(mesh: jax.sharding.Mesh) -> int:
  """Number of data-parallel shards D."""
  return int(mesh.shape[DATA])


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Splits the leading (batch) axis over ``"data"``; other axes replicated."""
  return NamedSharding(mesh, P(DATA))


def _path_name(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def spec_for(name: str, shape: tuple[int, ...], d: int, fsdp: bool,
             min_size: int = FSDP_MIN_SIZE) -> P:
  """The PartitionSpec of one array by its '/'-joined path and shape.

  Replicated unless ``fsdp`` and the array has >= 2 axes, >= ``min_size``
  elements and is not a LoRA factor (leaf ``lora_*``): then its largest axis
  divisible by ``d`` is split along ``"data"`` (ties: the first such axis).
  """
  if not fsdp or d == 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
    return P()
  if name.rsplit("/", 1)[-1].startswith("lora_"):
    return P()
  candidates = [i for i in range(len(shape)) if shape[i] % d == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], -i))
  return P(*([None] * axis + [DATA]))


def tree_shardings(tree, mesh: jax.sharding.Mesh, fsdp: bool = False,
                   min_size: int = FSDP_MIN_SIZE):
  """A pytree of NamedShardings for ``tree`` (arrays or ShapeDtypeStructs)."""
  d = data_size(mesh)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, spec_for(_path_name(path), tuple(np.shape(x)), d,
                                                   fsdp, min_size)), tree)


def put(tree, shardings):
  """Places host-identical values on (possibly multi-process) shardings.

  Works with several processes too: every process must hold the same values
  (each fills only its addressable shards from its copy).
  """
  def one(x, s):
    x = np.asarray(jax.device_get(x)) if not isinstance(x, np.ndarray) else x
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(one, tree, shardings)


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, what: str) -> None:
  d = data_size(mesh)
  if batch_size % d:
    raise ValueError(f"{what}={batch_size} is not divisible by the data-axis size {d} "
                     f"of the mesh {dict(mesh.shape)}")


def global_batch(batch: dict, sharding: NamedSharding) -> dict:
  """The global batch arrays from the same host batch on every process.

  Each process hands over only the rows its devices hold (``process_local``
  slices of a global batch that every process computes identically); with one
  process this is a plain sharded ``device_put``.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)

  def one(x):
    x = np.asarray(x)
    index_map = sharding.addressable_devices_indices_map(x.shape)
    starts = [idx[0].start or 0 for idx in index_map.values()]
    stops = [x.shape[0] if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
    local = x[min(starts):max(stops)]
    return jax.make_array_from_process_local_data(sharding, local, x.shape)
  return jax.tree.map(one, batch)
