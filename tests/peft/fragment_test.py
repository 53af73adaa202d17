"""config.peft fragments and flags for a selection of block names."""
import pytest

from ntkft.peft import fragment


def test_peft_fragment_layers():
  frag = fragment.peft_fragment(["layer_5", "layer_4"])
  assert frag == {"layers": (4, 5)}
  assert fragment.peft_flags(frag) == "--config.peft.layers='(4,5)'"
  assert fragment.peft_flags({"layers": (3,)}) == "--config.peft.layers='(3,)'"


def test_peft_fragment_full_product():
  frag = fragment.peft_fragment(["layer_4/value", "layer_5/query",
                                  "layer_4/query", "layer_5/value"])
  assert frag == {"layers": (4, 5), "targets": ("query", "value")}
  assert fragment.peft_flags(frag) == (
      "--config.peft.layers='(4,5)' --config.peft.targets=\"('query','value')\"")


def test_peft_fragment_not_a_product():
  frag = fragment.peft_fragment(["layer_4/query", "layer_5/value"])
  assert frag["layers"] == (4, 5) and frag["targets"] == ("query", "value")
  assert frag["per_layer_targets"] == {4: ("query",), 5: ("value",)}
  assert "not a full" in frag["note"]
  frag = fragment.peft_fragment(["layer_4", "layer_5/value", "head"])
  assert "note" in frag and frag["head"] is True
  with pytest.raises(ValueError, match="embeddings"):
    fragment.peft_fragment(["embeddings"])
