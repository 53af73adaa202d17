"""Reading checkpoints: a damaged safetensors file is an error that names it."""
import os
import subprocess
import sys

import pytest

from ntkft.models import HeadConfig, load_pretrained
from tests.conftest import REPO
from tests.test_util import write_tiny_bert_checkpoint


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
  """A tiny BERT folder whose model.safetensors lost its second half."""
  path = write_tiny_bert_checkpoint(tmp_path_factory.mktemp("truncated") / "bert", num_layers=1)
  weights = path / "model.safetensors"
  data = weights.read_bytes()
  load_pretrained(path, HeadConfig(num_labels=2))  # intact: loads
  weights.write_bytes(data[:len(data) // 2])
  return path


def test_truncated_safetensors_names_the_file(truncated):
  with pytest.raises(ValueError, match="truncated or corrupt") as info:
    load_pretrained(truncated, HeadConfig(num_labels=2))
  assert str(truncated / "model.safetensors") in str(info.value)


def test_truncated_safetensors_through_the_command_line(truncated, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "ntkft.ntk_report", "--config=configs/ntk_spectrum.py:runlocal",
       f"--config.model.name={truncated}", "--config.peft.layers=(0,)",
       f"--workdir={tmp_path}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO)),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith("error: ") and "model.safetensors is truncated or corrupt" in lines[0]
