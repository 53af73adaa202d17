"""Tokenization with HuggingFace ``tokenizers`` (``tokenizer.json`` files).

Sequences are encoded without padding (padding is the batcher's job, see
:mod:`ntkft.data.batching`) and truncated longest-first so that the total
length including special tokens is at most ``max_len``:
``[CLS] a [SEP]`` for single sentences, ``[CLS] a [SEP] b [SEP]`` for pairs
(BERT; token type 0 up to and including the first ``[SEP]``, 1 after).

Whatever template the file's post-processor defines is used as is: RoBERTa's
byte-level BPE files (``RobertaProcessing``) give ``<s> a </s>`` and
``<s> a </s></s> b </s>`` with pad id 1 (``<pad>``); token type ids are then
ignored by models with a single token type. Decoder-only tokenizers (GPT-2,
LLaMA) have no ``[CLS]``/``[SEP]`` (``cls_id``/``sep_id`` are None) but must
define a pad token: the batcher pads with it and the attention mask marks it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import tokenizers

from ntkft.data.readers import Examples

_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")
_CLS_TOKENS = ("[CLS]", "<s>")
_SEP_TOKENS = ("[SEP]", "</s>")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A ``tokenizers.Tokenizer`` plus the special-token ids the pipeline needs.

  Attributes:
    backend: the HuggingFace tokenizer; padding disabled. Its truncation is
      set by each :func:`encode` call.
    path: the ``tokenizer.json`` it was read from.
    pad_id: padding id (from the file's padding config, else the id of
      ``[PAD]``, ``<pad>``, ``<|pad|>`` or, GPT-2 style, ``<|endoftext|>``).
    cls_id: id of ``[CLS]`` (or ``<s>``); None when the vocabulary has neither
      (decoder-only tokenizers).
    sep_id: id of ``[SEP]`` (or ``</s>``); None when absent.
    vocab_size: vocabulary size including added tokens.
  """

  backend: tokenizers.Tokenizer
  path: Path
  pad_id: int
  cls_id: int | None
  sep_id: int | None
  vocab_size: int


def _token_id(
    backend: tokenizers.Tokenizer, candidates, what: str, path: Path
) -> int:
  for token in candidates:
    token_id = backend.token_to_id(token)
    if token_id is not None:
      return int(token_id)
  raise ValueError(f"{path}: no {what} token (looked for {list(candidates)})")


def _optional_id(backend: tokenizers.Tokenizer, candidates) -> int | None:
  for token in candidates:
    token_id = backend.token_to_id(token)
    if token_id is not None:
      return int(token_id)
  return None


def load_tokenizer(model_dir: str | os.PathLike) -> Tokenizer:
  """Loads ``model_dir/tokenizer.json`` (or a ``tokenizer.json`` path itself).

  Raises:
    FileNotFoundError: no tokenizer.json there.
    ValueError: the vocabulary lacks a pad token (decoder tokenizers such as
      GPT-2's need one added, e.g. ``<|pad|>``, or a padding config).
  """
  path = Path(model_dir)
  if path.is_dir():
    path = path / "tokenizer.json"
  if not path.is_file():
    raise FileNotFoundError(f"tokenizer file {path} not found")
  backend = tokenizers.Tokenizer.from_file(str(path))
  padding = json.loads(path.read_text(encoding="utf-8")).get("padding")
  backend.no_padding()
  backend.no_truncation()
  if padding and padding.get("pad_id") is not None:
    pad_id = int(padding["pad_id"])
  else:
    pad_id = _token_id(backend, _PAD_TOKENS, "padding", path)
  return Tokenizer(
      backend=backend,
      path=path,
      pad_id=pad_id,
      cls_id=_optional_id(backend, _CLS_TOKENS),
      sep_id=_optional_id(backend, _SEP_TOKENS),
      vocab_size=int(backend.get_vocab_size(with_added_tokens=True)),
  )


@dataclasses.dataclass(frozen=True)
class Encoded:
  """Token ids of N examples, unpadded.

  Attributes:
    input_ids: N int32 arrays, example i of shape (lengths[i],).
    token_type_ids: N int32 arrays, same shapes (0 for segment a, 1 for b).
    labels: (N,) int32 class ids or float32 scores.
    lengths: (N,) int32 token counts including special tokens.
    pad_id: the tokenizer's padding id (used by the batcher).
  """

  input_ids: list[np.ndarray]
  token_type_ids: list[np.ndarray]
  labels: np.ndarray
  lengths: np.ndarray
  pad_id: int

  def __len__(self) -> int:
    return len(self.input_ids)


def encode(tokenizer: Tokenizer, examples: Examples, max_len: int) -> Encoded:
  """Tokenizes ``examples`` (pairs when ``text_b`` is set).

  Truncation is longest-first (drop tokens from the longer segment first) to at
  most ``max_len`` tokens including special tokens.

  Args:
    tokenizer: from :func:`load_tokenizer`.
    examples: N examples.
    max_len: maximum sequence length, >= 3 for single sentences and >= 4 for
      pairs (room for the special tokens and one token per segment).

  Returns:
    :class:`Encoded` with N variable-length sequences.
  """
  min_len = 4 if examples.text_b is not None else 3
  if int(max_len) != max_len or max_len < min_len:
    raise ValueError(f"max_len={max_len} must be an integer >= {min_len}")
  backend = tokenizer.backend
  backend.no_padding()
  backend.enable_truncation(max_length=int(max_len), strategy="longest_first")
  if examples.text_b is None:
    inputs = list(examples.text_a)
  else:
    inputs = list(zip(examples.text_a, examples.text_b))
  encodings = backend.encode_batch(inputs, add_special_tokens=True)
  input_ids = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
  token_type_ids = [np.asarray(e.type_ids, dtype=np.int32) for e in encodings]
  lengths = np.asarray([len(ids) for ids in input_ids], dtype=np.int32)
  if lengths.size and lengths.max() > max_len:
    raise ValueError(
        f"tokenizer {tokenizer.path} produced a sequence of "
        f"{lengths.max()} > max_len={max_len} tokens"
    )
  return Encoded(
      input_ids=input_ids,
      token_type_ids=token_type_ids,
      labels=np.asarray(examples.labels).copy(),
      lengths=lengths,
      pad_id=tokenizer.pad_id,
  )
