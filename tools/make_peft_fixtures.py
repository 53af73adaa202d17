"""Make the Hugging Face PEFT LoRA adapter fixtures for ntkft's PEFT import/export tests.

This script runs ONLY in a throwaway environment with PyTorch, `transformers` and `peft`; nothing in
`ntkft/` or `tests/` imports it, and torch must never be installed into the project venv.

Environment (as used to produce the committed fixtures, Python 3.11, CPU):

  python3 -m venv /tmp/peftenv
  /tmp/peftenv/bin/pip install torch==2.13.0          # CPU build (pin first: never a CUDA torch)
  /tmp/peftenv/bin/pip install transformers==5.23.0 safetensors==0.8.0 tokenizers==0.23.3 \
      numpy==2.4.6 peft==0.21.2

Run from the repository root:

  /tmp/peftenv/bin/python tools/make_peft_fixtures.py --out tests/fixtures/peft

For each base model of tests/fixtures/parity (tiny_bert_cls: BertForSequenceClassification with 3
labels; tiny_roberta_cls: RobertaForSequenceClassification with 2 labels) it wraps the model with
`peft.get_peft_model` (random A and B: init_lora_weights=False; the classifier and, for BERT, the
pooler in modules_to_save, perturbed so they differ from the base), saves the adapter folder with
`save_pretrained`, reloads it with `PeftModel.from_pretrained` onto a fresh base model (checking
the logits are reproduced), and writes reference.npz with the inputs and that model's logits:

  tiny_bert_cls_lora/     r=4, lora_alpha=8, target_modules ["query", "value"],
                          modules_to_save ["classifier", "pooler"]
  tiny_roberta_cls_lora/  r=2, lora_alpha=16, target_modules ["key", "intermediate.dense",
                          "output.dense"] (the last matches attention.output.dense and the FFN's
                          output.dense), modules_to_save ["classifier"] (SEQ_CLS default)

reference.npz: input_ids, attention_mask, token_type_ids (int32, (4, 12), right padding) and
logits (float32, (4, num_labels)), eval mode, attn_implementation="eager".
"""
import argparse
import pathlib

import numpy as np
import peft
import torch
import transformers

_PARITY = pathlib.Path("tests/fixtures/parity")
_CASES = {
    "tiny_bert_cls_lora": dict(
        base="tiny_bert_cls", cls=transformers.BertForSequenceClassification, pad=0,
        lora=dict(r=4, lora_alpha=8, target_modules=["query", "value"],
                  modules_to_save=["classifier", "pooler"])),
    "tiny_roberta_cls_lora": dict(
        base="tiny_roberta_cls", cls=transformers.RobertaForSequenceClassification, pad=1,
        lora=dict(r=2, lora_alpha=16,
                  target_modules=["key", "intermediate.dense", "output.dense"])),
}


def _inputs(vocab, pad, seed):
  rng = np.random.default_rng(seed)
  lengths = (12, 7, 3, 10)
  ids = np.full((4, 12), pad, np.int32)
  mask = np.zeros((4, 12), np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n] = rng.integers(3, vocab, n)
    mask[i, :n] = 1
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _logits(model, inputs):
  with torch.no_grad():
    out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()})
  return out.logits.numpy().astype(np.float32)


def make(out_dir: pathlib.Path, name: str, case: dict, seed: int):
  torch.manual_seed(seed)
  base_dir = _PARITY / case["base"]
  load = lambda: case["cls"].from_pretrained(base_dir, attn_implementation="eager").eval()
  config = peft.LoraConfig(task_type="SEQ_CLS", init_lora_weights=False, **case["lora"])
  model = peft.get_peft_model(load(), config).eval()
  with torch.no_grad():  # trained-looking heads: perturb every modules_to_save copy
    for pname, p in model.named_parameters():
      if "modules_to_save" in pname:
        p.add_(0.3 * torch.randn_like(p))
  folder = out_dir / name
  model.save_pretrained(folder)
  (folder / "README.md").unlink()  # PEFT's model-card template
  inputs = _inputs(load().config.vocab_size, case["pad"], seed)
  logits = _logits(model, inputs)
  reloaded = peft.PeftModel.from_pretrained(load(), folder).eval()
  np.testing.assert_allclose(_logits(reloaded, inputs), logits, rtol=1e-6, atol=1e-6)
  assert np.abs(logits - _logits(load(), inputs)).max() > 1e-2, "adapter changes nothing"
  np.savez(folder / "reference.npz", logits=logits, **inputs)
  for path in sorted(folder.iterdir()):
    print(f"{path}: {path.stat().st_size} bytes")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("tests/fixtures/peft"))
  args = parser.parse_args()
  for seed, (name, case) in enumerate(_CASES.items()):
    make(args.out, name, case, seed)


if __name__ == "__main__":
  main()
