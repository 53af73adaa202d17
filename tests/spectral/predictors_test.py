"""ntkft.spectral.predictors goes through the one symmetrization / κ policy of ntkft.spectral."""
import numpy as np
import pytest

from ntkft.spectral import predictors, symmetric_kernel


def _kernels(seed=0, n=6):
  """A PD kernel on a 2^-10 grid and an integer skew part (so K + S + (K + S)ᵀ = 2K exactly)."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, n + 2))
  k = np.round(a @ a.T * 1024) / 1024
  k = (k + k.T) / 2 + n * np.eye(n)
  skew = np.triu(rng.integers(-2, 3, size=(n, n)), 1).astype(float)
  return k, skew - skew.T


def test_sign_kernel_predictors_are_those_of_its_symmetric_part():
  k, skew = _kernels()
  y = predictors.centred_targets(np.array([0, 1, 1, 0, 1, 0]), 2)
  got = predictors.predictors(k + skew, y, symmetrize=True)
  want = predictors.predictors(symmetric_kernel(k + skew, symmetrize=True), y, symmetrize=False)
  assert got == want                                      # bit for bit
  eig = np.linalg.eigvalsh(k)
  assert got["kappa"] == pytest.approx(eig[-1] / eig[0], rel=1e-12)


def test_plain_kernel_must_be_symmetric():
  k, skew = _kernels(1)
  y = predictors.centred_targets(np.array([0, 1, 1, 0, 1, 0]), 2)
  with pytest.raises(ValueError, match="not symmetric"):
    predictors.predictors(k + skew, y, symmetrize=False)


def test_layer_set_predictors_symmetrize_sign_kernels_only():
  """8 kernels; the sign ones are analysed through their symmetric part."""
  k, skew = _kernels(2, n=4)                              # (N·C, N·C) with N = 2, C = 2
  untraced = k.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3)   # (N, N, C, C), flat() inverts it
  sign = (k + skew).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3)
  blocks = {("plain", "lora"): untraced, ("plain", "head"): 0 * untraced,
            ("sign", "lora"): sign, ("sign", "head"): 0 * sign}
  out = predictors.layer_set_predictors(blocks, np.array([0, 1]))
  assert set(out) == {predictors.kernel_name(a, b, c) for a in predictors.KINDS
                      for b in predictors.LAYOUTS for c in predictors.HEADS}
  assert out["sign_flat_head"] == out["plain_flat_head"]
