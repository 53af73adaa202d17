"""Byte-level BPE tokenizers (RoBERTa, GPT-2 style) through ntkft.data and into the models."""
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ntkft import data
from ntkft.data.readers import Examples
from ntkft.models import HeadConfig, load_pretrained
from tests.conftest import FIXTURES
from tests.test_util import assert_close

SENTENCES = ["the cat sat on the mat.", "a dog ran in the park!", "the movie was great and fun",
             "it is a bad film", "nothing happened at all"]


def _examples(text_a, text_b, labels):
  return Examples(text_a=list(text_a), text_b=None if text_b is None else list(text_b),
                  labels=np.asarray(labels, np.int32), task="test", split="test", source="test")


def make_bpe_tokenizer(path, kind="roberta", vocab_size=99, full_alphabet=False):
  """Trains a tiny byte-level BPE on SENTENCES and writes ``path`` (a tokenizer.json).

  kind="roberta": ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, RobertaProcessing
  (``<s> A </s>`` / ``<s> A </s></s> B </s>``). kind="gpt2": ``<|endoftext|>``=0,
  ``<|pad|>``=1, template ``A <|endoftext|>`` / ``A <|endoftext|> B <|endoftext|>``.
  full_alphabet: start from all 256 byte symbols so any text encodes.
  """
  specials = (["<s>", "<pad>", "</s>", "<unk>"] if kind == "roberta"
              else ["<|endoftext|>", "<|pad|>"])
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=specials, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [])
  tok.train_from_iterator(SENTENCES, trainer)
  if kind == "roberta":
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0),
                                                      trim_offsets=True, add_prefix_space=False)
  else:
    eos = ("<|endoftext|>", 0)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
        special_tokens=[eos])
  tok.save(str(path))
  return path


@pytest.fixture()
def roberta_dir(tmp_path):
  folder = tmp_path / "roberta"
  shutil.copytree(FIXTURES / "parity" / "tiny_roberta", folder)
  make_bpe_tokenizer(folder / "tokenizer.json", "roberta")
  return folder


def test_roberta_bpe_special_tokens_and_templates(roberta_dir):
  tok = data.load_tokenizer(roberta_dir)
  assert (tok.cls_id, tok.pad_id, tok.sep_id) == (0, 1, 2)
  assert tok.vocab_size <= 99  # fits the tiny checkpoint's embedding table
  ex = _examples(["the cat", "a dog ran"], ["a dog", "the mat"], [0, 1])
  enc = data.encode(tok, ex, max_len=16)
  for ids in enc.input_ids:  # <s> A </s></s> B </s>
    ids = ids.tolist()
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3
    first = ids.index(2)
    assert ids[first + 1] == 2 and 1 not in ids
  assert all((t == 0).all() for t in enc.token_type_ids)
  single = data.encode(tok, _examples(["the cat sat"], None, [0]), 16)
  ids = single.input_ids[0].tolist()
  assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 1


def test_roberta_bpe_end_to_end_padding_semantics(roberta_dir):
  tok = data.load_tokenizer(roberta_dir)
  model = load_pretrained(roberta_dir, HeadConfig(num_labels=2, pooling="cls"))
  ex = _examples(SENTENCES[:3], None, [0, 1, 0])
  enc = data.encode(tok, ex, max_len=32)
  batch = data.make_batch(enc, np.arange(3), 3, None, 24)
  assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()  # padded with <pad>=1
  x = {k: jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
  hidden = np.asarray(model.hidden_fn(model.params, x))
  real = batch["attention_mask"].astype(bool)
  for i in range(3):  # right padding does not change the real tokens' outputs
    n = int(enc.lengths[i])
    alone = {k: v[i:i + 1, :n] for k, v in x.items()}
    assert_close(np.asarray(model.hidden_fn(model.params, alone))[0], hidden[i, :n])
  assert_close(np.asarray(model.apply_fn(model.params, x))[0],
               np.asarray(model.apply_fn(model.params, {
                   k: v[:1, :int(enc.lengths[0])] for k, v in x.items()}))[0])

  def with_position_row(row, value):
    params = jax_tree_copy(model.params)
    table = params["embeddings"]["position"]["embedding"]
    params["embeddings"]["position"]["embedding"] = table.at[row].set(value)
    return np.asarray(model.hidden_fn(params, x))

  # Positions start at pad+1 = 2: rows 0 (BERT's first position) and 1 (the pad
  # position) never reach a real token; row 2 is the first real token's position.
  for row in (0, 1):
    assert_close(with_position_row(row, 5.0)[real], hidden[real], rtol=1e-6, atol_scale=1e-6)
  moved = np.abs(with_position_row(2, 5.0) - hidden).max(-1)
  assert (moved[:, 0] > 1e-2).all()


def jax_tree_copy(tree):
  return {k: jax_tree_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def test_decoder_tokenizer_without_cls_sep(tmp_path):
  path = make_bpe_tokenizer(tmp_path / "tokenizer.json", "gpt2")
  tok = data.load_tokenizer(path)
  assert (tok.cls_id, tok.sep_id, tok.pad_id) == (None, None, 1)
  enc = data.encode(tok, _examples(["the cat"], ["a dog"], [1]), max_len=16)
  ids = enc.input_ids[0].tolist()
  assert ids[-1] == 0 and ids.count(0) == 2 and 1 not in ids


def test_tokenizer_without_any_pad_token_is_rejected(tmp_path):
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=60, show_progress=False))
  tok.save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match="no padding token"):
    data.load_tokenizer(tmp_path)
