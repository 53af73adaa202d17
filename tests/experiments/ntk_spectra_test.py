"""`experiments.ntk_spectra` end to end on a tiny random BERT, against direct kernels."""
import json

import jax
import numpy as np
import pytest

from configs import ntk_spectra as ntk_spectra_config
from experiments import common, ntk_spectra
from ntkft import ntk, peft, records, theta0
from ntkft.theta0 import kernels as theta0_kernels

NUM_LAYERS = 3


@pytest.fixture
def run_once(ntk_spectra_run):
  """The session's run (tests/experiments/conftest.py): 3 layers, n = 6, chunks of 4,
  choices ("singles", (0, 2), ("layer_2", "layer_0"), "all", 1)."""
  return ntk_spectra_run


def direct_kernels(config):
  """The full kernel and the layer-1 kernel, each from one empirical_ntk_fn call."""
  start = theta0.build_theta0(config)
  trainable, frozen, apply = start.trainable, start.frozen, start.apply
  x = theta0_kernels.kernel_sample(config, start).inputs()
  full = ntk.empirical_ntk_fn(apply, trace_axes=(-1,))(x, None, trainable, frozen)
  layer_1 = [p for p in ntk.leaf_paths(trainable) if "/layer_1/" in p]
  sub, rest = peft.partition(trainable, layer_1)

  def apply_sub(p, x, rest, frozen):
    return apply(peft.combine(p, rest), x, frozen)

  k_1 = ntk.empirical_ntk_fn(apply_sub, trace_axes=(-1,))(x, None, sub, rest, frozen)
  return np.asarray(full, np.float64), np.asarray(k_1, np.float64), peft.count(trainable)


def test_results_match_direct_kernels(run_once):
  config, workdir, returned = run_once
  results = json.loads((workdir / "results.json").read_text())
  assert results == returned
  labels = [c["label"] for c in results["choices"]]
  # Duplicates ((2, 0) == (0, 2), 1 == the single L1) are dropped, order kept.
  assert labels == ["L0", "L1", "L2", "L0+L2", "all (3)"]
  assert [c["blocks"] for c in results["choices"]][3:] == [
      ["layer_0", "layer_2"], ["layer_0", "layer_1", "layer_2"]]
  saved = np.load(workdir / "block_kernels.npz")
  blocks = {name: saved[f"block/{name}"] for name in results["blocks"]}
  assert list(blocks) == [f"layer_{i}" for i in range(NUM_LAYERS)]

  full, k_1, num_params = direct_kernels(config)
  scale = np.abs(full).max()
  assert scale > 0
  # The blocks partition the parameters: they sum to the full kernel ...
  np.testing.assert_allclose(sum(blocks.values()), full, atol=1e-5 * scale)
  # ... and a block is the kernel of the model with only that layer's LoRA moving.
  np.testing.assert_allclose(blocks["layer_1"], k_1, atol=1e-5 * scale)

  for choice in results["choices"]:
    k_s = sum(blocks[b] for b in choice["blocks"])
    eigs = np.asarray(choice["eigenvalues"])
    np.testing.assert_allclose(eigs, np.linalg.eigvalsh(k_s), rtol=0, atol=1e-10 * scale)
    assert np.all(np.diff(eigs) >= 0) and eigs[0] > -1e-6 * scale   # ascending, PSD
    assert choice["lambda_min"] == eigs[0] and choice["lambda_max"] == eigs[-1]
    assert np.isclose(choice["kappa"], eigs[-1] / eigs[0], rtol=1e-12)
    p = eigs / eigs.sum()
    assert np.isclose(choice["effective_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-10)
    assert np.isclose(choice["trace"], np.trace(k_s), rtol=1e-10)
    assert 1.0 <= choice["effective_rank"] <= config.n
  by_label = {c["label"]: c for c in results["choices"]}
  np.testing.assert_allclose(by_label["all (3)"]["eigenvalues"], np.linalg.eigvalsh(full),
                             atol=1e-5 * scale)
  np.testing.assert_allclose(by_label["L1"]["eigenvalues"], np.linalg.eigvalsh(k_1),
                             atol=1e-5 * scale)
  # LoRA r=8 on query and value of hidden 16: 2 · (16·8 + 8·16) parameters per layer.
  assert {b: v["num_params"] for b, v in results["blocks"].items()} == {
      f"layer_{i}": 512 for i in range(NUM_LAYERS)}
  assert by_label["all (3)"]["num_params"] == num_params == 1536
  # Adding a PSD block raises every eigenvalue (Weyl with b_1 >= 0).
  assert np.all(np.asarray(by_label["L0+L2"]["eigenvalues"]) >=
                np.asarray(by_label["L0"]["eigenvalues"]) - 1e-6 * scale)
  assert results["machine"]["backend"] == jax.default_backend()
  png = workdir / "ntk_spectra.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_resolve_choices():
  names = ["layer_0", "layer_1", "layer_2", "layer_10"]
  assert ntk_spectra.resolve_choices(("all", "singles", (10, 2)), names) == [
      tuple(names), ("layer_0",), ("layer_1",), ("layer_2",), ("layer_10",),
      ("layer_2", "layer_10")]
  assert ntk_spectra.choice_label(("layer_2", "layer_10"), names) == "L2+L10"
  assert ntk_spectra.choice_label(tuple(names), names) == "all (4)"
  assert sorted(names, key=common.block_order_key) == names
  with pytest.raises(ValueError, match="unknown block 7"):
    ntk_spectra.resolve_choices(((0, 7),), names)
  with pytest.raises(ValueError, match="given twice"):
    ntk_spectra.resolve_choices(((0, "layer_0"),), names)
  with pytest.raises(ValueError, match="empty"):
    ntk_spectra.resolve_choices((), names)
  with pytest.raises(ValueError, match="empty block set"):
    ntk_spectra.resolve_choices(((),), names)


def test_jsonable_and_negative_ridge(tmp_path):
  assert records.jsonable({"a": np.float64(np.inf), "b": [np.int64(3), np.nan],
                           "c": np.arange(2)}) == {"a": None, "b": [3, None], "c": [0, 1]}
  config = ntk_spectra_config.get_config("runlocal")
  config.ridge = -1.0
  with pytest.raises(ValueError, match="ridge"):
    ntk_spectra.run(config, str(tmp_path))
