"""Which parameter blocks to fine-tune: NTK-spectral selection, Weyl pruning.

Fine-tuning a set S of parameter blocks (layers, or layer x projection) in the
linearized regime is kernel regression with ``K_S = sum_{b in S} K_b``
(:func:`ntkft.ntk.per_block_ntk_fn`). Given the per-block kernels at θ0 we pick
S (``|S| <= k`` blocks and/or ``sum_b params(b) <= param_budget``) to optimize

* ``"min_kappa"``: minimize kappa(K_S + ridge I) = lambda_max / lambda_min
  (conditioning of gradient flow / the ridge solve; inf if lambda_min <= 0);
* ``"max_lambda_min"``: maximize lambda_min(K_S + ridge I) (the slowest
  eigen-direction's convergence rate);
* ``"max_alignment"``: maximize the kernel-target alignment
  ``A(K_S, Y) = tr(Y^T K_S Y) / (|K_S|_F |Y|_F^2)`` (Cristianini et al. 2002),
  ``Y`` the (n, C) targets, or the residuals ``Y - f(θ0)`` when outputs at θ0
  are given; for one column this is ``y^T K y / (|K|_F |y|^2)``, for several
  the numerator and ``|Y|_F^2`` sum over columns. The ridge does not enter.

Searches: :func:`greedy_select` (add the best block k times) and
:func:`exhaustive_select` (every subset of size k: a plain enumeration, exactly
``C(m, k)`` exact evaluations for m candidate blocks). The greedy search prunes
with the Weyl bounds of :mod:`ntkft.select.bounds`: before the exact
eigendecomposition of ``K_P + K_b`` (P the current set), the bounds built from
the eigenvalues of K_P and the extreme eigenvalues of K_b give an *optimistic*
value; a candidate whose optimistic value is strictly worse than the best exact
value of the step is skipped. The bounds are widened by a rounding slack and
ties are broken by block order, so pruning never changes the result (tested
against ``prune=False``), and it never costs more eigendecompositions: the
single-block spectra the bounds need are the first step's exact values. Every
bound used is verified against the exact value whenever that value is
computed: ``bound_checks`` counts the inequalities checked,
``bound_violations`` the failures (always 0 unless the theory or the code is
wrong). The alignment is not spectral and costs O(n^2 C) exactly, so it is
never pruned and checks no bounds.

Why the exhaustive search does not prune: a bound on a whole subtree needs the
spectrum of its prefix P, an eigendecomposition of a set that is not itself a
candidate, and the optimistic side of the bounds (upper bound on lambda_min,
lower bound on kappa) is loose by orders of magnitude on real kernels (README
section 3). Branch and bound then ran more eigendecompositions than the
enumeration (19 vs 15 at k=2, 34 vs 20 at k=3 of 6 MiniLM layers).

Example::

  kernels = {"layer_4": k4, "layer_5": k5, "layer_3": k3}   # (n, n) each
  sel = greedy_select(kernels, "min_kappa", k=2, ridge=1e-3)
  sel.selected, sel.value, sel.pruned, sel.bound_violations
  sel.as_peft_config()   # {"layers": (4, 5)}
  sel.as_flags()         # "--config.peft.layers='(4,5)'"
"""
import dataclasses
import itertools
import math
from typing import Any, Mapping, Optional

import numpy as np

from ntkft import records
from ntkft.peft.fragment import peft_flags, peft_fragment
from ntkft.select import bounds as bounds_lib
from ntkft.select.criteria import (
  CRITERIA,
  SPECTRAL,
  Problem,
  block_stats,
  criterion_value,
  loss_and_eigs,
  prepare,
)

SEARCHES = ("greedy", "exhaustive")
# Exhaustive search refuses more subsets than this unless told otherwise.
MAX_SUBSETS = 200_000

