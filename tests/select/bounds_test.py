"""Weyl bounds on the spectrum of K_S + K_b: random PSD matrices and real MiniLM kernels."""
import itertools
import math

import numpy as np
import pytest

from ntkft.select import bounds


def _psd(rng, n, rank, scale=1.0):
  """Random PSD (n, n) matrix of the given rank (0: the zero matrix)."""
  if rank == 0:
    return np.zeros((n, n))
  g = rng.normal(size=(n, rank)) * scale
  # Spread the spectrum so kappa is not trivially ~1.
  g *= np.logspace(0, -2, rank)
  return g @ g.T


def _exact_kappa(eigs):
  return eigs[-1] / eigs[0] if eigs[0] > 0 else math.inf


def _random_cases(num):
  rng = np.random.default_rng(1234)
  for seed in range(num):
    n = int(rng.integers(1, 13))
    rank_s = int(rng.integers(0, n + 1))
    rank_b = int(rng.integers(0, n + 1))
    if seed % 7 == 0:
      rank_s = 0                                    # the empty set: K_S = 0
    scale_s, scale_b = 10.0 ** rng.uniform(-3, 3, size=2)
    ridge = float(rng.choice([0.0, 1e-6, 1e-2, 1.0]))
    yield (seed, _psd(rng, n, rank_s, scale_s), _psd(rng, n, rank_b, scale_b),
           ridge)


CASES = list(_random_cases(300))


@pytest.mark.parametrize("case", range(0, 300, 30))
def test_bounds_hold_on_random_psd(case):
  """Every bound, checked directly against np.linalg.eigvalsh (30 cases each)."""
  for seed, k_s, k_b, ridge in CASES[case:case + 30]:
    eigs_s, eigs_b = np.linalg.eigvalsh(k_s), np.linalg.eigvalsh(k_b)
    exact = np.linalg.eigvalsh(k_s + k_b) + ridge
    tol = 1e-9 * (np.abs(eigs_s).max() + np.abs(eigs_b).max() + ridge)
    lower, upper = bounds.weyl_bounds(eigs_s, eigs_b[0], eigs_b[-1])
    assert np.all(exact >= lower + ridge - tol), seed
    assert np.all(exact <= upper + ridge + tol), seed
    ext = bounds.extreme_bounds(eigs_s[0], eigs_s[-1], eigs_b[0], eigs_b[-1],
                                ridge)
    assert ext["lambda_min_lower"] - tol <= exact[0] <= ext["lambda_min_upper"] + tol
    assert ext["lambda_max_lower"] - tol <= exact[-1] <= ext["lambda_max_upper"] + tol
    # PSD: adding K_b cannot lower lambda_max below either part's.
    assert ext["lambda_max_lower"] >= max(eigs_s[-1], eigs_b[-1]) + ridge - tol
    lo, hi = bounds.kappa_bounds(eigs_s[0], eigs_s[-1], eigs_b[0], eigs_b[-1],
                                 ridge, slack=tol)
    kappa = _exact_kappa(exact)
    assert lo <= kappa <= hi, (seed, lo, kappa, hi)
    assert lo >= 1.0
    report = bounds.check_bounds(k_s, k_b, ridge)
    assert report["violations"] == 0, (seed, report["violated"])
    assert report["checks"] == 2 * k_s.shape[0] + 6
    np.testing.assert_allclose(report["eigs"], exact, rtol=0, atol=tol)


def test_rank_deficient_and_empty_set_cases_are_covered():
  ranks = [(np.linalg.matrix_rank(k_s), np.linalg.matrix_rank(k_b), k_s.shape[0])
           for _, k_s, k_b, _ in CASES]
  assert sum(rs == 0 for rs, _, _ in ranks) >= 40
  assert sum(0 < rb < n for _, rb, n in ranks) >= 50
  assert sum(rs + rb < n for rs, rb, n in ranks) >= 20   # K_S + K_b singular


