"""Greedy / exhaustive block selection: hand-made kernels, brute force, pruning."""
import itertools
import json
import math

import numpy as np
import pytest

from ntkft import spectral
from ntkft.select import selection

# Hand-made diagonal blocks (n = 3): spectra of sums are read off the diagonal.
DIAG = {
    "layer_0": np.diag([4.0, 1.0, 0.0]),
    "layer_1": np.diag([0.0, 1.0, 2.0]),
    "layer_2": np.diag([0.5, 0.5, 0.5]),
    "layer_3": np.diag([0.0, 0.0, 3.0]),
}


def _psd(rng, n, rank, scale):
  g = rng.normal(size=(n, rank)) * scale * np.logspace(0, -1.5, rank)
  return g @ g.T


def _random_blocks(seed, m=None, n=None):
  rng = np.random.default_rng(seed)
  m = m or int(rng.integers(3, 8))
  n = n or int(rng.integers(2, 9))
  blocks = {}
  for i in range(m):
    rank = int(rng.integers(1, n + 1))
    blocks[f"layer_{i}"] = _psd(rng, n, rank, 10.0 ** rng.uniform(-1, 1))
  targets = rng.normal(size=(n, 2))
  counts = {name: int(rng.integers(1, 10)) for name in blocks}
  return blocks, targets, counts


def _brute_force(blocks, criterion, k, targets=None, ridge=0.0, counts=None,
                 budget=None):
  """Best subset by plain enumeration with criterion_value (tie: first)."""
  names = list(blocks)
  best = None
  sizes = [k] if k else range(1, len(names) + 1)
  for size in sizes:
    for subset in itertools.combinations(names, size):
      if budget is not None and sum(counts[b] for b in subset) > budget:
        continue
      value = selection.criterion_value(sum(blocks[b] for b in subset),
                                        criterion, targets, ridge)
      score = value if criterion == "min_kappa" else -value
      if best is None or score < best[0]:
        best = (score, subset, value)
  return best[1], best[2]


# ------------------------------------------------------------ criteria


def test_criteria_on_diagonal_kernels():
  k = DIAG["layer_0"] + DIAG["layer_1"]                 # diag(4, 2, 2)
  assert selection.criterion_value(k, "min_kappa") == 2.0
  assert selection.criterion_value(k, "min_kappa", ridge=1.0) == 5.0 / 3.0
  assert selection.criterion_value(k, "max_lambda_min") == 2.0
  assert selection.criterion_value(k, "max_lambda_min", ridge=0.5) == 2.5
  y = np.array([1.0, 0.0, 0.0])
  assert selection.criterion_value(k, "max_alignment", y) == pytest.approx(
      4.0 / math.sqrt(24.0), rel=1e-15)
  y2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])   # sum over columns
  assert spectral.kernel_target_alignment(k, y2) == pytest.approx(
      (4.0 + 2.0) / (math.sqrt(24.0) * 2.0), rel=1e-15)
  # The ridge does not enter the alignment; a singular kernel has kappa inf.
  assert selection.criterion_value(DIAG["layer_0"], "min_kappa") == math.inf