# ------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class Selection:
  """A selected set of parameter blocks.

  Attributes:
    selected: block names, in the order they were added (greedy) or in
      block order (exhaustive).
    criterion: one of ``CRITERIA``.
    value: the criterion of the selected set: kappa, lambda_min (ridge
      included) or the alignment.
    search: ``"greedy"`` or ``"exhaustive"``.
    ridge: the ridge used.
    num_params: total parameters of the selection (None without counts).
    trace: per greedy step (candidates with bounds, exact values, pruned
      flags, the chosen block), or the exhaustive search's improvements.
    bound_checks: inequalities between a bound and an exact value checked.
    bound_violations: how many of them failed (0 expected).
    pruned: candidate blocks whose exact evaluation the bounds skipped
      (greedy; 0 for the exhaustive search).
    exact_evaluations: exact criterion evaluations performed: for the
      spectral criteria every (n, n) eigendecomposition, including the
      single-block spectra the bounds need; for the exhaustive search the
      number of subsets that fit (``C(m, k)`` without a parameter budget).
    stopped: why the search stopped early (e.g. the parameter budget), or "".
  """
  selected: tuple[str, ...]
  criterion: str
  value: float
  search: str
  ridge: float
  num_params: Optional[int]
  trace: tuple[dict, ...]
  bound_checks: int
  bound_violations: int
  pruned: int
  exact_evaluations: int
  stopped: str = ""

  def as_peft_config(self) -> dict:
    """The selection as a ``config.peft`` fragment (:func:`peft_fragment`)."""
    return peft_fragment(self.selected)

  def as_flags(self) -> str:
    """Command-line overrides, e.g. ``--config.peft.layers='(4,5)'``."""
    return peft_flags(self.as_peft_config())

  def to_json(self) -> dict:
    """JSON-serializable dict (:func:`ntkft.records.jsonable`: inf -> null)."""
    out = dataclasses.asdict(self)
    out["peft_fragment"] = self.as_peft_config()
    out["peft_flags"] = self.as_flags()
    return records.jsonable(out)


class _Search:
  """Bookkeeping shared by the searches: exact evaluations, bound checks.

  Every exact evaluation goes through :meth:`evaluate`, which counts it; the
  spectrum of a single block is computed once and reused (the bounds need its
  extremes, the first greedy step its criterion value).
  """

  def __init__(self, prob: Problem, search: str):
    self.prob = prob
    self.search = search
    self.evaluations = 0
    self.pruned = 0
    self.checks = 0
    self.violations = 0
    self.failed: list[str] = []
    self.trace: list[dict] = []
    self._singles: dict[int, tuple] = {}

  def evaluate(self, idx: tuple[int, ...], k_sum: np.ndarray):
    """(loss, value, eigs or None) of the set ``idx`` with kernel ``k_sum``."""
    if len(idx) == 1 and idx[0] in self._singles:
      return self._singles[idx[0]]
    out = loss_and_eigs(self.prob, k_sum)
    self.evaluations += 1
    if len(idx) == 1:
      self._singles[idx[0]] = out
    return out

  def block_extremes(self, b: int) -> tuple[float, float]:
    """(lambda_min, lambda_max) of K_b (no ridge), from its cached spectrum."""
    eigs = self.evaluate((b,), self.prob.kernels[b])[2]
    return float(eigs[0]), float(eigs[-1])

  def check(self, ok: bool, what: str):
    self.checks += 1
    if not ok:
      self.violations += 1
      if len(self.failed) < 20:
        self.failed.append(what)

  def check_step(self, eigs_p, b: int, eigs_new, where: str):
    """Single-step Weyl bounds (every eigenvalue, extremes, kappa) of P + b."""
    prob = self.prob
    b1, bn = self.block_extremes(b)
    slack = prob.rtol * (float(np.max(np.abs(eigs_p))) + max(abs(b1), abs(bn))
                         + prob.ridge)
    lower, upper = bounds_lib.weyl_bounds(eigs_p, b1, bn)
    self.check(bool(np.all(eigs_new >= lower - slack)), f"{where}: weyl lower")
    self.check(bool(np.all(eigs_new <= upper + slack)), f"{where}: weyl upper")
    ext = bounds_lib.extreme_bounds(eigs_p[0], eigs_p[-1], b1, bn, prob.ridge)
    lam_min = float(eigs_new[0]) + prob.ridge
    lam_max = float(eigs_new[-1]) + prob.ridge
    self.check(lam_min >= ext["lambda_min_lower"] - slack, f"{where}: lmin lo")
    self.check(lam_min <= ext["lambda_min_upper"] + slack, f"{where}: lmin hi")
    self.check(lam_max >= ext["lambda_max_lower"] - slack, f"{where}: lmax lo")
    self.check(lam_max <= ext["lambda_max_upper"] + slack, f"{where}: lmax hi")
    kappa_lo, kappa_hi = bounds_lib.kappa_from_bounds(ext, slack)
    kappa = bounds_lib.condition_number(eigs_new + prob.ridge)
    self.check(kappa >= kappa_lo, f"{where}: kappa lo")
    self.check(kappa <= kappa_hi, f"{where}: kappa hi")

  def optimistic(self, eigs_p: np.ndarray, b: int) -> dict:
    """Bounds for P + b and the best-case loss they allow."""
    prob = self.prob
    b1, bn = self.block_extremes(b)
    a1, an = float(eigs_p[0]), float(eigs_p[-1])
    ext = bounds_lib.extreme_bounds(a1, an, b1, bn, prob.ridge)
    slack = prob.rtol * (max(abs(a1), abs(an)) + max(abs(b1), abs(bn)) +
                         prob.ridge)
    kappa_lo, kappa_hi = bounds_lib.kappa_from_bounds(ext, slack)
    if prob.criterion == "min_kappa":
      opt = kappa_lo
    else:
      opt = -(ext["lambda_min_upper"] + slack)
    return dict(ext, kappa_lower=kappa_lo, kappa_upper=kappa_hi, slack=slack,
                optimistic_loss=opt)

  def names(self, idx) -> tuple[str, ...]:
    return tuple(self.prob.names[i] for i in idx)

  def num_params(self, idx) -> Optional[int]:
    params = self.prob.params
    return None if params is None else int(sum(params[i] for i in idx))

  def result(self, idx, value: float, stopped: str = "") -> Selection:
    return Selection(
        selected=self.names(idx), criterion=self.prob.criterion, value=value,
        search=self.search, ridge=self.prob.ridge,
        num_params=self.num_params(idx), trace=tuple(self.trace),
        bound_checks=self.checks, bound_violations=self.violations,
        pruned=self.pruned, exact_evaluations=self.evaluations,
        stopped=stopped)


