"""PyTorch reference timings for the MiniLM LoRA NTK of ``benchmarks/ntk.py``.

Runs in a separate environment (torch, tokenizers, safetensors; torch never
goes into the project venv), e.g. the ``/tmp/refenv`` of ``tools/README.md``;
``python benchmarks/ntk.py --torch_python /tmp/refenv/bin/python`` calls it::

  /tmp/refenv/bin/python tools/torch_reference_ntk.py --model_dir MINILM_DIR \
      --data ../shared/data/glue/SST-2/train.tsv --n 32 [--paper]

Same setting as the benchmark: MiniLM (the safetensors of the project venv) as
a hand-written functional BERT (``torch.func`` needs no data-dependent control
flow, which the transformers 5 mask code has), LoRA r=8 on query/value of
layers 4 and 5, masked mean pooling, a 2-logit head, the first N SST-2 training
sentences padded to ``--seq_len`` tokens, the trace over the logits. Times (best
of ``--repeats``, after one warm-up):

* ``torch_forward_s``: one batched forward (no grad);
* ``torch_grad_s``: forward + backward of the summed logits w.r.t. the LoRA
  parameters;
* ``torch_vmap_jacrev_lora_s``: per-example ``vmap(jacrev)`` over the LoRA
  parameters, then the contraction (the issue's ~0.8 s reference);
* ``torch_loop_jacrev_lora_s``: the same with a Python loop over examples;
* ``torch_paper_all_params_s`` (``--paper``, one run): the paper's method,
  per-example ``jacrev`` over *all* parameters, then slicing the LoRA ones;
* ``torch_paper_hf_all_params_s`` (``--paper_hf``, one run, needs
  transformers): the same on Hugging Face's ``BertModel``, as the paper's
  script runs it.

Prints one JSON line. LoRA B is random (not 0) so every kernel is non-zero; the
cost does not depend on the values.
"""
import argparse
import csv
import json
import math
import sys
import time

import tokenizers
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.func import jacrev, vmap

p = argparse.ArgumentParser()
p.add_argument("--model_dir", required=True)
p.add_argument("--data", required=True)
p.add_argument("--n", type=int, default=32)
p.add_argument("--seq_len", type=int, default=64)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--paper", action="store_true")
p.add_argument("--paper_hf", action="store_true",
               help="also the paper's method on the transformers BertModel (needs transformers)")
args = p.parse_args()
torch.manual_seed(0)
H, NH, L = 384, 12, 6

W = {k: v.float() for k, v in load_file(f"{args.model_dir}/model.safetensors").items()
     if k != "embeddings.position_ids"}
for l in (4, 5):
  for proj in ("query", "value"):
    W[f"encoder.layer.{l}.attention.self.{proj}.lora_a"] = torch.randn(H, 8) / H**0.5
    W[f"encoder.layer.{l}.attention.self.{proj}.lora_b"] = torch.randn(8, H) * 0.01
W["head.weight"] = torch.randn(2, H) * 0.02
W["head.bias"] = torch.zeros(2)

def lin(P, name, x):
  y = F.linear(x, P[name + ".weight"], P[name + ".bias"])
  if name + ".lora_a" in P:
    y = y + x @ P[name + ".lora_a"] @ P[name + ".lora_b"]
  return y

