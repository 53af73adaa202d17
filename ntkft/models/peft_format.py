"""LoRA adapters in Hugging Face PEFT's folder format, both ways (BERT/RoBERTa encoders).

A PEFT LoRA folder holds ``adapter_config.json`` (``peft_type`` "LORA", ``r``,
``lora_alpha``, ``target_modules``, ``modules_to_save``, ...) and
``adapter_model.safetensors`` with keys such as::

  base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight  (r, d_in)
  base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight  (d_out, r)
  base_model.model.bert.pooler.dense.{weight,bias}       (modules_to_save: "pooler")
  base_model.model.classifier.{weight,bias}              (modules_to_save: "classifier")

PEFT computes ``W x + b + (lora_alpha / r) · B_peft A_peft x``; ntkft computes
``x W + b + (alpha / r) · x A B`` with A (d_in, r), B (r, d_out)
(``ntkft.models.layers``), so ``A = A_peftᵀ``, ``B = B_peftᵀ``,
``alpha = lora_alpha``, and dense weights are transposed as in
``ntkft.models.hf_format``. Non-LoRA tensors (``modules_to_save``) carry HF's
plain names and map like a checkpoint's.

For pooling="cls" the ntkft head is HF's sequence-classification head (BERT:
``bert.pooler`` + ``classifier``; RoBERTa: ``classifier.dense`` +
``classifier.out_proj``), so an exported folder loads with
``PeftModel.from_pretrained(AutoModelForSequenceClassification...)`` and gives
ntkft's logits. Mean/last pooling has no HF counterpart: only the LoRA tensors
are exported.
"""
import json
import pathlib
import re

import numpy as np
from safetensors.numpy import save_file

from ntkft.models.blocks import split_encoder_layer
from ntkft.models.hf_format import (
  LAYER_RULES,
  convert_hf_tensors,
  load_safetensors_file,
  module_path,
)
from ntkft.models.layers import AdapterSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(.+)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")
_FAMILY_PREFIX = {"bert": "bert.", "roberta": "roberta."}
# Options of a LoRA config that change the computation and that ntkft does not model.
_UNSUPPORTED = {"use_dora": False, "use_rslora": False, "lora_bias": False,
                "alpha_pattern": {}, "layer_replication": None, "fan_in_fan_out": False}


