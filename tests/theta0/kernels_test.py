"""ntkft.theta0.kernels: the kernels of a config's model at θ0, per block, of a kind,
against J Jᵀ and J sign(J)ᵀ from one direct ``jax.jacrev`` (float64 products)."""
import json

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from configs import ntk_spectrum
from ntkft import ntk_report, peft, theta0
from ntkft.theta0 import kernels as theta0_kernels
from tests import test_util

NUM_LAYERS = 3
# ntk_report rebuilds θ0 and compiles the sign kernel's programs again: read them back.
pytestmark = pytest.mark.usefixtures("xla_cache")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return test_util.write_tiny_bert_checkpoint(tmp_path_factory.mktemp("tiny") / "bert",
                                              num_layers=NUM_LAYERS, hidden=16)


def tiny_config(model_dir, kind="plain"):
  """ntk_report's config on the tiny BERT: LoRA (A and B active) on every layer + head."""
  config = ntk_spectrum.get_config(f"runlocal,kind={kind}")
  config.model.name = str(model_dir)
  config.peft.layers = tuple(range(NUM_LAYERS))
  config.peft.init = "gaussian"
  config.peft.head = True
  config.block_by = "layer"
  config.n = 6
  config.chunk_size = 4            # 6 = 4 + 2: two chunks
  config.data.max_len = 24
  config.progress = False
  return config


@pytest.fixture(scope="module")
def direct(model_dir):
  """(start, sample, J (n, C, P) float64 from one jacrev over the whole batch, names of P)."""
  config = tiny_config(model_dir)
  start = theta0.build_theta0(config)
  sample = theta0_kernels.kernel_sample(config, start)
  flat, unravel = ravel_pytree(start.trainable)
  x = sample.inputs()
  jac = jax.jacrev(lambda v: start.apply(unravel(v), x, start.frozen))(flat)
  return start, sample, np.asarray(jac, np.float64)


def _close(actual, expected):
  scale = np.abs(expected).max()
  assert scale > 0
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def test_ntk_blocks_sum_to_j_jt(model_dir, direct):
  start, sample, jac = direct
  c = jac.shape[1]
  bk = theta0_kernels.kernels_of_config(tiny_config(model_dir), start=start)
  assert bk.kind == "plain" and bk.whole is None
  assert list(bk.kernels) == [f"layer_{i}" for i in range(NUM_LAYERS)] + ["head"]
  assert all(k.dtype == np.float64 and k.shape == (6, 6) for k in bk.kernels.values())
  assert sum(bk.num_params.values()) == peft.count(start.trainable) == jac.shape[2]
  _close(bk.kernel, np.einsum("icp,jcp->ij", jac, jac) / c)
  np.testing.assert_array_equal(bk.kernel, sum(bk.kernels.values()))
  assert bk.fx0.dtype == np.float64 and bk.fx0.shape == (6, c)
  np.testing.assert_array_equal(bk.labels, sample.labels)
  np.testing.assert_array_equal(bk.index, sample.index)
  # Any inputs: the traced NTK of kernel_fn is the same K.
  _close(np.asarray(theta0_kernels.kernel_fn(start, "plain")(sample.inputs()), np.float64),
         np.einsum("icp,jcp->ij", jac, jac) / c)


def test_sign_is_the_whole_sign_kernel(model_dir, direct):
  start, sample, jac = direct
  c = jac.shape[1]
  bk = theta0_kernels.kernels_of_config(tiny_config(model_dir, "sign"), "sign", start=start)
  assert bk.kind == "sign" and bk.kernels == {} and bk.num_params == {}
  assert bk.whole.dtype == np.float64 and bk.kernel is bk.whole
  want = np.einsum("icp,jcp->ij", jac, np.sign(jac)) / c   # K(x_i, x_j) = J_i sign(J_j)ᵀ
  _close(bk.whole, want)
  assert np.all(np.diag(bk.whole) > 0)                     # Σ_p |J_ip| / C
  fx0 = np.asarray(start.apply(start.trainable, sample.inputs(), start.frozen), np.float64)
  np.testing.assert_allclose(bk.fx0, fx0, rtol=1e-6, atol=1e-6)
  # Cross kernel: rows x1, sign of the columns' (training) Jacobian.
  x = sample.inputs()
  half = {k: v[:3] for k, v in x.items()}
  cross = theta0_kernels.kernel_fn(start, "sign")(half, x)
  _close(np.asarray(cross, np.float64), want[:3])


def test_unknown_kind_fails_before_loading_the_model(tmp_path):
  config = tiny_config(tmp_path / "no_model_here")
  with pytest.raises(ValueError, match="kernels_of_config: unknown kernel kind 'rbf'"):
    theta0_kernels.kernels_of_config(config, "rbf")


def test_ntk_report_sign_writes_the_whole_kernel_and_its_symmetric_spectrum(model_dir,
                                                                            tmp_path):
  config = tiny_config(model_dir, "sign")
  summary = ntk_report.run(config, str(tmp_path))
  saved = np.load(tmp_path / "kernel.npz")
  assert not [name for name in saved.files if name.startswith("block/")]
  k = saved["kernel"]
  assert k.dtype == np.float64 and saved["fx0"].dtype == np.float64
  eigs = np.linalg.eigvalsh((k + k.T) / 2)
  np.testing.assert_allclose(summary["lambda_max"], eigs[-1], rtol=1e-12)
  assert summary["kind"] == "sign" and summary["blocks"] == {} and "note" in summary
  assert json.loads((tmp_path / "spectrum.json").read_text())["symmetrized"] is True
