"""ntkft.models.blocks: the one reading of encoder-layer leaf paths.

(The block modes themselves are tested in tests/ntk/blocks_test.py.)
"""
import pytest

from ntkft import peft
from ntkft.models import EncoderConfig, HeadConfig, flatten, init_model
from ntkft.models.blocks import block_of_fn, encoder_layer_index, split_encoder_layer
from ntkft.theta0.layer_sets import layer_block
from ntkft.train import prefix_cache

NUM_LAYERS = 12  # two-digit indices: layer_10 must not read as layer_1


@pytest.mark.parametrize("path, want", [
    ("encoder/layer_0/attention/query/lora_b", (0, "attention/query/lora_b")),
    ("encoder/layer_10/ffn/ffn_in/kernel", (10, "ffn/ffn_in/kernel")),
    ("encoder/layer_3/x", (3, "x")),
])
def test_encoder_paths_split_into_index_and_rest(path, want):
  assert split_encoder_layer(path) == want
  assert encoder_layer_index(path) == want[0]
  i, rest = want
  assert f"encoder/layer_{i}/{rest}" == path  # the split loses nothing


@pytest.mark.parametrize("path", [
    "head/kernel", "pooler/dense/bias", "embeddings/word/embedding",
    "encoder/layer_3",              # a module, not a leaf under it
    "encoder/layer_x/query/kernel", "encoder/layer_/query/kernel",
    "layer_2/query/kernel",         # not under encoder/
    "decoder/layer_1/attn/kernel", "xencoder/layer_1/query/kernel", "",
])
def test_other_paths_have_no_encoder_layer(path):
  assert split_encoder_layer(path) is None
  assert encoder_layer_index(path) is None


def test_every_leaf_of_a_model_reads_as_its_layer():
  """On a real parameter tree: a leaf has index i iff it lives under encoder/layer_i/,
  and the readers built on the helper agree with the "layer" block mode."""
  config = EncoderConfig(vocab_size=40, hidden_size=8, num_layers=NUM_LAYERS, num_heads=2,
                         intermediate_size=16, max_position_embeddings=16)
  spec = peft.PeftSpec(methods=("lora",), layers=None, targets=("query", "value"), rank=2,
                       init="gaussian", head=True)
  model = init_model(config, HeadConfig(num_labels=2), peft.adapters_for(spec, NUM_LAYERS))
  names = list(flatten(model.params))
  seen = set()
  for name in names:
    parts = name.split("/")
    i = encoder_layer_index(name)
    if parts[0] == "encoder" and parts[1].startswith("layer_"):
      assert i == int(parts[1].removeprefix("layer_")), name
      assert block_of_fn("layer")(name) == layer_block(name) == f"layer_{i}"
      seen.add(i)
    else:
      assert i is None, name
      assert layer_block(name) == "head"
  assert seen == set(range(NUM_LAYERS))
  lora = [n for n in names if "lora" in n or n.startswith("head/")]
  assert prefix_cache.lowest_trained_layer(lora, NUM_LAYERS) == 0
  upper = [n for n in lora if encoder_layer_index(n) in (None, 10, 11)]
  assert prefix_cache.lowest_trained_layer(upper, NUM_LAYERS) == 10