# -------------------------------------------------------------- searches


def greedy_select(kernels: Mapping[str, Any], criterion: str = "min_kappa",
                  k: Optional[int] = 2, *, targets: Any = None,
                  fx0: Any = None,
                  param_counts: Optional[Mapping[str, int]] = None,
                  param_budget: Optional[int] = None, ridge: float = 0.0,
                  prune: bool = True,
                  rtol: float = bounds_lib.DEFAULT_RTOL) -> Selection:
  """Greedy forward selection: k times, add the best block for the criterion.

  Each step evaluates ``K_S + K_b`` for the remaining blocks b that fit the
  parameter budget, in order of their optimistic (Weyl) value, skipping those
  whose optimistic value is already worse than the best exact one (pruning).
  The first step (S empty) evaluates every block that fits: its bounds are the
  blocks' own spectra. So ``exact_evaluations`` with pruning never exceeds
  the count without it.

  Args:
    kernels: {block name: (n, n) kernel K_b} (the order is the tie-break order).
    criterion: ``"min_kappa"``, ``"max_lambda_min"`` or ``"max_alignment"``.
    k: number of blocks to select; None: keep adding while a block fits the
      parameter budget and return the best prefix of that greedy path.
    targets: (n,) or (n, C) targets (needed for ``"max_alignment"``).
    fx0: outputs at θ0, same shape as targets: the alignment uses
      ``targets - fx0``.
    param_counts: {block: number of parameters}.
    param_budget: max total parameters (None: no limit).
    ridge: rho >= 0 added to the kernel's eigenvalues (spectral criteria).
    prune: use the bounds to skip candidates (False: evaluate all).
    rtol: rounding slack of the bounds, relative to the spectral scale.

  Returns:
    A :class:`Selection`; ``stopped`` is set if the parameter budget ended the
    search before k blocks.

  Raises:
    ValueError: unknown criterion, k < 1 or k > number of blocks, kernels of
      different shapes / not square / not symmetric, targets of the wrong
      shape, alignment without targets, budget without counts.
  """
  prob, k = prepare(kernels, criterion, k, targets, fx0, param_counts,
                    param_budget, ridge, rtol)
  n, m = prob.n, prob.m
  search = _Search(prob, "greedy")
  chosen: list[int] = []
  k_sum = np.zeros((n, n))
  eigs_p = np.zeros(n)          # K_empty = 0
  used = 0
  path = []
  stopped = ""
  for step in range(k if k is not None else m):
    cands = [b for b in range(m) if b not in chosen and
             (prob.param_budget is None or
              used + prob.params[b] <= prob.param_budget)]
    if not cands:
      stopped = ("parameter budget" if len(chosen) < m else
                 "no blocks left")
      break
    bounded = prune and chosen and prob.criterion in SPECTRAL
    rows = {b: search.optimistic(eigs_p, b) if bounded else
            {"optimistic_loss": -math.inf} for b in cands}
    order = (sorted(cands, key=lambda b: (rows[b]["optimistic_loss"], b))
             if bounded else cands)
    best = (math.inf, m)
    best_eval = None
    for b in order:
      row = rows[b]
      if bounded and row["optimistic_loss"] > best[0]:
        row["pruned"] = True
        search.pruned += 1
        continue
      k_new = k_sum + prob.kernels[b]
      loss, value, eigs_new = search.evaluate(tuple(chosen) + (b,), k_new)
      row.update(pruned=False, value=value)
      if eigs_new is not None and chosen:
        where = f"step {step} +{prob.names[b]}"
        search.check_step(eigs_p, b, eigs_new, where)
        if bounded:
          search.check(loss >= row["optimistic_loss"], f"{where}: optimistic")
      if (loss, b) < best:
        best = (loss, b)
        best_eval = (k_new, eigs_new, value)
    if best_eval is None:   # every candidate had loss nan: cannot happen
      raise RuntimeError("greedy_select: no candidate evaluated")
    b = best[1]
    chosen.append(b)
    k_sum, eigs_new, value = best_eval
    if eigs_new is not None:
      eigs_p = eigs_new
    if prob.params is not None:
      used += int(prob.params[b])
    path.append((best[0], len(chosen), value))
    search.trace.append({
        "step": step, "added": prob.names[b], "value": value,
        "selected": list(search.names(chosen)),
        "num_params": search.num_params(chosen),
        "candidates": [
            {"block": prob.names[c],
             **{key: rows[c][key] for key in (
                 "optimistic_loss", "lambda_min_upper", "lambda_max_lower",
                 "kappa_lower", "kappa_upper", "value", "pruned")
                if key in rows[c]}}
            for c in cands],
    })
  if k is None:   # best prefix of the greedy path; ties -> shorter
    _, size, value = min(path, key=lambda t: (t[0], t[1]))
    chosen = chosen[:size]
  else:
    value = path[-1][2]
  if stopped and k is not None:
    stopped = f"{stopped} after {len(chosen)} of k={k} blocks"
  return search.result(chosen, value, stopped)