def test_empty_set_bounds_are_exact():
  """K_S = 0: the bounds on lambda_min, lambda_max, kappa collapse to K_b's."""
  rng = np.random.default_rng(0)
  k_b = _psd(rng, 6, 6)
  eigs_b = np.linalg.eigvalsh(k_b)
  ext = bounds.extreme_bounds(0.0, 0.0, eigs_b[0], eigs_b[-1], ridge=0.5)
  assert ext["lambda_min_lower"] == ext["lambda_min_upper"] == eigs_b[0] + 0.5
  assert ext["lambda_max_lower"] == ext["lambda_max_upper"] == eigs_b[-1] + 0.5
  lo, hi = bounds.kappa_bounds(0.0, 0.0, eigs_b[0], eigs_b[-1], ridge=0.5)
  assert lo == pytest.approx((eigs_b[-1] + .5) / (eigs_b[0] + .5), rel=1e-15)
  assert hi == pytest.approx(lo, rel=1e-15)


def test_bounds_are_attained():
  """Weyl is tight: each bound is reached by some commuting pair (hand values)."""
  # B = cI shifts every eigenvalue: lower == upper == exact.
  a = np.diag([0.0, 1.0, 5.0])
  lower, upper = bounds.weyl_bounds(np.linalg.eigvalsh(a), 2.0, 2.0)
  np.testing.assert_array_equal(lower, [2.0, 3.0, 7.0])
  np.testing.assert_array_equal(upper, lower)
  # lambda_min(A + B) = 1 = min(a_1 + b_n, a_n + b_1), not a_1 + b_1 = 0.
  ext = bounds.extreme_bounds(0.0, 1.0, 0.0, 1.0)
  assert ext["lambda_min_upper"] == 1.0 and ext["lambda_min_lower"] == 0.0
  exact = np.linalg.eigvalsh(np.diag([0.0, 1.0]) + np.diag([1.0, 0.0]))
  assert exact[0] == 1.0 and exact[-1] == 1.0
  # ... and lambda_max(A + B) = 1 reaches its lower bound max(a_n + b_1, a_1 + b_n).
  assert ext["lambda_max_lower"] == 1.0 and ext["lambda_max_upper"] == 2.0
  # Aligned: diag(0, 1) + diag(0, 1) reaches the upper bound 2 and kappa = inf.
  lo, hi = bounds.kappa_bounds(0.0, 1.0, 0.0, 1.0)
  assert lo == 1.0 and hi == math.inf
  # kappa upper bound reached: diag(1, 3) + diag(1, 3) -> kappa 3 = (3+3)/(1+1).
  lo, hi = bounds.kappa_bounds(1.0, 3.0, 1.0, 3.0)
  assert hi == 3.0 and lo == 1.0
  assert _exact_kappa(np.linalg.eigvalsh(np.diag([2.0, 6.0]))) == 3.0
  # kappa lower bound reached: diag(1, 3) + diag(3, 1) = 4I -> kappa 1.
  lo, _ = bounds.kappa_bounds(1.0, 3.0, 1.0, 3.0, ridge=0.0)
  assert lo == 1.0


def test_kappa_lower_bound_is_informative():
  """A dominant block: kappa >= (b_n + s_1) / (s_n + b_1) > 1, and it holds."""
  rng = np.random.default_rng(5)
  k_s = np.eye(4) * 0.1
  k_b = _psd(rng, 4, 1, scale=10.0)          # rank one, huge
  report = bounds.check_bounds(k_s, k_b)
  assert report["kappa_lower"] > 100
  assert report["kappa_lower"] <= report["kappa"] <= report["kappa_upper"]
  assert report["violations"] == 0


def test_check_bounds_detects_a_wrong_bound(monkeypatch):
  """The checker is not vacuous: a deliberately wrong bound is reported."""
  real = bounds.extreme_bounds

  def wrong(*args, **kwargs):     # claim lambda_max(A + B) >= a_n + b_n
    out = dict(real(*args, **kwargs))
    out["lambda_max_lower"] = out["lambda_max_upper"] + 1.0
    return out

  monkeypatch.setattr(bounds, "extreme_bounds", wrong)
  rng = np.random.default_rng(3)
  report = bounds.check_bounds(_psd(rng, 5, 5), _psd(rng, 5, 5))
  assert "lambda_max_lower" in report["violated"]
  assert report["violations"] >= 1