def test_greedy_on_diagonal_kernels_by_hand():
  # Pairs: 0+1 = diag(4,2,2) kappa 2; 0+2 = (4.5,1.5,.5) 9; 0+3 = (4,1,3) 4;
  # 1+2 = (.5,1.5,2.5) 5; 1+3 = (0,1,5) inf; 2+3 = (.5,.5,3.5) 7.
  sel = selection.exhaustive_select(DIAG, "min_kappa", 2)
  assert sel.selected == ("layer_0", "layer_1") and sel.value == 2.0
  # Only layer_2 is nonsingular alone (kappa 1): greedy starts there and then
  # adds layer_1 (kappa 5), missing the optimum {0, 1} -- greedy is not exact.
  greedy = selection.greedy_select(DIAG, "min_kappa", 2)
  assert greedy.selected == ("layer_2", "layer_1") and greedy.value == 5.0
  # Step 1 evaluates every block (its spectrum is what the bounds need); at
  # step 2 each of the 3 other blocks is evaluated or pruned.
  assert greedy.trace[0]["added"] == "layer_2"
  assert not any(c["pruned"] for c in greedy.trace[0]["candidates"])
  assert greedy.exact_evaluations + greedy.pruned == 4 + 3
  lam = selection.greedy_select(DIAG, "max_lambda_min", 2)
  # Step 2 ties at lambda_min 0.5 for every block: the first in order wins.
  assert lam.selected == ("layer_2", "layer_0") and lam.value == 0.5
  assert selection.exhaustive_select(DIAG, "max_lambda_min", 2).value == 2.0
  y = np.array([0.0, 0.0, 1.0])
  al = selection.greedy_select(DIAG, "max_alignment", 1, targets=y)
  # alignment of a single diagonal block to e_3: d_3 / |d|
  assert al.selected == ("layer_3",) and al.value == 1.0
  assert al.bound_checks == 0 and al.pruned == 0


def test_residual_targets():
  rng = np.random.default_rng(0)
  y, f0 = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
  a = selection.greedy_select(DIAG, "max_alignment", 2, targets=y, fx0=f0)
  b = selection.greedy_select(DIAG, "max_alignment", 2, targets=y - f0)
  assert a.selected == b.selected and a.value == b.value
  assert a.value == pytest.approx(spectral.kernel_target_alignment(
      sum(DIAG[n] for n in a.selected), y - f0), rel=1e-14)


# --------------------------------------------- searches vs brute force


@pytest.mark.parametrize("criterion", selection.CRITERIA)
def test_greedy_equals_exhaustive_for_k1(criterion):
  for seed in range(15):
    blocks, targets, _ = _random_blocks(seed)
    greedy = selection.greedy_select(blocks, criterion, 1, targets=targets,
                                     ridge=0.01)
    exhaustive = selection.exhaustive_select(blocks, criterion, 1,
                                             targets=targets, ridge=0.01)
    assert greedy.selected == exhaustive.selected, seed
    assert greedy.value == exhaustive.value


@pytest.mark.parametrize("criterion", selection.CRITERIA)
def test_exhaustive_matches_brute_force(criterion):
  for seed in range(12):
    blocks, targets, _ = _random_blocks(seed)
    k = 1 + seed % min(3, len(blocks))
    sel = selection.exhaustive_select(blocks, criterion, k, targets=targets,
                                      ridge=0.001)
    subset, value = _brute_force(blocks, criterion, k, targets, 0.001)
    assert sel.selected == subset, seed
    assert sel.value == pytest.approx(value, rel=1e-12)
    assert sel.bound_violations == 0
    greedy = selection.greedy_select(blocks, criterion, k, targets=targets,
                                     ridge=0.001)
    # Greedy is never better (up to summation-order rounding: it may find the
    # same set, added in another order).
    slack = 1e-12 * abs(sel.value)
    worse = greedy.value >= sel.value - slack if criterion == "min_kappa" else (
        greedy.value <= sel.value + slack)
    assert worse, seed


def test_greedy_pruning_never_changes_the_result_nor_costs_more():
  totals = {"pruned": 0, "checks": 0}
  for seed in range(40):
    blocks, targets, _ = _random_blocks(100 + seed)
    criterion = selection.CRITERIA[seed % 3]
    k = [1, 2, 3, None][seed % 4]
    if k is not None and k > len(blocks):
      k = len(blocks)
    ridge = [0.0, 0.1][seed % 2]
    kw = dict(targets=targets, ridge=ridge)
    on = selection.greedy_select(blocks, criterion, k, **kw)
    off = selection.greedy_select(blocks, criterion, k, prune=False, **kw)
    assert on.selected == off.selected, (seed, criterion, k)
    assert on.value == off.value or (math.isinf(on.value) and
                                     math.isinf(off.value))
    assert off.pruned == 0
    assert on.bound_violations == 0 and off.bound_violations == 0
    # Every candidate of every step is either evaluated or pruned, and the
    # single-block spectra the bounds need are step 1's evaluations.
    assert on.exact_evaluations + on.pruned == off.exact_evaluations
    totals["pruned"] += on.pruned
    totals["checks"] += on.bound_checks
  assert totals["pruned"] > 20          # pruning actually happens
  assert totals["checks"] > 100


