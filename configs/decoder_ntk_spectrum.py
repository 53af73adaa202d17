"""Empirical NTK at θ0 over LoRA parameters of a decoder-only LM (GPT-2 / LLaMA layout).

  python -m ntkft.ntk_report --config=configs/decoder_ntk_spectrum.py \
      --config.model.name=/path/to/gpt2 --workdir=runs/ntk_gpt2
  ...:family=llama,task=rte  (LoRA on query/value; GPT-2: the fused c_attn)
CPU smoke run: `:runlocal` (n=16). Same fields as configs/ntk_spectrum.py, with
last-token pooling, LoRA on every layer and the family's LoRA target names.
"""
from configs import ntk_spectrum
from configs.decoder_linearized import DEFAULT_TARGETS
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task="sst2", kind="plain", family="gpt2", runlocal=False)
  c = ntk_spectrum.get_config(",".join([f"task={arg.task}", f"kind={arg.kind}"]
                                       + (["runlocal"] if arg.runlocal else [])))
  c.model.name = arg.family       # a local HF folder; the family default is only a placeholder
  c.model.pooling = "last"
  c.peft = dict(methods=("lora",), layers="all", targets=DEFAULT_TARGETS[arg.family],
                family=arg.family, rank=8, alpha=16.0, dropout=0.0, init="zero_b", head=False)
  return c
