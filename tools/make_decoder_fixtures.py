"""Make reference fixtures for the decoder-only models (GPT-2 and LLaMA layouts).

Runs ONLY in the throwaway torch + transformers environment described in
tools/make_parity_fixtures.py (/tmp/refenv; torch 2.13.0 CPU, transformers 5.23.0); nothing in
ntkft/ or tests/ imports it. From the repository root:

  /tmp/refenv/bin/python tools/make_decoder_fixtures.py --out tests/fixtures/decoders

Writes two folders in Hugging Face `save_pretrained` layout (config.json + model.safetensors) plus
reference.npz (see tests/fixtures/decoders/README.md):

  tiny_gpt2/   GPT2ForSequenceClassification(num_labels=3): keys `transformer.*` + `score.weight`
               (LM head tied to `transformer.wte.weight`, so not stored).
  tiny_llama/  LlamaForSequenceClassification(num_labels=3) keys `model.*` + `score.weight`, plus the
               untied `lm_head.weight` of a LlamaForCausalLM that shares the same `model.*` weights.

All models: vocab 99, hidden 32, 2 layers, 4 heads (LLaMA: 2 key/value heads), intermediate 37,
initializer_range 0.2, every bias / norm weight perturbed by N(0, 0.1^2), eager attention, fp32, eval.
"""
import argparse
import datetime
import os
import shlex
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

_LENGTHS = (5, 9, 16, 3)
_L = 16
_PAD = 0


def _meta(extra):
  meta = {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
          "numpy_version": np.__version__, "python_version": sys.version.split()[0],
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
          "script": "tools/make_decoder_fixtures.py"}
  meta.update(extra)
  return {f"meta_{k}": np.array(str(v)) for k, v in meta.items()}


def _inputs(seed):
  """Right- and left-padded int32 (4, 16) ids / masks / positions; real ids in [1, 99)."""
  rng = np.random.RandomState(seed)
  seqs = [rng.randint(1, 99, size=n) for n in _LENGTHS]
  out = {}
  for side in ("right", "left"):
    ids = np.full((len(seqs), _L), _PAD, np.int32)
    mask = np.zeros((len(seqs), _L), np.int32)
    for i, s in enumerate(seqs):
      sl = slice(0, len(s)) if side == "right" else slice(_L - len(s), _L)
      ids[i, sl] = s
      mask[i, sl] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    out[side] = dict(input_ids=ids, attention_mask=mask, position_ids=pos)
  return out


def _perturb(model, seed, scale=0.1):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(".bias") or "ln_" in name or "norm" in name:
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _t(x):
  return torch.from_numpy(np.asarray(x, dtype=np.int64))


def make(out_dir, family, seed):
  torch.manual_seed(seed)
  common = dict(vocab_size=99, initializer_range=0.2, pad_token_id=_PAD, bos_token_id=1,
                eos_token_id=2, attn_implementation="eager", num_labels=3)
  if family == "gpt2":
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=37, n_positions=32,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                     **common)
    lm_cls, cls_cls, base = transformers.GPT2LMHeadModel, transformers.GPT2ForSequenceClassification, "transformer"
  else:
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, rms_norm_eps=1e-6,
                                      tie_word_embeddings=False, hidden_act="silu", **common)
    lm_cls, cls_cls, base = transformers.LlamaForCausalLM, transformers.LlamaForSequenceClassification, "model"
  lm = lm_cls(config)
  _perturb(lm, seed + 1000)
  clf = cls_cls(config)
  getattr(clf, base).load_state_dict(getattr(lm, base).state_dict())
  lm.eval()
  clf.eval()
  folder = os.path.join(out_dir, f"tiny_{family}")
  os.makedirs(folder, exist_ok=True)
  clf.save_pretrained(folder)
  if family == "llama":  # add the untied LM head next to the classifier's tensors
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    tensors["lm_head.weight"] = lm.lm_head.weight.detach().clone().contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
  reloaded, info = cls_cls.from_pretrained(folder, attn_implementation="eager",
                                           output_loading_info=True)
  bad = {k: v for k, v in info.items() if v and k != "unexpected_keys"}
  assert not bad, bad
  reloaded.eval()
  inputs = _inputs(seed + 2000)
  arrays = {}
  with torch.no_grad():
    for side, x in inputs.items():
      kw = dict(input_ids=_t(x["input_ids"]), attention_mask=_t(x["attention_mask"]),
                position_ids=_t(x["position_ids"]))
      hid = getattr(reloaded, base)(**kw).last_hidden_state.numpy()
      logits = reloaded(**kw).logits.numpy()
      lm_logits = lm(**kw).logits.numpy()
      np.testing.assert_allclose(getattr(lm, base)(**kw).last_hidden_state.numpy(), hid, atol=0)
      pre = "" if side == "right" else "left_"
      arrays.update({f"{pre}{k}": v for k, v in x.items()})
      arrays[f"{pre}last_hidden_state"] = hid.astype(np.float32)
      arrays[f"{pre}logits"] = logits.astype(np.float32)
      if side == "right":
        arrays["lm_logits"] = lm_logits.astype(np.float32)
  # HF's classifier must agree on both paddings (it picks the last non-pad token).
  np.testing.assert_allclose(arrays["logits"], arrays["left_logits"], atol=1e-5)
  arrays.update(_meta({"model": f"{cls_cls.__name__} random seed {seed}, eager fp32 eval"}))
  np.savez_compressed(os.path.join(folder, "reference.npz"), **arrays)
  print(folder, sorted(os.listdir(folder)),
        {k: os.path.getsize(os.path.join(folder, k)) for k in os.listdir(folder)})


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="tests/fixtures/decoders")
  a = p.parse_args(argv)
  make(a.out, "gpt2", 10)
  make(a.out, "llama", 20)


if __name__ == "__main__":
  main()
