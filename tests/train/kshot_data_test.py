"""``config.data.kshot``: fine-tuning on the LM-BFF few-shot folders."""
import json

import pytest

from configs import glue_nonlinear
from ntkft import config_lib, data
from ntkft.train import loop
from tests.test_util import write_tiny_bert_checkpoint


@pytest.mark.parametrize("value, expected", [("", None), ("512-13", (512, 13)),
                                             ("16-100", (16, 100)), ("1-0", (1, 0))])
def test_parse_kshot(value, expected):
  assert loop.parse_kshot(value) == expected


@pytest.mark.parametrize("value", ["512", "512-", "-13", "a-13", "512-b", "0-13", "512-13-1",
                                   "512_13", " 512-13"])
def test_parse_kshot_rejects_malformed(value):
  with pytest.raises(ValueError, match="data.kshot"):
    loop.parse_kshot(value)


def test_data_dir_for(data_root):
  glue = loop.data_dir_for("sst2", str(data_root), "")
  assert glue == data.task_data_dir("sst2", str(data_root))
  kshot = loop.data_dir_for("rte", str(data_root), "512-13")
  assert kshot == data_root / "k-shot-1k-test" / "RTE" / "512-13"
  # The folder's splits: 2 x 512 train, 1024 dev, and test = the 277 GLUE RTE dev examples.
  assert len(data.load_examples("rte", "train", kshot)) == 1024
  assert len(data.load_examples("rte", "test", kshot)) == 277
  with pytest.raises(data.DataFormatError, match="7-13"):
    loop.data_dir_for("rte", str(data_root), "7-13")


def test_glue_common_default_is_off():
  assert glue_nonlinear.get_config().data.kshot == ""


def test_run_rejects_malformed_kshot_before_loading(tmp_path):
  config = glue_nonlinear.get_config("runlocal")
  config.model.name = str(tmp_path / "no_such_model")  # never reached
  config.data.kshot = "512:13"
  with pytest.raises(ValueError, match="data.kshot='512:13'"):
    loop.run(config, str(tmp_path / "w"))


def test_run_reads_the_kshot_folder(tmp_path, data_root):
  config = glue_nonlinear.get_config("runlocal")
  config.model.name = str(write_tiny_bert_checkpoint(tmp_path / "tiny", num_layers=1))
  config = config_lib.with_overrides(config, {
      "peft.layers": "(0,)", "train.steps": 2, "train.progress": False,
      # Every example of the k=16 folder's train and test splits, in one 32-token bucket.
      "data": dict(root=str(data_root), kshot="16-13", eval_split="test", n_train=0, n_eval=0,
                   max_len=32, buckets=(32,), eval_batch_size=128)}, "kshot test")
  summary = loop.run(config, str(tmp_path / "w"))
  # k=16 per class: 32 training examples; "test" of the folder is the GLUE SST-2 dev set.
  assert summary["n_train"] == 32 and summary["n_eval"] == 872
  assert json.loads((tmp_path / "w" / "config.json").read_text())["data"]["kshot"] == "16-13"