def _count_eigh(monkeypatch):
  """Counts every np.linalg.eigvalsh call (the search's eigendecompositions)."""
  calls = []
  eigvalsh = np.linalg.eigvalsh
  monkeypatch.setattr(np.linalg, "eigvalsh",
                      lambda a: calls.append(1) or eigvalsh(a))
  return calls


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exhaustive_costs_at_most_enumeration(monkeypatch, k):
  """One eigendecomposition per size-k subset, counted at np.linalg, and the
  brute-force optimum (issue: pruning used to cost 19 vs 15 at k=2 of 6)."""
  calls = _count_eigh(monkeypatch)
  blocks, _, _ = _random_blocks(7, m=8, n=6)
  sel = selection.exhaustive_select(blocks, "min_kappa", k, ridge=1e-3)
  assert len(calls) == sel.exact_evaluations <= math.comb(8, k)
  assert sel.exact_evaluations == math.comb(8, k)
  subset, value = _brute_force(blocks, "min_kappa", k, ridge=1e-3)
  assert sel.selected == subset and sel.value == pytest.approx(value, rel=1e-12)


def test_greedy_counts_every_eigendecomposition(monkeypatch):
  calls = _count_eigh(monkeypatch)
  blocks, _, _ = _random_blocks(7, m=8, n=6)
  sel = selection.greedy_select(blocks, "min_kappa", 3, ridge=1e-3)
  assert len(calls) == sel.exact_evaluations
  assert sel.exact_evaluations + sel.pruned == 8 + 7 + 6


def test_greedy_k_none_returns_best_prefix():
  sel = selection.greedy_select(DIAG, "min_kappa", None)
  path = [t["value"] for t in sel.trace]
  assert len(path) == len(DIAG)           # went all the way
  best = min(range(len(path)), key=lambda i: (path[i], i))
  assert sel.value == path[best]
  assert sel.selected == tuple(t["added"] for t in sel.trace[:best + 1])


# ------------------------------------------------------ parameter budget


@pytest.mark.parametrize("criterion", ["min_kappa", "max_lambda_min"])
def test_parameter_budget_respected(criterion):
  for seed in range(10):
    blocks, targets, counts = _random_blocks(200 + seed)
    budget = int(np.median(list(counts.values()))) * 2
    ex = selection.exhaustive_select(blocks, criterion, None, param_counts=counts,
                                     param_budget=budget, ridge=0.01)
    assert ex.num_params <= budget
    assert ex.num_params == sum(counts[b] for b in ex.selected)
    subset, value = _brute_force(blocks, criterion, None, None, 0.01, counts,
                                 budget)
    assert ex.selected == subset and ex.value == pytest.approx(value, rel=1e-12)
    gr = selection.greedy_select(blocks, criterion, len(blocks),
                                 param_counts=counts, param_budget=budget,
                                 ridge=0.01)
    assert gr.num_params <= budget
    if len(gr.selected) < len(blocks):
      assert "parameter budget" in gr.stopped
      # stopped because nothing else fits
      left = [b for b in blocks if b not in gr.selected]
      assert all(gr.num_params + counts[b] > budget for b in left)


def test_budget_with_fixed_k():
  counts = {"layer_0": 5, "layer_1": 5, "layer_2": 1, "layer_3": 1}
  sel = selection.exhaustive_select(DIAG, "min_kappa", 2, param_counts=counts,
                                    param_budget=6)
  # {0, 1} (kappa 2) costs 10 > 6; best affordable pair: 0+3 (kappa 4), cost 6.
  assert sel.selected == ("layer_0", "layer_3") and sel.value == 4.0
  with pytest.raises(ValueError, match="fits param_budget"):
    selection.exhaustive_select(DIAG, "min_kappa", 3, param_counts=counts,
                                param_budget=6)


