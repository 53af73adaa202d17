"""Orbax checkpoints of the whole TrainState, resumed from the workdir unasked.

Orbax writes each step into a temporary folder and renames it when complete, so
a run killed mid-save (even by SIGKILL) leaves the previous checkpoints intact
and the partial one is ignored on restore.
"""
import pathlib

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


def manager(workdir: str | pathlib.Path, every_steps: int, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager saving every ``every_steps`` steps, keeping the last ``keep``."""
  if every_steps < 1 or keep < 1:
    raise ValueError(f"checkpoint every_steps={every_steps} and keep={keep} must be >= 1")
  directory = pathlib.Path(workdir).resolve() / "ckpt"
  options = ocp.CheckpointManagerOptions(save_interval_steps=every_steps, max_to_keep=keep,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options)


def restore_latest(mngr: ocp.CheckpointManager, target, shardings=None):
  """(state, step) from the latest checkpoint, or (target, None) when there is none.

  ``target`` is a freshly initialized state with the same structure; its shapes,
  dtypes and shardings describe what to restore. ``shardings`` (a matching
  pytree of ``jax.sharding.Sharding``) overrides the target's: the arrays are
  read straight into that layout, so a checkpoint written on one mesh (e.g. 8
  devices) restores on another (e.g. 1 device).
  """
  step = mngr.latest_step()
  if step is None:
    return target, None
  if shardings is None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  else:
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), target, shardings)
  try:
    state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types for unreadable/mismatched files
    raise CheckpointError(
        f"checkpoint step {step} in {mngr.directory} cannot be restored "
        f"({type(e).__name__}: {e}). It may be corrupted or come from a different config; "
        "move that step folder aside to resume from an earlier one, or use a new workdir."
    ) from e
  return state, step


def save(mngr: ocp.CheckpointManager, step: int, state, force: bool = False) -> bool:
  """Saves if the policy says so (or ``force``); returns whether it saved."""
  return mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_last_state(workdir: str | pathlib.Path) -> tuple[dict, int]:
  """(state as nested dicts, step) of the last complete checkpoint of an ``ntkft.run`` workdir,
  restored without a target (host arrays; ``state["trainable"]``, ``["trainable0"]``, ...).

  Raises:
    FileNotFoundError: no ``ckpt/`` folder, or no complete checkpoint in it.
  """
  directory = pathlib.Path(workdir).resolve() / "ckpt"
  if not directory.is_dir():
    raise FileNotFoundError(f"no checkpoints in {directory} (not an ntkft.run workdir?)")
  with ocp.CheckpointManager(directory) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    state = mngr.restore(step, args=ocp.args.StandardRestore())
  return state, int(step)
