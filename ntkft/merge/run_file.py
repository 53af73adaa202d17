"""A finished run in one compact ``.npz`` file: what merging it needs, and a check of the rest.

A run's orbax checkpoint (``<workdir>/ckpt``, ~90 MB for MiniLM-L6) holds the whole
TrainState, most of it the frozen pretrained encoder. Merges need only

  trainable/<leaf>    θ_T = (φ_T, h_T): the trained shared leaves (LoRA A, B) and the head
  trainable0/<leaf>   θ0 = (φ0, h0) of the same leaves (B = 0 compresses to almost nothing)

(every array with its own dtype and bits: float32 stays float32, exactly), plus the
run's ``config`` and ``summary`` (JSON text), its checkpoint ``step`` and
``frozen_digests`` ({leaf: sha256 of dtype, shape and bytes} of every frozen leaf).
The frozen weights are not stored: ``ntkft.theta0.build_theta0(config)`` rebuilds
them from the model folder, and the digests prove them equal to those the run
trained with. θ0's trainable leaves are stored rather than rebuilt, so a merge does
not depend on a random draw being bit-identical on another machine. Text fields are
0-d unicode arrays (``np.load`` needs no pickle), as the test fixtures' ``meta_*``.

:func:`write` writes through a temporary file and renames it, so a file at ``path`` is
complete; :func:`read` gives back what :func:`write` was given. ``ntkft.merge.runs``
turns a Run into a file (``save_run``) and a file back into a Run (``load_run``).
"""
import hashlib
import json
import os
import pathlib

import numpy as np

FORMAT = "ntkft.merge run file v1"
_TEXT = ("config", "summary", "frozen_digests")
_PARTS = ("trainable", "trainable0")


def digest(x) -> str:
  """sha256 (hex) of an array's dtype, shape and C-order bytes: equal iff bitwise equal."""
  x = np.ascontiguousarray(np.asarray(x))
  h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
  h.update(x.tobytes())
  return h.hexdigest()


def write(path: str | pathlib.Path, *, config: dict, summary: dict, step: int,
          trainable: dict, trainable0: dict, frozen_digests: dict) -> pathlib.Path:
  """Writes a run file atomically (``<path>.tmp``, then renamed to ``path``; its folder made
  if missing); returns ``path``.

  Args:
    path: the file, ending in ``.npz``.
    config, summary: the run's config.json and summary.json contents (JSON-able dicts).
    step: its checkpoint step.
    trainable, trainable0: flat {'/'-joined leaf name: array} of θ_T and θ0 (same names).
    frozen_digests: {frozen leaf name: :func:`digest`}.

  Raises:
    ValueError: ``path`` does not end in .npz, or trainable and trainable0 name other leaves.
  """
  path = pathlib.Path(path)
  if path.suffix != ".npz":
    raise ValueError(f"run file {path}: the name must end in .npz")
  if set(trainable) != set(trainable0):
    raise ValueError(f"run file {path}: trainable and trainable0 leaves differ: "
                     f"{sorted(set(trainable) ^ set(trainable0))[:3]}")
  arrays = {"format": np.array(FORMAT), "step": np.array(int(step), np.int64),
            "config": np.array(json.dumps(config)), "summary": np.array(json.dumps(summary)),
            "frozen_digests": np.array(json.dumps(frozen_digests, sort_keys=True))}
  for part, flat in (("trainable", trainable), ("trainable0", trainable0)):
    arrays.update({f"{part}/{name}": np.asarray(x) for name, x in flat.items()})
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)
  os.replace(tmp, path)
  return path


def read(path: str | pathlib.Path) -> dict:
  """{format, step, config, summary, frozen_digests, trainable, trainable0} of a run file
  (JSON fields parsed; ``trainable``/``trainable0`` flat {leaf name: numpy array}).

  Raises:
    FileNotFoundError: no file at ``path``.
    ValueError: not a run file of this format, or a field missing.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no run file {path} (written by ntkft.merge.save_run)")
  with np.load(path) as z:
    files = set(z.files)
    missing = [k for k in ("format", "step") + _TEXT if k not in files]
    if missing or str(z["format"]) != FORMAT:
      raise ValueError(f"{path} is not an {FORMAT!r} file (missing {missing or 'nothing'}, "
                       f"format {str(z['format']) if 'format' in files else None!r})")
    out = {"format": FORMAT, "step": int(z["step"]),
           **{k: json.loads(str(z[k])) for k in _TEXT}}
    for part in _PARTS:
      prefix = part + "/"
      out[part] = {k[len(prefix):]: z[k] for k in sorted(files) if k.startswith(prefix)}
  if not out["trainable"] or set(out["trainable"]) != set(out["trainable0"]):
    raise ValueError(f"{path}: trainable and trainable0 leaves are missing or differ")
  return out
