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
:func:`exhaustive_select` (every subset of size k, depth-first in lexicographic
order). Both prune with the Weyl bounds of :mod:`ntkft.select.bounds`: before
the exact eigendecomposition of ``K_P + K_b`` (P the current set), the bounds
built from the eigenvalues of K_P and the extreme eigenvalues of K_b (and, in
the exhaustive search, of the blocks still to be added below a search node)
give an *optimistic* value; a candidate (subtree) whose optimistic value is
strictly worse than the best exact value found so far is skipped. The bounds
are widened by a rounding slack, and ties are broken by block order, so
pruning never changes the result (tested against ``prune=False``, which for
the exhaustive search is a plain enumeration of all subsets). Every bound used
is verified against the exact value whenever that value is computed:
``bound_checks`` counts the inequalities checked, ``bound_violations`` the
failures (always 0 unless the theory or the code is wrong). The alignment is
not spectral and costs O(n^2 C) exactly, so it is never pruned and checks no
bounds.

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
import re
from typing import Any, Mapping, Optional

import numpy as np

from ntkft.models.bert import PROJECTIONS
from ntkft.select import bounds as bounds_lib

CRITERIA = ("min_kappa", "max_lambda_min", "max_alignment")
SEARCHES = ("greedy", "exhaustive")
SPECTRAL = ("min_kappa", "max_lambda_min")
# Exhaustive search refuses more subsets than this unless told otherwise.
MAX_SUBSETS = 200_000