def exhaustive_select(kernels: Mapping[str, Any], criterion: str = "min_kappa",
                      k: Optional[int] = 2, *, targets: Any = None,
                      fx0: Any = None,
                      param_counts: Optional[Mapping[str, int]] = None,
                      param_budget: Optional[int] = None, ridge: float = 0.0,
                      rtol: float = bounds_lib.DEFAULT_RTOL,
                      max_subsets: int = MAX_SUBSETS) -> Selection:
  """The optimal subset of exactly k blocks (k=None: of any size >= 1).

  A plain enumeration in lexicographic block order: one exact evaluation per
  subset that fits the parameter budget, so ``exact_evaluations <= C(m, k)``
  (``2^m - 1`` for k=None). No bound pruning (module docstring: it cost more
  eigendecompositions than it saved).

  Args:
    As :func:`greedy_select` (without ``prune``), plus ``max_subsets``: refuse
    problems with more candidate subsets than this (use the greedy search).

  Returns:
    A :class:`Selection`; ``trace`` lists each improvement of the best subset.

  Raises:
    ValueError: as :func:`greedy_select`; too many subsets; no subset of size
      k fits the parameter budget.
  """
  prob, k = prepare(kernels, criterion, k, targets, fx0, param_counts,
                    param_budget, ridge, rtol)
  m = prob.m
  total = math.comb(m, k) if k is not None else 2**m - 1
  if total > max_subsets:
    raise ValueError(f"exhaustive search over {total} subsets exceeds "
                     f"max_subsets={max_subsets}; use search='greedy' or a "
                     "smaller k")
  search = _Search(prob, "exhaustive")
  # (loss, block indices); None until a subset is evaluated (all losses may
  # be inf, e.g. kappa of singular kernels).
  best, best_value = (math.inf, None), None
  for size in [k] if k is not None else range(1, m + 1):
    for idx in itertools.combinations(range(m), size):
      if prob.param_budget is not None and (
          search.num_params(idx) > prob.param_budget):
        continue
      loss, value, _ = search.evaluate(idx, sum(prob.kernels[i] for i in idx))
      if best[1] is None or (loss, idx) < best:
        best, best_value = (loss, idx), value
        search.trace.append({"selected": list(search.names(idx)),
                             "value": value,
                             "exact_evaluations": search.evaluations})
  if best[1] is None:
    raise ValueError(f"no subset of {k if k is not None else 'any'} blocks "
                     f"fits param_budget={prob.param_budget}")
  return search.result(best[1], best_value)


def select(kernels: Mapping[str, Any], search: str = "greedy",
           prune: bool = True, **kwargs) -> Selection:
  """:func:`greedy_select` or :func:`exhaustive_select` by name.

  ``prune`` applies to the greedy search (the exhaustive one never prunes).
  """
  if search == "greedy":
    return greedy_select(kernels, prune=prune, **kwargs)
  if search == "exhaustive":
    return exhaustive_select(kernels, **kwargs)
  raise ValueError(f"unknown search {search!r}; choose from {SEARCHES}")


__all__ = ["CRITERIA", "SEARCHES", "Selection", "block_stats",
           "criterion_value", "exhaustive_select", "greedy_select",
           "peft_flags", "peft_fragment", "select"]
