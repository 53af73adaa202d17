"""`experiments.perturbation_bounds`: Weyl bounds hold step by step, end to end on a tiny BERT."""
import itertools
import json
import math

import numpy as np
import pytest

from experiments import perturbation_bounds
from ntkft import select

NUM_LAYERS = 3


@pytest.fixture
def run_once(perturbation_bounds_run):
  """The session's run (tests/experiments/conftest.py): 3 layers, n = 6, order "2,0,1"."""
  return perturbation_bounds_run


def check_steps(steps, kernels, order, ridge):
  """Every stored bound against an independent float64 eigendecomposition."""
  n = next(iter(kernels.values())).shape[0]
  k_s = np.zeros((n, n))
  for t, (step, b) in enumerate(zip(steps, order)):
    before = np.linalg.eigvalsh(k_s) + ridge
    k_s = k_s + kernels[b]
    exact = np.linalg.eigvalsh(k_s) + ridge
    scale = np.abs(exact).max()
    eigs_b = np.linalg.eigvalsh(kernels[b])
    assert step["added"] == b and step["blocks"] == list(order[:t + 1])
    np.testing.assert_allclose(step["eigs"], exact, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(step["eigs_before"], before, rtol=0, atol=1e-10 * scale)
    lower, upper = np.asarray(step["weyl_lower"]), np.asarray(step["weyl_upper"])
    # The bounds are a_k + b_1 and a_k + b_n (ridge included once, through a_k) ...
    np.testing.assert_allclose(lower, before + eigs_b[0], atol=1e-10 * scale)
    np.testing.assert_allclose(upper, before + eigs_b[-1], atol=1e-10 * scale)
    # ... and they hold: lower <= exact <= upper for every eigenvalue.
    slack = 1e-9 * scale
    assert np.all(lower <= exact + slack) and np.all(exact <= upper + slack)
    for key in ("lambda_min", "lambda_max"):
      assert step[f"{key}_lower"] - slack <= step[key] <= step[f"{key}_upper"] + slack
    kappa = exact[-1] / exact[0]
    assert np.isclose(step["kappa"], kappa, rtol=1e-10)
    assert step["kappa_lower"] <= kappa <= step["kappa_upper"]
    assert step["checks"] == 2 * n + 6 and step["violations"] == 0, step["violated"]
  return k_s


def test_run_bounds_hold_and_match_exact(run_once):
  config, workdir, returned = run_once
  results = json.loads((workdir / "results.json").read_text())
  assert results == returned
  assert results["order"] == ["layer_2", "layer_0", "layer_1"]
  saved = np.load(workdir / "block_kernels.npz")
  kernels = {b: saved[f"block/{b}"] for b in results["blocks"]}
  k_all = check_steps(results["steps"], kernels, results["order"], config.ridge)
  assert results["total_checks"] == NUM_LAYERS * (2 * config.n + 6)
  assert results["total_violations"] == 0
  first = results["steps"][0]
  # From K = 0 the bounds are exact: every c_k lies in [b_1, b_n], c_1 = b_1, c_n = b_n.
  assert first["lambda_min_lower"] == first["lambda_min_upper"] == first["lambda_min"]
  assert first["lambda_max_lower"] == first["lambda_max_upper"] == first["lambda_max"]
  assert np.isclose(first["kappa_lower"], first["kappa"]) and np.isclose(
      first["kappa_upper"], first["kappa"])
  # Later steps: a genuine interval (the upper κ bound is strictly looser than exact).
  assert all(s["kappa_upper"] > s["kappa"] * (1 + 1e-9) for s in results["steps"][1:])
  assert [s["num_params"] for s in results["steps"]] == [512, 1024, 1536]
  assert np.isclose(np.trace(k_all), sum(v["trace"] for v in results["blocks"].values()))
  # Search costs: exhaustive = C(3, k) eigendecompositions and the brute-force
  # optimum; pruned greedy never costs more than unpruned greedy.
  costs = {(r["k"], r["search"], r["prune"]): r for r in results["search_costs"]}
  for k in (2, 3):
    ex = costs[k, "exhaustive", False]
    assert ex["exact_evaluations"] == ex["subsets"] == math.comb(NUM_LAYERS, k)
    best = min(itertools.combinations(kernels, k), key=lambda s: select.criterion_value(
        sum(kernels[b] for b in s), "min_kappa", ridge=config.ridge))
    assert ex["selected"] == list(best)
    pruned, plain = costs[k, "greedy", True], costs[k, "greedy", False]
    assert pruned["exact_evaluations"] + pruned["pruned"] == plain["exact_evaluations"]
    assert pruned["selected"] == plain["selected"]
  for name in ("perturbation_bounds_bands.png", "perturbation_bounds_kappa.png"):
    png = workdir / name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_orders_and_ridge_on_stored_kernels(run_once):
  _, workdir, results = run_once
  saved = np.load(workdir / "block_kernels.npz")
  kernels = {b: saved[f"block/{b}"] for b in results["blocks"]}
  names = list(kernels)
  assert perturbation_bounds.resolve_order("sequential", kernels) == names
  greedy = select.greedy_select(kernels, "min_kappa", k=len(names)).selected
  assert perturbation_bounds.resolve_order("greedy", kernels) == list(greedy)
  assert sorted(greedy) == sorted(names)
  assert perturbation_bounds.resolve_order(" 1, layer_0", kernels) == ["layer_1", "layer_0"]
  for bad, match in (("7", "unknown block"), ("0,0", "twice"), ("", "comma-separated"),
                     ("random", "unknown block")):
    with pytest.raises(ValueError, match=match):
      perturbation_bounds.resolve_order(bad, kernels)
  ridge = 0.01
  order = perturbation_bounds.resolve_order("greedy", kernels, ridge)
  steps = perturbation_bounds.bound_steps(kernels, order, ridge=ridge)
  check_steps(steps, kernels, order, ridge)


def test_random_psd_blocks_including_rank_deficient():
  rng = np.random.default_rng(0)
  n = 12
  kernels = {}
  for i, rank in enumerate((12, 3, 1, 12, 5)):   # low-rank blocks: b_1 = 0
    j = rng.normal(size=(n, rank)) * rng.uniform(0.1, 10.0)
    kernels[f"layer_{i}"] = j @ j.T
  order = list(kernels)
  steps = perturbation_bounds.bound_steps(kernels, order)
  check_steps(steps, kernels, order, 0.0)
  rank_one = steps[2]
  # A rank-one block moves the spectrum by at most b_n and interlaces: c_k <= a_{k+1}.
  assert rank_one["block_lambda_min"] == pytest.approx(0.0, abs=1e-9 * rank_one["lambda_max"])
  assert np.all(np.asarray(rank_one["eigs"])[:-1] <=
                np.asarray(rank_one["eigs_before"])[1:] + 1e-9 * rank_one["lambda_max"])
