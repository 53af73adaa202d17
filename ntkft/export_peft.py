"""Export a run's LoRA adapters as a Hugging Face PEFT adapter folder.

  python -m ntkft.export_peft --workdir=runs/sst2_lora --out=runs/sst2_lora/peft

Reads ``<workdir>/config.json`` and the last orbax checkpoint of an
``ntkft.run`` (``<workdir>/ckpt/<step>``) and writes ``adapter_config.json``
and ``adapter_model.safetensors`` (``ntkft.models.peft_format``). With
``model.pooling="cls"`` the head is HF's pooler + classifier and is written as
``modules_to_save``, so

  base = AutoModelForSequenceClassification.from_pretrained(<model folder>, num_labels=C)
  model = PeftModel.from_pretrained(base, out)

gives ntkft's logits (of the nonlinear model; a ``mode="linearized"`` run's
weights are exported as they are, but PEFT runs them through the nonlinear
network). For mean/last pooling only the LoRA weights are written, and the
export says so. Runs whose parameter subset is not LoRA (+ head) cannot be
expressed as a PEFT LoRA adapter and are refused.
"""
import json
import pathlib

import ml_collections
import numpy as np
from absl import flags

from ntkft import cli, peft, theta0
from ntkft.models import flatten, peft_format
from ntkft.train import checkpoint


def last_trainable(workdir: pathlib.Path) -> tuple[dict[str, np.ndarray], int]:
  """({name: array} of the trained parameters, step) from the last checkpoint."""
  state, step = checkpoint.restore_last_state(workdir)
  return {k: np.asarray(v) for k, v in flatten(state["trainable"]).items()}, step


def export(workdir: str | pathlib.Path, out: str | pathlib.Path) -> dict:
  """Writes the PEFT folder ``out``; returns {out, step, note, num_tensors}."""
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"no config.json in {workdir} (not an ntkft.run workdir?)")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  spec = peft.PeftSpec.from_config(config.peft)
  if tuple(spec.methods) != ("lora",):
    raise ValueError(f"{config_path}: peft.methods={tuple(spec.methods)} cannot be written as a "
                     "PEFT LoRA adapter (only 'lora', with or without the head)")
  model = theta0.build_theta0(config).model  # the run's θ0 (then its trained leaves)
  params = {k: np.asarray(v) for k, v in flatten(model.params).items()}
  trained, step = last_trainable(workdir)
  unknown = sorted(set(trained) - set(params))
  if unknown:
    raise ValueError(f"checkpoint in {workdir} has parameters the config's model lacks: "
                     f"{unknown[:5]}")
  params.update(trained)
  adapter_config, tensors, note = peft_format.to_peft(
      params, model.adapters, model.family, config.model.pooling, str(model.source))
  peft_format.write_adapter(out, adapter_config, tensors)
  if note:
    print(f"note: {note}")
  print(f"wrote {len(tensors)} tensors of step {step} to {out}")
  return {"out": str(out), "step": step, "note": note, "num_tensors": len(tensors)}


def main() -> dict:
  """The program: :func:`export` with the flags' folders."""
  return export(flags.FLAGS.workdir, flags.FLAGS.out)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "An ntkft.run workdir (config.json + ckpt/).")
  flags.DEFINE_string("out", None, "Output folder for the PEFT adapter.")
  cli.main(main, required=("workdir", "out"))