def forward(P, ids, mask):
  """(B, T) ids and mask -> (B, 2) logits: BERT encoder, masked mean pool, linear head."""
  B, T = ids.shape
  e = "embeddings."
  h = P[e + "word_embeddings.weight"][ids] + P[e + "position_embeddings.weight"][:T] \
      + P[e + "token_type_embeddings.weight"][0]
  h = F.layer_norm(h, (H,), P[e + "LayerNorm.weight"], P[e + "LayerNorm.bias"], 1e-12)
  bias = (1.0 - mask[:, None, None, :].float()) * -1e9
  for l in range(L):
    pre = f"encoder.layer.{l}."
    split = lambda t: t.view(B, T, NH, H // NH).transpose(1, 2)
    q, k, v = (split(lin(P, pre + "attention.self." + n, h)) for n in ("query", "key", "value"))
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(H // NH) + bias, -1) @ v
    a = lin(P, pre + "attention.output.dense", a.transpose(1, 2).reshape(B, T, H))
    h = F.layer_norm(a + h, (H,), P[pre + "attention.output.LayerNorm.weight"],
                     P[pre + "attention.output.LayerNorm.bias"], 1e-12)
    f = lin(P, pre + "output.dense", F.gelu(lin(P, pre + "intermediate.dense", h)))
    h = F.layer_norm(f + h, (H,), P[pre + "output.LayerNorm.weight"],
                     P[pre + "output.LayerNorm.bias"], 1e-12)
  m = mask[..., None].float()
  return F.linear((h * m).sum(1) / m.sum(1), P["head.weight"], P["head.bias"])

tok = tokenizers.Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
tok.enable_truncation(args.seq_len)
tok.enable_padding(length=args.seq_len)
rows = list(csv.reader(open(args.data), delimiter="\t", quoting=csv.QUOTE_NONE))[1:args.n + 1]
encs = tok.encode_batch([r[0] for r in rows])
ids = torch.tensor([e.ids for e in encs])
mask = torch.tensor([e.attention_mask for e in encs])
lora = {k: v for k, v in W.items() if "lora" in k}
rest = {k: v for k, v in W.items() if "lora" not in k}

def f_one(lp, i, m):
  return forward({**rest, **lp}, i[None], m[None])[0]

def flat(jac, n):
  return torch.cat([jac[k].reshape(n, 2, -1) for k in lora], -1)

def kernel_vmap():
  J = flat(vmap(jacrev(f_one), in_dims=(None, 0, 0))(lora, ids, mask), args.n)
  return torch.einsum("ick,jck->ij", J, J)

def kernel_loop():
  J = torch.stack([flat(jacrev(f_one)(lora, ids[n], mask[n]), 1)[0] for n in range(args.n)])
  return torch.einsum("ick,jck->ij", J, J)

def f_one_all(P, i, m):
  return forward(P, i[None], m[None])[0]

def kernel_paper():  # per-example jacrev over all parameters, then slice the LoRA ones
  js = []
  for n in range(args.n):
    jac = jacrev(f_one_all)(W, ids[n], mask[n])
    js.append(flat({k: jac[k] for k in lora}, 1)[0])
    del jac
  J = torch.stack(js)
  return torch.einsum("ick,jck->ij", J, J)

def kernel_paper_hf(transformers):
  """The paper's method on Hugging Face's BertModel (LoRA in layers 4, 5; eager attention)."""

  class LoRALinear(torch.nn.Module):
    def __init__(self, base, a, b):
      super().__init__()
      self.base, self.lora_a, self.lora_b = base, torch.nn.Parameter(a), torch.nn.Parameter(b)

    def forward(self, x):
      return self.base(x) + x @ self.lora_a @ self.lora_b

  class Classifier(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.bert = transformers.AutoModel.from_pretrained(args.model_dir,
                                                         attn_implementation="eager")
      for l in (4, 5):
        att = self.bert.encoder.layer[l].attention.self
        for proj in ("query", "value"):
          key = f"encoder.layer.{l}.attention.self.{proj}"
          setattr(att, proj, LoRALinear(getattr(att, proj), W[key + ".lora_a"], W[key + ".lora_b"]))
      self.head = torch.nn.Linear(H, 2)

    def forward(self, i, m):
      h = self.bert(input_ids=i, attention_mask=m).last_hidden_state
      w = m[..., None].float()
      return self.head((h * w).sum(1) / w.sum(1))

  model = Classifier().eval()
  params = {k: v.detach() for k, v in model.named_parameters()}
  lora_names = [k for k in params if "lora" in k]
  one = lambda P, i, m: torch.func.functional_call(model, P, (i[None], m[None]))[0]

  def kernel():
    js = []
    for n in range(args.n):
      jac = jacrev(one)(params, ids[n], mask[n])
      js.append(torch.cat([jac[k].reshape(2, -1) for k in lora_names], -1))
      del jac
    J = torch.stack(js)
    return torch.einsum("ick,jck->ij", J, J)

  return kernel


def fwd():
  with torch.no_grad():
    return forward(W, ids, mask)

def vgrad():
  return torch.func.grad(lambda lp: forward({**rest, **lp}, ids, mask).sum())(lora)

def best(fn, repeats):
  fn()
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return min(ts)

out = {"n": args.n, "torch": torch.__version__, "threads": torch.get_num_threads(),
       "torch_forward_s": best(fwd, args.repeats), "torch_grad_s": best(vgrad, args.repeats),
       "torch_vmap_jacrev_lora_s": best(kernel_vmap, args.repeats),
       "torch_loop_jacrev_lora_s": best(kernel_loop, args.repeats)}
Kv, Kl = kernel_vmap(), kernel_loop()
out["vmap_vs_loop_max_rel"] = float((Kv - Kl).abs().max() / Kl.abs().max())
if args.paper:
  out["torch_paper_all_params_s"] = best(kernel_paper, 1)
if args.paper_hf:
  try:
    import transformers
  except ImportError:
    print("transformers is not installed: skipping --paper_hf", file=sys.stderr)
  else:
    out["torch_paper_hf_all_params_s"] = best(kernel_paper_hf(transformers), 1)
print(json.dumps(out))
