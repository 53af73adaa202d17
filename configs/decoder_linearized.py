"""Linearized LoRA fine-tuning of a decoder-only LM (GPT-2 / LLaMA layout) on a GLUE task.

  python -m ntkft.run --config=configs/decoder_linearized.py --config.model.name=/path/to/gpt2 \
      --workdir=runs/sst2_gpt2_lin
  python -m ntkft.run --config=configs/decoder_linearized.py:family=llama \
      --config.model.name=/path/to/llama-folder --workdir=...
CPU smoke run: `:runlocal` (128 train / 128 dev examples, 16 steps).

``model.name`` is a local Hugging Face folder (config.json with model_type gpt2 or
llama, model.safetensors, and a tokenizer.json that defines a pad token; GPT-2's
own tokenizer has none: add one, e.g. ``<|pad|>``, or use ``<|endoftext|>``, which
ntkft takes as the pad token when no other is defined). Sequences are classified
from the hidden state of their last real token (``model.pooling="last"``), so
left and right padding give the same logits. LoRA targets are the family's
(ntkft.peft.TARGETS): GPT-2 ``c_attn`` (fused q/k/v), LLaMA ``query``/``value``.

The NTK report for the same model and subset:
  python -m ntkft.ntk_report --config=configs/decoder_ntk_spectrum.py \
      --config.model.name=/path/to/gpt2 --workdir=runs/ntk_gpt2

Not measured here: no real decoder weights are available offline; the end to end
path is tested on a tiny random GPT-2-layout checkpoint (tests/train/decoder_e2e_test.py).
"""
from configs import glue_common
from ntkft import config_lib

DEFAULT_TARGETS = {"gpt2": ("c_attn",), "llama": ("query", "value")}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", family="gpt2", runlocal=False)
  c = glue_common.get_config(
      ",".join([f"task={arg.task}"] + (["runlocal"] if arg.runlocal else [])), mode="linearized")
  c.model.name = arg.family       # a local HF folder; the family default is only a placeholder
  c.model.pooling = "last"
  c.peft.family = arg.family
  c.peft.targets = DEFAULT_TARGETS[arg.family]
  return c