@pytest.mark.parametrize("call, match", [
    (lambda: bounds.weyl_bounds([2.0, 1.0], 0.0, 1.0), "ascending"),
    (lambda: bounds.weyl_bounds([1.0, 2.0], 1.0, 0.0), "eig_min_b"),
    (lambda: bounds.weyl_bounds([], 0.0, 1.0), "non-empty"),
    (lambda: bounds.check_bounds(np.eye(3), np.eye(4)), "shape"),
    (lambda: bounds.check_bounds(np.eye(3), np.eye(3), ridge=-1.0), "ridge"),
    (lambda: bounds.check_bounds(np.triu(np.ones((3, 3))), np.eye(3)),
     "symmetric"),
    (lambda: bounds.check_bounds(np.ones(3), np.eye(3)), "square"),
    (lambda: bounds.kappa_bounds(0.0, 1.0, 0.0, 1.0, slack=-1.0), "slack"),
])
def test_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------------- real MiniLM kernels


@pytest.fixture(scope="module")
def minilm_blocks():
  """Per-block NTKs of MiniLM at θ0 (LoRA q, v on layers 3-5), n=10, ~10 s."""
  from configs import select_layers
  from ntkft import ntk, theta0
  from ntkft.theta0 import kernels as theta0_kernels
  config = select_layers.get_config("runlocal")
  config.n = 10
  config.peft.layers = "3,4,5"       # the config field is a string ("all")
  config.peft.init = "gaussian"       # A and B both active
  start = theta0.build_theta0(config)
  trainable, frozen, apply = start.trainable, start.frozen, start.apply
  x = theta0_kernels.kernel_sample(config, start).inputs()
  blocks = ntk.per_block_ntk_fn(apply, "layer_projection")(x, None, trainable,
                                                           frozen)
  return {k: np.asarray(v, np.float64) for k, v in blocks.items()}


def test_bounds_hold_on_minilm_kernels(minilm_blocks):
  names = sorted(minilm_blocks)
  assert names == [f"layer_{i}/{p}" for i in (3, 4, 5) for p in ("query", "value")]
  checks = 0
  for size in range(0, len(names)):
    for subset in itertools.combinations(names, size):
      k_s = sum((minilm_blocks[b] for b in subset), np.zeros((10, 10)))
      for b in names:
        if b in subset:
          continue
        for ridge in (0.0, 1e-3):
          report = bounds.check_bounds(k_s, minilm_blocks[b], ridge)
          assert report["violations"] == 0, (subset, b, report["violated"])
          assert math.isfinite(report["kappa"])   # real blocks are full rank
          checks += report["checks"]
  # sum_s C(6, s) (6 - s) = 6 * 2^5 (S, b) pairs x 2 ridges x (2n + 6) checks
  assert checks == 6 * 2**5 * 2 * (2 * 10 + 6)


def test_selection_on_minilm_kernels(minilm_blocks):
  """Pruned greedy == unpruned on the real kernels, no bound violated."""
  from ntkft.select import selection
  for criterion in ("min_kappa", "max_lambda_min"):
    for k in (1, 2, 3):
      plain = selection.exhaustive_select(minilm_blocks, criterion, k, ridge=1e-4)
      assert plain.exact_evaluations == math.comb(len(minilm_blocks), k)
      greedy = selection.greedy_select(minilm_blocks, criterion, k, ridge=1e-4)
      unpruned = selection.greedy_select(minilm_blocks, criterion, k, ridge=1e-4,
                                         prune=False)
      assert greedy.selected == unpruned.selected and greedy.value == unpruned.value
      assert greedy.exact_evaluations <= unpruned.exact_evaluations
      assert greedy.bound_violations == 0
      slack = 1e-12 * plain.value      # greedy may sum the same set in another order
      if criterion == "min_kappa":
        assert plain.value <= greedy.value + slack
      else:
        assert plain.value >= greedy.value - slack
      if k == 1:
        assert greedy.selected == plain.selected