_LAYER_RE = re.compile(r"^layer_(\d+)$")
_LAYER_PROJ_RE = re.compile(r"^layer_(\d+)/(\w+)$")


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
    pruned: exact evaluations skipped thanks to the bounds (greedy: candidate
      blocks; exhaustive: search-tree children, each the root of a skipped
      subtree).
    exact_evaluations: exact criterion evaluations (eigendecompositions for
      the spectral criteria) performed.
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
    """JSON-serializable dict (inf kappa as the string "inf")."""
    out = dataclasses.asdict(self)
    out["selected"] = list(self.selected)
    out["trace"] = [_jsonable(t) for t in self.trace]
    out["value"] = _jsonable(self.value)
    out["peft_fragment"] = _jsonable(self.as_peft_config())
    out["peft_flags"] = self.as_flags()
    return out


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    x = float(x)
    return x if math.isfinite(x) else str(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def peft_fragment(selected) -> dict:
  """A ``config.peft`` fragment (PeftSpec fields) for a list of block names.

  * ``layer_<i>`` blocks: ``{"layers": (i, ...)}`` (the targets stay those of
    the candidate config).
  * ``layer_<i>/<projection>`` blocks: ``{"layers": L, "targets": T}`` when the
    selection is the full product L x T. Otherwise PeftSpec (which applies the
    same targets to every layer) cannot express it: the fragment is the
    smallest product containing the selection, plus ``"note"`` saying so and
    ``"per_layer_targets"`` {layer: targets} with the actual selection.
    A whole-layer block together with projection blocks of other layers is
    also reported as inexact in the note.
  * ``head`` / ``pooler...`` blocks: ``"head": True``.

  Raises:
    ValueError: a block name of another form (e.g. ``embeddings``).
  """
  layers, per_layer, whole, head = set(), {}, set(), False
  for name in selected:
    if m := _LAYER_RE.match(name):
      layers.add(int(m.group(1)))
      whole.add(int(m.group(1)))
    elif m := _LAYER_PROJ_RE.match(name):
      layer = int(m.group(1))
      layers.add(layer)
      per_layer.setdefault(layer, set()).add(m.group(2))
    elif name == "head" or name.startswith(("head/", "pooler")):
      head = True
    else:
      raise ValueError(f"block {name!r} cannot be expressed as a peft config "
                       "(expected layer_<i>, layer_<i>/<projection>, head or "
                       "pooler...)")
  out = {}
  if layers:
    out["layers"] = tuple(sorted(layers))
  if per_layer:
    union = set().union(*per_layer.values())
    order = {p: i for i, p in enumerate(PROJECTIONS)}
    out["targets"] = tuple(sorted(union, key=lambda p: (order.get(p, 99), p)))
    full = not whole and all(t == union for t in per_layer.values())
    if not full:
      out["per_layer_targets"] = {
          layer: tuple(sorted(t, key=lambda p: (order.get(p, 99), p)))
          for layer, t in sorted(per_layer.items())}
      out["note"] = (
          "not a full layers x targets product (per-layer targets differ"
          + (", or whole layers mixed with projections" if whole else "")
          + "): peft.layers/targets above are the smallest product containing "
          "the selection, a superset of it; see per_layer_targets")
  if head:
    out["head"] = True
  return out


def peft_flags(fragment: Mapping[str, Any]) -> str:
  """Config overrides for a fragment.

  E.g. ``--config.peft.layers='(4,5)' --config.peft.targets="('query','value')"``.
  """
  parts = []
  if "layers" in fragment:
    layers = ",".join(str(i) for i in fragment["layers"])
    if len(fragment["layers"]) == 1:
      layers += ","
    parts.append(f"--config.peft.layers='({layers})'")
  if "targets" in fragment:
    targets = ",".join(f"'{t}'" for t in fragment["targets"])
    if len(fragment["targets"]) == 1:
      targets += ","
    parts.append(f'--config.peft.targets="({targets})"')
  if fragment.get("head"):
    parts.append("--config.peft.head=True")
  return " ".join(parts)


# ------------------------------------------------------------ the problem


@dataclasses.dataclass(frozen=True)
class _Problem:
  names: tuple[str, ...]
  kernels: tuple[np.ndarray, ...]      # (n, n) float64, symmetric
  eig_min: np.ndarray                  # (m,) lambda_min(K_b)
  eig_max: np.ndarray                  # (m,) lambda_max(K_b)
  targets: Optional[np.ndarray]        # (n, C) residual targets
  params: Optional[np.ndarray]         # (m,) parameter counts
  param_budget: Optional[int]
  ridge: float
  criterion: str
  rtol: float

  @property
  def n(self) -> int:
    return self.kernels[0].shape[0]

  @property
  def m(self) -> int:
    return len(self.names)


def _prepare(kernels, criterion, k, targets, fx0, param_counts, param_budget,
             ridge, rtol) -> tuple[_Problem, Optional[int]]:
  if criterion not in CRITERIA:
    raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
  if not isinstance(kernels, Mapping) or not kernels:
    raise ValueError("kernels must be a non-empty mapping block name -> (n, n) "
                     "kernel")
  names = tuple(kernels)
  mats = []
  for name in names:
    mat = np.asarray(kernels[name], dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
      raise ValueError(f"kernel of block {name!r} must be square (n, n), got "
                       f"shape {mat.shape}")
    if mats and mat.shape != mats[0].shape:
      raise ValueError(f"kernel of block {name!r} has shape {mat.shape}, but "
                       f"block {names[0]!r} has {mats[0].shape}")
    if not np.all(np.isfinite(mat)):
      raise ValueError(f"kernel of block {name!r} has non-finite entries")
    norm = np.linalg.norm(mat)
    if norm > 0 and np.linalg.norm(mat - mat.T) > 1e-5 * norm:
      raise ValueError(f"kernel of block {name!r} is not symmetric")
    mats.append((mat + mat.T) / 2)
  n = mats[0].shape[0]
  m = len(names)
  if k is not None:
    if isinstance(k, bool) or int(k) != k or k < 1:
      raise ValueError(f"budget k must be a positive int or None, got {k!r}")
    k = int(k)
    if k > m:
      raise ValueError(f"budget k={k} exceeds the number of candidate blocks "
                       f"({m}: {list(names)})")
  ridge = bounds_lib._ridge(ridge)
  if not 0 <= rtol < 1e-2:
    raise ValueError(f"rtol must be in [0, 1e-2), got {rtol}")

  y = None
  if targets is not None:
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != n:
      raise ValueError(f"targets must have shape (n,) or (n, C) with n={n}, "
                       f"got {y.shape}")
    if fx0 is not None:
      f0 = np.asarray(fx0, dtype=np.float64)
      if f0.shape != y.shape:
        raise ValueError(f"fx0 has shape {f0.shape}, targets have {y.shape}; "
                         "they must match")
      y = y - f0
    y = y.reshape(n, -1)
    if not np.all(np.isfinite(y)):
      raise ValueError("targets (or fx0) have non-finite entries")
  elif fx0 is not None:
    raise ValueError("fx0 given without targets")
  if criterion == "max_alignment":
    if y is None:
      raise ValueError("criterion 'max_alignment' needs targets")
    if not np.any(y):
      raise ValueError("max_alignment: the (residual) targets are all zero")

  params = None
  if param_counts is not None:
    missing = [b for b in names if b not in param_counts]
    if missing:
      raise ValueError(f"param_counts misses block(s) {missing}")
    params = np.array([int(param_counts[b]) for b in names], dtype=np.int64)
    if np.any(params < 0):
      raise ValueError("param_counts must be >= 0")
  if param_budget is not None:
    if params is None:
      raise ValueError("param_budget needs param_counts")
    if int(param_budget) <= 0:
      raise ValueError(f"param_budget must be positive (or None), got "
                       f"{param_budget}")
    param_budget = int(param_budget)
    if not np.any(params <= param_budget):
      raise ValueError(f"param_budget={param_budget} is smaller than every "
                       f"block (min {int(params.min())} parameters)")
  eig_min, eig_max = [], []
  for mat in mats:
    eigs = np.linalg.eigvalsh(mat)
    eig_min.append(eigs[0])
    eig_max.append(eigs[-1])
  return _Problem(names, tuple(mats), np.array(eig_min), np.array(eig_max), y,
                  params, param_budget, ridge, criterion, float(rtol)), k


def kernel_target_alignment(kernel: Any, targets: Any) -> float:
  """``tr(Y^T K Y) / (|K|_F |Y|_F^2)``; 0 for K = 0.

  Args:
    kernel: (n, n).
    targets: (n,) or (n, C).
  """
  kernel = np.asarray(kernel, dtype=np.float64)
  y = np.asarray(targets, dtype=np.float64).reshape(kernel.shape[0], -1)
  norm_k, norm_y = np.linalg.norm(kernel), float(np.sum(y * y))
  if norm_k == 0 or norm_y == 0:
    return 0.0
  return float(np.sum(y * (kernel @ y)) / (norm_k * norm_y))


def criterion_value(kernel: Any, criterion: str, targets: Any = None,
                    ridge: float = 0.0) -> float:
  """The criterion of one kernel, exactly (float64): kappa, lambda_min, or A.

  Args:
    kernel: (n, n) symmetric.
    criterion: one of ``CRITERIA``.
    targets: (n,) / (n, C), for ``"max_alignment"``.
    ridge: added to the eigenvalues (spectral criteria only).
  """
  if criterion not in CRITERIA:
    raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
  if criterion == "max_alignment":
    if targets is None:
      raise ValueError("criterion 'max_alignment' needs targets")
    return kernel_target_alignment(kernel, targets)
  eigs = np.linalg.eigvalsh(np.asarray(kernel, dtype=np.float64)) + ridge
  if criterion == "min_kappa":
    return bounds_lib.condition_number(eigs)
  return float(eigs[0])


def _loss_and_eigs(prob: _Problem, k_sum: np.ndarray):
  """(loss to minimize, criterion value, raw eigenvalues or None)."""
  if prob.criterion == "max_alignment":
    value = kernel_target_alignment(k_sum, prob.targets)
    return -value, value, None
  eigs = np.linalg.eigvalsh(k_sum)
  if prob.criterion == "min_kappa":
    value = bounds_lib.condition_number(eigs + prob.ridge)
    return value, value, eigs
  value = float(eigs[0]) + prob.ridge
  return -value, value, eigs


def _pool_sums(eig_min: np.ndarray, eig_max: np.ndarray, r_lo: int,
               r_hi: int) -> tuple[float, float]:
  """Range of sum lambda_min (low end) / sum lambda_max (high end) of K_R.

  R: any r in [r_lo, r_hi] blocks of the pool. lambda_min(K_R) >= the smallest
  possible sum of lambda_min, lambda_max(K_R) <= the largest sum of lambda_max.
  """
  if r_hi == 0:
    return 0.0, 0.0
  lo_sorted = np.sort(eig_min)
  hi_sorted = np.sort(eig_max)[::-1]
  lo = lo_sorted[:r_lo].sum() + np.minimum(lo_sorted[r_lo:r_hi], 0).sum()
  hi = hi_sorted[:r_lo].sum() + np.maximum(hi_sorted[r_lo:r_hi], 0).sum()
  return float(lo), float(hi)


def _optimistic(prob: _Problem, eigs_p: np.ndarray, b: int,
                pool: np.ndarray, r_lo: int, r_hi: int) -> dict:
  """Bounds for P + b (+ r in [r_lo, r_hi] blocks from pool): best-case loss."""
  s_lo, s_hi = _pool_sums(prob.eig_min[pool], prob.eig_max[pool], r_lo, r_hi)
  b1, bn = float(prob.eig_min[b]), float(prob.eig_max[b])
  a1, an = float(eigs_p[0]), float(eigs_p[-1])
  ext = bounds_lib.interval_bounds(a1, an, (b1 + s_lo, b1 + s_hi),
                                   (bn + s_lo, bn + s_hi), prob.ridge)
  scale = (max(abs(a1), abs(an)) + max(abs(b1), abs(bn)) +
           max(abs(s_lo), abs(s_hi)) + prob.ridge)
  slack = prob.rtol * scale
  kappa_lo, kappa_hi = bounds_lib.kappa_from_bounds(ext, slack)
  if prob.criterion == "min_kappa":
    opt = kappa_lo
  else:
    opt = -(ext["lambda_min_upper"] + slack)
  return dict(ext, kappa_lower=kappa_lo, kappa_upper=kappa_hi, slack=slack,
              optimistic_loss=opt)


class _Counter:
  """Bound checks against exact values."""

  def __init__(self):
    self.checks = 0
    self.violations = 0
    self.failed: list[str] = []

  def check(self, ok: bool, what: str):
    self.checks += 1
    if not ok:
      self.violations += 1
      if len(self.failed) < 20:
        self.failed.append(what)

  def step(self, prob: _Problem, eigs_p, b: int, eigs_new, where: str):
    """Single-step Weyl bounds (every eigenvalue, extremes, kappa) of P + b."""
    b1, bn = float(prob.eig_min[b]), float(prob.eig_max[b])
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


def _names(prob: _Problem, idx) -> tuple[str, ...]:
  return tuple(prob.names[i] for i in idx)


def _num_params(prob: _Problem, idx) -> Optional[int]:
  return None if prob.params is None else int(sum(prob.params[i] for i in idx))


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
  prob, k = _prepare(kernels, criterion, k, targets, fx0, param_counts,
                     param_budget, ridge, rtol)
  n, m = prob.n, prob.m
  counter = _Counter()
  chosen: list[int] = []
  k_sum = np.zeros((n, n))
  eigs_p = np.zeros(n)          # K_empty = 0
  used = 0
  trace, path = [], []
  pruned = evaluations = 0
  stopped = ""
  for step in range(k if k is not None else m):
    cands = [b for b in range(m) if b not in chosen and
             (prob.param_budget is None or
              used + prob.params[b] <= prob.param_budget)]
    if not cands:
      stopped = ("parameter budget" if len(chosen) < m else
                 "no blocks left")
      break
    rows = {}
    for b in cands:
      if prob.criterion in SPECTRAL:
        rows[b] = _optimistic(prob, eigs_p, b, np.zeros(0, int), 0, 0)
      else:
        rows[b] = {"optimistic_loss": -math.inf}
    order = (sorted(cands, key=lambda b: (rows[b]["optimistic_loss"], b))
             if prune else cands)
    best = (math.inf, m)
    best_eval = None
    for b in order:
      row = rows[b]
      if prune and row["optimistic_loss"] > best[0]:
        row["pruned"] = True
        pruned += 1
        continue
      k_new = k_sum + prob.kernels[b]
      loss, value, eigs_new = _loss_and_eigs(prob, k_new)
      evaluations += 1
      row.update(pruned=False, value=value)
      if eigs_new is not None:
        counter.step(prob, eigs_p, b, eigs_new, f"step {step} +{prob.names[b]}")
        counter.check(loss >= row["optimistic_loss"],
                      f"step {step} +{prob.names[b]}: optimistic")
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
    trace.append({
        "step": step, "added": prob.names[b], "value": value,
        "selected": list(_names(prob, chosen)),
        "num_params": _num_params(prob, chosen),
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
  return Selection(
      selected=_names(prob, chosen), criterion=prob.criterion, value=value,
      search="greedy", ridge=prob.ridge, num_params=_num_params(prob, chosen),
      trace=tuple(trace), bound_checks=counter.checks,
      bound_violations=counter.violations, pruned=pruned,
      exact_evaluations=evaluations, stopped=stopped)


def exhaustive_select(kernels: Mapping[str, Any], criterion: str = "min_kappa",
                      k: Optional[int] = 2, *, targets: Any = None,
                      fx0: Any = None,
                      param_counts: Optional[Mapping[str, int]] = None,
                      param_budget: Optional[int] = None, ridge: float = 0.0,
                      prune: bool = True,
                      rtol: float = bounds_lib.DEFAULT_RTOL,
                      max_subsets: int = MAX_SUBSETS) -> Selection:
  """The optimal subset of exactly k blocks (k=None: of any size >= 1).

  With ``prune=True``: depth-first branch and bound over subsets in
  lexicographic block order. At a search node P (exact eigenvalues known),
  the child ``P + b`` still has ``r`` blocks to add from those after b; its
  subtree is skipped when the Weyl bound for ``K_P + K_b + K_R`` (with
  ``lambda_min(K_R) >= sum of the r smallest lambda_min`` and
  ``lambda_max(K_R) <= sum of the r largest lambda_max`` of the remaining
  blocks) is already strictly worse than the best exact value. With
  ``prune=False``: a plain enumeration of all subsets (the reference).

  Args:
    As :func:`greedy_select`, plus ``max_subsets``: refuse problems with more
    candidate subsets than this (use the greedy search).

  Returns:
    A :class:`Selection`; ``trace`` lists each improvement of the best subset.

  Raises:
    ValueError: as :func:`greedy_select`; too many subsets; no subset of size
      k fits the parameter budget.
  """
  prob, k = _prepare(kernels, criterion, k, targets, fx0, param_counts,
                     param_budget, ridge, rtol)
  n, m = prob.n, prob.m
  total = math.comb(m, k) if k is not None else 2**m - 1
  if total > max_subsets:
    raise ValueError(f"exhaustive search over {total} subsets exceeds "
                     f"max_subsets={max_subsets}; use search='greedy' or a "
                     "smaller k")
  counter = _Counter()
  # best: (loss, block indices); None until a subset is evaluated (all losses
  # may be inf, e.g. kappa of singular kernels).
  state = {"best": (math.inf, None), "value": None, "pruned": 0, "evals": 0}
  trace = []

  def fits(idx) -> bool:
    return (prob.param_budget is None or
            int(sum(prob.params[i] for i in idx)) <= prob.param_budget)

  def offer(loss, idx, value):
    best_loss, best_idx = state["best"]
    if best_idx is None or (loss, idx) < (best_loss, best_idx):
      state["best"] = (loss, idx)
      state["value"] = value
      trace.append({"selected": list(_names(prob, idx)), "value": value,
                    "exact_evaluations": state["evals"],
                    "pruned": state["pruned"]})

  if not prune:
    sizes = [k] if k is not None else range(1, m + 1)
    for size in sizes:
      for idx in itertools.combinations(range(m), size):
        if not fits(idx):
          continue
        k_sum = np.zeros((n, n))
        for i in idx:
          k_sum = k_sum + prob.kernels[i]
        loss, value, _ = _loss_and_eigs(prob, k_sum)
        state["evals"] += 1
        offer(loss, idx, value)
  else:
    spectral = prob.criterion in SPECTRAL

    def visit(idx, k_sum, eigs_p, used, ancestors):
      for b in range(idx[-1] + 1 if idx else 0, m):
        if (prob.param_budget is not None and
            used + prob.params[b] > prob.param_budget):
          continue
        size = len(idx) + 1
        if k is not None:
          r_lo = r_hi = k - size
          if m - b - 1 < r_lo:
            break                   # not enough blocks left after b
        else:
          r_lo, r_hi = 0, m - b - 1
        child = idx + (b,)
        if spectral:
          pool = np.arange(b + 1, m)
          opt = _optimistic(prob, eigs_p, b, pool, r_lo, r_hi)
          opt = opt["optimistic_loss"]
          if opt > state["best"][0]:
            state["pruned"] += 1
            continue
        else:
          opt = -math.inf
        k_new = k_sum + prob.kernels[b]
        loss, value, eigs_new = _loss_and_eigs(prob, k_new)
        state["evals"] += 1
        where = "+".join(_names(prob, child))
        if spectral:
          counter.step(prob, eigs_p, b, eigs_new, where)
        if k is None or size == k:
          if spectral:
            for anc in ancestors + [opt]:
              counter.check(loss >= anc, f"{where}: subtree bound")
          offer(loss, child, value)
        if k is None or size < k:
          visit(child, k_new, eigs_new if spectral else eigs_p,
                used + (0 if prob.params is None else int(prob.params[b])),
                ancestors + [opt])

    visit((), np.zeros((n, n)), np.zeros(n), 0, [])
  if state["best"][1] is None:
    raise ValueError(f"no subset of {k if k is not None else 'any'} blocks "
                     f"fits param_budget={prob.param_budget}")
  idx = state["best"][1]
  return Selection(
      selected=_names(prob, idx), criterion=prob.criterion,
      value=state["value"], search="exhaustive", ridge=prob.ridge,
      num_params=_num_params(prob, idx), trace=tuple(trace),
      bound_checks=counter.checks, bound_violations=counter.violations,
      pruned=state["pruned"], exact_evaluations=state["evals"])


def select(kernels: Mapping[str, Any], search: str = "greedy",
           **kwargs) -> Selection:
  """:func:`greedy_select` or :func:`exhaustive_select` by name."""
  if search == "greedy":
    return greedy_select(kernels, **kwargs)
  if search == "exhaustive":
    return exhaustive_select(kernels, **kwargs)
  raise ValueError(f"unknown search {search!r}; choose from {SEARCHES}")


def block_stats(kernels: Mapping[str, Any], targets: Any = None,
                fx0: Any = None, ridge: float = 0.0,
                param_counts: Optional[Mapping[str, int]] = None) -> dict:
  """Single-block statistics {block: {lambda_min, lambda_max, kappa, ...}}.

  lambda_min / lambda_max / kappa are of ``K_b + ridge I``; ``alignment``
  (with targets, residuals if fx0) and ``trace`` of K_b.
  """
  prob, _ = _prepare(kernels, "min_kappa", None, targets, fx0, param_counts,
                     None, ridge, bounds_lib.DEFAULT_RTOL)
  out = {}
  for i, name in enumerate(prob.names):
    kb = prob.kernels[i]
    row = {"lambda_min": float(prob.eig_min[i]) + prob.ridge,
           "lambda_max": float(prob.eig_max[i]) + prob.ridge,
           "kappa": bounds_lib.condition_number(
               np.array([prob.eig_min[i], prob.eig_max[i]]) + prob.ridge),
           "trace": float(np.trace(kb))}
    if prob.targets is not None:
      row["alignment"] = kernel_target_alignment(kb, prob.targets)
    if prob.params is not None:
      row["num_params"] = int(prob.params[i])
    out[name] = row
  return out


__all__ = ["CRITERIA", "SEARCHES", "Selection", "block_stats",
           "criterion_value", "exhaustive_select", "greedy_select",
           "kernel_target_alignment", "peft_flags", "peft_fragment", "select"]