# ------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=5), "exceeds the number of candidate blocks"),
    (dict(k=0), "positive int"),
    (dict(criterion="max_kappa"), "unknown criterion"),
    (dict(criterion="max_alignment"), "needs targets"),
    (dict(targets=np.ones(4)), "targets must have shape"),
    (dict(targets=np.ones(3), fx0=np.ones((3, 2))), "fx0 has shape"),
    (dict(param_budget=10), "needs param_counts"),
    (dict(param_counts={"layer_0": 1}), "misses block"),
    (dict(ridge=-1.0), "ridge"),
])
@pytest.mark.parametrize("search", selection.SEARCHES)
def test_bad_inputs(search, kwargs, match):
  kwargs = {"criterion": "min_kappa", "k": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    selection.select(DIAG, search, **kwargs)


def test_bad_kernels():
  with pytest.raises(ValueError, match="has shape"):
    selection.greedy_select({"a": np.eye(3), "b": np.eye(4)}, k=1)
  with pytest.raises(ValueError, match="square"):
    selection.greedy_select({"a": np.ones((3, 2))}, k=1)
  with pytest.raises(ValueError, match="symmetric"):
    selection.greedy_select({"a": np.triu(np.ones((3, 3)))}, k=1)
  with pytest.raises(ValueError, match="non-empty"):
    selection.greedy_select({}, k=1)
  with pytest.raises(ValueError, match="unknown search"):
    selection.select(DIAG, "beam", k=1)
  with pytest.raises(ValueError, match="max_subsets"):
    selection.exhaustive_select(DIAG, k=2, max_subsets=5)
  with pytest.raises(ValueError, match="smaller than every block"):
    selection.greedy_select(DIAG, k=1, param_counts=dict.fromkeys(DIAG, 5),
                            param_budget=4)


def test_selection_json_and_fragment():
  blocks = {"layer_1/query": DIAG["layer_0"], "layer_1/value": DIAG["layer_1"],
            "layer_2/query": DIAG["layer_2"], "layer_2/value": DIAG["layer_3"]}
  sel = selection.exhaustive_select(blocks, "max_lambda_min", 2)
  # diag(4,1,0) + diag(0,1,2) = diag(4,2,2): lambda_min 2 -> layer 1, q and v.
  assert sel.selected == ("layer_1/query", "layer_1/value") and sel.value == 2.0
  assert sel.as_peft_config() == {"layers": (1,), "targets": ("query", "value")}
  out = json.loads(json.dumps(sel.to_json()))
  assert out["selected"] == ["layer_1/query", "layer_1/value"]
  assert out["peft_fragment"] == {"layers": [1], "targets": ["query", "value"]}
  assert out["peft_flags"] == sel.as_flags() == (
      "--config.peft.layers='(1,)' --config.peft.targets=\"('query','value')\"")
  assert out["bound_violations"] == 0 and out["exact_evaluations"] == 6
  kappa = selection.greedy_select(blocks, "min_kappa", 1, ridge=0.0)
  # inf kappas (singular single blocks) are null in JSON (records.jsonable)
  out = json.loads(json.dumps(kappa.to_json(), allow_nan=False))
  values = [c["value"] for c in out["trace"][0]["candidates"]]
  assert None in values and out["value"] == 1.0


def test_block_stats():
  stats = selection.block_stats(DIAG, targets=np.array([0.0, 0.0, 1.0]),
                                ridge=1.0, param_counts=dict.fromkeys(DIAG, 7))
  assert stats["layer_0"]["lambda_min"] == 1.0
  assert stats["layer_0"]["lambda_max"] == 5.0
  assert stats["layer_0"]["kappa"] == 5.0
  assert stats["layer_3"]["alignment"] == 1.0
  assert stats["layer_1"]["trace"] == 3.0 and stats["layer_1"]["num_params"] == 7