def read_adapter(folder: str | pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(adapter_config dict, tensors) of a PEFT LoRA folder, checked.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: not a LoRA adapter, or an option ntkft cannot reproduce.
  """
  folder = pathlib.Path(folder)
  for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
    if not (folder / name).is_file():
      raise FileNotFoundError(f"no {name} in PEFT adapter folder {folder}")
  config = json.loads((folder / ADAPTER_CONFIG).read_text())
  if config.get("peft_type") != "LORA":
    raise ValueError(f"{folder / ADAPTER_CONFIG}: peft_type {config.get('peft_type')!r} is "
                     "not 'LORA'")
  for key, default in _UNSUPPORTED.items():
    if config.get(key, default) not in (default, None):
      raise ValueError(f"{folder / ADAPTER_CONFIG}: {key}={config[key]!r} is not supported "
                       f"(ntkft's LoRA is plain alpha/r scaling; need {key}={default!r})")
  return config, load_safetensors_file(folder / ADAPTER_WEIGHTS)


def from_peft(config: dict, tensors: dict[str, np.ndarray], family: str, where: str = ""
              ) -> tuple[dict[str, AdapterSpec], dict[str, np.ndarray]]:
  """(adapters by ntkft module path, {ntkft param name: array}) from a PEFT adapter.

  LoRA ranks come from the tensors (so ``rank_pattern`` is honored); the scale
  is ``lora_alpha / r``. Head/pooler tensors (``modules_to_save``) are
  converted like a checkpoint's.

  Raises:
    ValueError: family not bert/roberta, a tensor that maps to no module, or
      a LoRA factor without its partner.
  """
  if family not in _FAMILY_PREFIX:
    raise ValueError(f"{where}: PEFT adapters are supported for BERT/RoBERTa encoders, not "
                     f"model family {family!r}")
  factors, rest, problems = {}, {}, []
  for key, value in tensors.items():
    bare = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
    m = _LORA_KEY.match(bare)
    if not m:
      rest[bare] = value
      continue
    stem = m.group(1)
    stem = stem[len(_FAMILY_PREFIX[family]):] if stem.startswith(_FAMILY_PREFIX[family]) else stem
    path = module_path(stem, family, load_head=True)
    if not path:
      problems.append(f"LoRA tensor {key!r} targets no module of a {family} encoder")
      continue
    factors.setdefault(path, {})[m.group(2)] = np.asarray(value, np.float32)
  params, unexpected = convert_hf_tensors(rest, family, load_head=True)
  problems += [f"tensor {k!r} maps to no parameter" for k in sorted(unexpected)]
  adapters = {}
  alpha = float(config.get("lora_alpha", 8))
  dropout = float(config.get("lora_dropout", 0.0))
  for path, ab in sorted(factors.items()):
    if set(ab) != {"A", "B"}:
      problems.append(f"LoRA module {path!r} has only lora_{''.join(ab)}")
      continue
    a, b = ab["A"].T, ab["B"].T  # (d_in, r), (r, d_out)
    if a.shape[1] != b.shape[0]:
      problems.append(f"LoRA module {path!r}: lora_A rank {a.shape[1]} != lora_B rank "
                      f"{b.shape[0]}")
      continue
    adapters[path] = AdapterSpec(rank=int(a.shape[1]), alpha=alpha, dropout=dropout)
    params[f"{path}/lora_a"], params[f"{path}/lora_b"] = a, b
  if problems:
    raise ValueError(f"{where}: PEFT adapter does not fit a {family} encoder:\n  "
                     + "\n  ".join(problems))
  return adapters, params


def _hf_stem(path: str, family: str) -> str:
  """ntkft module path -> HF module name (with the family prefix for encoder modules)."""
  layer = split_encoder_layer(path)
  if layer is not None and layer[1]:
    hf = {ours: theirs for theirs, ours in LAYER_RULES}[layer[1]]
    return f"{_FAMILY_PREFIX[family]}encoder.layer.{layer[0]}.{hf}"
  heads = ({"pooler/dense": "bert.pooler.dense", "head": "classifier"} if family == "bert" else
           {"pooler/dense": "classifier.dense", "head": "classifier.out_proj"})
  return heads[path]


def to_peft(params: dict[str, np.ndarray], adapters: dict[str, AdapterSpec], family: str,
            pooling: str, base_model: str = "") -> tuple[dict, dict[str, np.ndarray], str]:
  """(adapter_config, tensors, note) of ntkft params (flat '/'-joined names) in PEFT's format.

  Every adapter must share one rank and alpha (PEFT's ``r``/``lora_alpha``;
  differing ranks go to ``rank_pattern``). With pooling="cls" the head and
  pooler are written as ``modules_to_save``; otherwise only LoRA tensors, and
  ``note`` says why.
  """
  if family not in _FAMILY_PREFIX:
    raise ValueError(f"PEFT export supports BERT/RoBERTa encoders, not model family {family!r}")
  if not adapters:
    raise ValueError("PEFT export needs LoRA adapters; the model has none")
  alphas = {a.alpha for a in adapters.values()}
  ranks = {path: a.rank for path, a in adapters.items()}
  rank = max(set(ranks.values()), key=list(ranks.values()).count)
  if len(alphas) != 1:
    raise ValueError(f"PEFT export needs one LoRA alpha for every module, got {sorted(alphas)}")
  tensors = {}
  for path in adapters:
    stem = f"{_PREFIX}{_hf_stem(path, family)}"
    tensors[f"{stem}.lora_A.weight"] = np.ascontiguousarray(params[f"{path}/lora_a"].T)
    tensors[f"{stem}.lora_B.weight"] = np.ascontiguousarray(params[f"{path}/lora_b"].T)
  modules_to_save, note = None, ""
  if pooling == "cls":
    modules_to_save = ["classifier", "pooler"] if family == "bert" else ["classifier"]
    for path in ("pooler/dense", "head"):
      stem = f"{_PREFIX}{_hf_stem(path, family)}"
      tensors[f"{stem}.weight"] = np.ascontiguousarray(params[f"{path}/kernel"].T)
      tensors[f"{stem}.bias"] = np.asarray(params[f"{path}/bias"])
  else:
    note = (f"pooling={pooling!r} has no Hugging Face counterpart (its classifiers pool with "
            "the [CLS] pooler): only the LoRA weights were exported, not the head")
  spec = next(iter(adapters.values()))
  config = {
      # SEQ_CLS makes PEFT expect the classifier's tensors: only with the head.
      "peft_type": "LORA", "task_type": "SEQ_CLS" if modules_to_save else None,
      "base_model_name_or_path": base_model,
      "r": rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
      # Full module names: PEFT matches a name or a '.'-suffix, and a short
      # "output.dense" (ffn_out) would also match attention.output.dense.
      "target_modules": sorted(_hf_stem(p, family) for p in adapters),
      "modules_to_save": modules_to_save,
      "rank_pattern": {_hf_stem(p, family): r for p, r in ranks.items() if r != rank},
      "alpha_pattern": {}, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
      "init_lora_weights": True, "use_rslora": False, "use_dora": False, "revision": None,
  }
  return config, {k: np.asarray(v, np.float32) for k, v in tensors.items()}, note


def write_adapter(folder: str | pathlib.Path, config: dict, tensors: dict[str, np.ndarray]):
  """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` into ``folder``."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
  save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
