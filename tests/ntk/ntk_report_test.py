"""`python -m ntkft.ntk_report` on the real MiniLM at runlocal scale."""
import json

import numpy as np
import pytest

from configs import ntk_spectrum
from ntkft import ntk_report
from tests.test_util import assert_close

# Each run rebuilds θ0, so its programs are compiled again (e.g. MiniLM's outputs at θ0 on
# the same 8 examples in three runs): read them back.
pytestmark = pytest.mark.usefixtures("xla_cache")


def test_runlocal_writes_kernel_and_spectrum(tmp_path):
  config = ntk_spectrum.get_config("runlocal")
  config.n = 8
  config.chunk_size = 4
  config.progress = False
  ntk_report.run(config, str(tmp_path))
  summary = json.loads((tmp_path / "spectrum.json").read_text())
  for key in ("n", "num_params", "condition_number", "lambda_min", "lambda_max",
              "effective_rank"):
    assert key in summary, key
  # 2 layers x (query, value) x (A, B) factors of rank 8 and width 384:
  assert summary["n"] == 8 and summary["num_params"] == 2 * 2 * 8 * 384 * 2
  saved = np.load(tmp_path / "kernel.npz")
  k = saved["kernel"]
  assert k.shape == (8, 8)
  assert_close(k, k.T, rtol=1e-6, atol_scale=1e-6)  # float32 K_ij, K_ji: own reductions
  eigs = np.linalg.eigvalsh(k.astype(np.float64))
  assert eigs.min() > -1e-5 * eigs.max()
  np.testing.assert_allclose(summary["lambda_max"], eigs.max(), rtol=1e-6)
  np.testing.assert_allclose(summary["condition_number"], eigs.max() / eigs.min(), rtol=1e-4)
  blocks = [saved[name] for name in saved.files if name.startswith("block/")]
  # layer_projection blocks of layers 4 and 5: query and value
  assert len(blocks) == 4
  np.testing.assert_allclose(sum(blocks), k, rtol=1e-5, atol=1e-6 * np.abs(k).max())
  assert saved["fx0"].shape == (8, 2) and saved["labels"].shape == (8,)
  assert (tmp_path / "spectrum.png").stat().st_size > 1000


def _unchunked_config():
  config = ntk_spectrum.get_config("runlocal")
  config.n = 8
  config.chunk_size = 0
  config.progress = False
  return config


@pytest.fixture(scope="module")
def formed(tmp_path_factory):
  """The unchunked, unbucketed run both tests below compare with: (summary, workdir)."""
  workdir = tmp_path_factory.mktemp("ntk_report_formed")
  return ntk_report.run(_unchunked_config(), str(workdir)), workdir


def test_length_buckets_give_the_same_kernel(tmp_path, formed):
  config = _unchunked_config()
  config.length_buckets = (16, 32)
  ntk_report.run(config, str(tmp_path / "cut"))
  padded = np.load(formed[1] / "kernel.npz")["kernel"]
  cut = np.load(tmp_path / "cut" / "kernel.npz")["kernel"]
  np.testing.assert_allclose(cut, padded, rtol=0, atol=1e-5 * np.abs(padded).max())


def test_operator_spectrum_matches_the_formed_kernel(tmp_path, formed):
  """implementation="operator": Lanczos on K v gives the formed kernel's extremes."""
  formed = formed[0]
  config = _unchunked_config()
  config.implementation = "operator"
  summary = ntk_report.run(config, str(tmp_path / "operator"))
  assert json.loads((tmp_path / "operator" / "spectrum.json").read_text())["lanczos_iters"] == 8
  assert not (tmp_path / "operator" / "kernel.npz").exists()
  np.testing.assert_allclose(summary["lambda_max"], formed["lambda_max"], rtol=1e-3)
  np.testing.assert_allclose(summary["lambda_min"], formed["lambda_min"], rtol=1e-2)
