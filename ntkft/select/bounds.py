"""Weyl bounds on the spectrum of K_S + K_b: adding a parameter block to S.

Adding a parameter block ``b`` to the fine-tuned set ``S`` adds a PSD block to
the empirical NTK, exactly: ``K_{S+b} = K_S + K_b`` with ``K_b = J_b J_b^T``
(:func:`ntkft.ntk.per_block_ntk_fn`). Knowing the eigenvalues of ``K_S`` and
only the extreme eigenvalues of ``K_b`` bounds every eigenvalue of the sum,
hence lambda_min, lambda_max and the condition number, without an
eigendecomposition.

Derivation. Let A, B be real symmetric (n, n) with ascending eigenvalues
``a_1 <= ... <= a_n``, ``b_1 <= ... <= b_n`` and let ``c_k`` be those of
``C = A + B``. Weyl's inequalities (Horn & Johnson, Matrix Analysis,
Section 4.3):

    c_{i+j-1} >= a_i + b_j    (i + j - 1 <= n)                         (W1)
    c_{i+j-n} <= a_i + b_j    (i + j - n >= 1)                         (W2)

* Every eigenvalue (:func:`weyl_bounds`): W1 with j = 1, W2 with j = n:
  ``a_k + b_1 <= c_k <= a_k + b_n``.
* lambda_min(C) = c_1: W1 (i = j = 1) gives ``c_1 >= a_1 + b_1``; W2 with
  (i, j) = (1, n) and (n, 1) gives ``c_1 <= min(a_1 + b_n, a_n + b_1)``.
* lambda_max(C) = c_n: W2 (i = j = n) gives ``c_n <= a_n + b_n``; W1 with
  (i, j) = (n, 1) and (1, n) gives ``c_n >= max(a_n + b_1, a_1 + b_n)``. For
  PSD A, B (a_1, b_1 >= 0) this is ``>= max(a_n, b_n)``, the familiar
  "adding a PSD matrix cannot shrink lambda_max".
* Ridge: the eigenvalues of ``C + rho I`` are ``c_k + rho``; every bound shifts
  by rho.
* Condition number kappa = c_n / c_1 (of ``C + rho I``), ``+inf`` when
  c_1 <= 0 (singular or indefinite): the policy of
  :func:`ntkft.spectral.condition_number`, re-exported here. With the bounds above,
  ``L_min <= c_1 <= U_min`` and ``L_max <= c_n <= U_max`` (ridge included):

      kappa <= U_max / L_min                     when L_min > 0, else +inf
      kappa >= max(1, L_max / U_min)             when U_min > 0, else +inf

  (U_min <= 0 forces c_1 <= 0, i.e. kappa = +inf by the convention; kappa >= 1
  whenever c_1 > 0 since c_n >= c_1.)
* Sums of several blocks (used to bound a whole search subtree): by induction
  on W1/W2 with i = j = 1 resp. i = j = n,
  ``lambda_min(sum_j B_j) >= sum_j lambda_min(B_j)`` and
  ``lambda_max(sum_j B_j) <= sum_j lambda_max(B_j)``; so for ``B = K_b + K_R``
  (R more blocks) ``lambda_min(B)`` lies in
  ``[b_1 + lambda_min(K_R), b_1 + lambda_max(K_R)]`` and ``lambda_max(B)`` in
  ``[b_n + lambda_min(K_R), b_n + lambda_max(K_R)]``. :func:`interval_bounds`
  takes such intervals for lambda_min(B) and lambda_max(B); with exact values it
  is the single-block case above.

Rounding: the eigenvalues that go in are float64 ``eigh`` results, accurate to
about ``n eps |K|``. Every comparison of a bound with an exact value therefore
uses an absolute slack ``rtol * scale``, ``scale = max|a| + max|b| + rho``, and
the kappa bounds are formed from the slackened eigenvalue bounds
(``slack`` argument), so they stay valid under rounding.

Example::

  eigs_s = np.linalg.eigvalsh(k_s)
  eigs_b = np.linalg.eigvalsh(k_b)
  lower, upper = weyl_bounds(eigs_s, eigs_b[0], eigs_b[-1])
  kappa_lo, kappa_hi = kappa_bounds(eigs_s[0], eigs_s[-1], eigs_b[0],
                                    eigs_b[-1], ridge=1e-3)
  report = check_bounds(k_s, k_b, ridge=1e-3)   # exact vs bounds
  assert report["violations"] == 0
"""
import math
from typing import Any

import numpy as np

from ntkft.spectral.stats import condition_number, symmetric_kernel

# Relative (to the spectral scale) slack that absorbs float64 eigh rounding.
DEFAULT_RTOL = 1e-9


def _eigs(eigs: Any, name: str) -> np.ndarray:
  eigs = np.asarray(eigs, dtype=np.float64)
  if eigs.ndim != 1 or eigs.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty 1-D array of eigenvalues, "
                     f"got shape {eigs.shape}")
  if not np.all(np.isfinite(eigs)):
    raise ValueError(f"{name} has non-finite entries")
  if np.any(np.diff(eigs) < 0):
    raise ValueError(f"{name} must be sorted ascending (as np.linalg.eigvalsh "
                     "returns them)")
  return eigs


def _scalar(x: Any, name: str) -> float:
  x = float(x)
  if not math.isfinite(x):
    raise ValueError(f"{name} must be finite, got {x}")
  return x


def _ridge(ridge: Any) -> float:
  ridge = _scalar(ridge, "ridge")
  if ridge < 0:
    raise ValueError(f"ridge must be >= 0, got {ridge}")
  return ridge


def weyl_bounds(eigs_s: Any, eig_min_b: float,
                eig_max_b: float) -> tuple[np.ndarray, np.ndarray]:
  """Bounds on every eigenvalue of ``K_S + K_b`` (Weyl, module docstring).

  Args:
    eigs_s: (n,) eigenvalues of K_S, ascending (zeros for the empty set).
    eig_min_b: lambda_min(K_b).
    eig_max_b: lambda_max(K_b), ``>= eig_min_b``.

  Returns:
    ``(lower, upper)``, each (n,) float64, with
    ``lower[k] = eigs_s[k] + eig_min_b <= lambda_k(K_S + K_b) <= eigs_s[k] +
    eig_max_b = upper[k]`` (k-th smallest).

  Raises:
    ValueError: unsorted / non-finite eigenvalues, eig_min_b > eig_max_b.
  """
  eigs_s = _eigs(eigs_s, "eigs_s")
  lo, hi = _scalar(eig_min_b, "eig_min_b"), _scalar(eig_max_b, "eig_max_b")
  if lo > hi:
    raise ValueError(f"eig_min_b={lo} > eig_max_b={hi}")
  return eigs_s + lo, eigs_s + hi


def interval_bounds(lam_min_a: float, lam_max_a: float,
                    lam_min_b: tuple[float, float],
                    lam_max_b: tuple[float, float],
                    ridge: float = 0.0) -> dict:
  """Bounds on lambda_min, lambda_max of ``A + B + ridge I``.

  A's extreme eigenvalues are known; B's are known to lie in intervals (a sum
  of blocks, module docstring).

  Args:
    lam_min_a, lam_max_a: lambda_min(A) <= lambda_max(A).
    lam_min_b: (lo, hi) with lo <= lambda_min(B) <= hi.
    lam_max_b: (lo, hi) with lo <= lambda_max(B) <= hi.
    ridge: rho >= 0 added to every eigenvalue.

  Returns:
    dict with ``lambda_min_lower``, ``lambda_min_upper``, ``lambda_max_lower``,
    ``lambda_max_upper`` (floats, ridge included):
    ``a_1 + lo_min <= c_1 <= min(a_1 + hi_max, a_n + hi_min)`` and
    ``max(a_n + lo_min, a_1 + lo_max) <= c_n <= a_n + hi_max``.
  """
  a1, an = _scalar(lam_min_a, "lam_min_a"), _scalar(lam_max_a, "lam_max_a")
  lo_min, hi_min = (_scalar(v, "lam_min_b") for v in lam_min_b)
  lo_max, hi_max = (_scalar(v, "lam_max_b") for v in lam_max_b)
  if a1 > an or lo_min > hi_min or lo_max > hi_max:
    raise ValueError("interval_bounds: need lam_min_a <= lam_max_a and "
                     f"lo <= hi, got A=({a1}, {an}), lambda_min(B) in "
                     f"[{lo_min}, {hi_min}], lambda_max(B) in "
                     f"[{lo_max}, {hi_max}]")
  rho = _ridge(ridge)
  return {
      "lambda_min_lower": a1 + lo_min + rho,
      "lambda_min_upper": min(a1 + hi_max, an + hi_min) + rho,
      "lambda_max_lower": max(an + lo_min, a1 + lo_max) + rho,
      "lambda_max_upper": an + hi_max + rho,
  }


def extreme_bounds(lam_min_s: float, lam_max_s: float, lam_min_b: float,
                   lam_max_b: float, ridge: float = 0.0) -> dict:
  """Bounds on lambda_min and lambda_max of ``K_S + K_b + ridge I``.

  :func:`interval_bounds` with the exact extremes of K_b:
  ``s_1 + b_1 <= c_1 <= min(s_1 + b_n, s_n + b_1)``,
  ``max(s_n + b_1, s_1 + b_n) <= c_n <= s_n + b_n`` (plus ridge).

  Returns:
    dict ``lambda_min_lower``, ``lambda_min_upper``, ``lambda_max_lower``,
    ``lambda_max_upper``.
  """
  return interval_bounds(lam_min_s, lam_max_s, (lam_min_b, lam_min_b),
                         (lam_max_b, lam_max_b), ridge)


def kappa_from_bounds(bounds: dict, slack: float = 0.0) -> tuple[float, float]:
  """(lower, upper) on kappa from eigenvalue bounds (module docstring).

  Args:
    bounds: dict from :func:`interval_bounds` / :func:`extreme_bounds`.
    slack: absolute rounding slack >= 0; the eigenvalue bounds are widened by
      it first (lower bounds minus, upper bounds plus).

  Returns:
    ``(kappa_lower, kappa_upper)``: ``kappa_upper = U_max / L_min`` if
    ``L_min > 0`` else inf; ``kappa_lower = max(1, L_max / U_min)`` if
    ``U_min > 0`` else inf (then lambda_min <= 0 and kappa is inf by the
    convention of :func:`condition_number`).
  """
  slack = _scalar(slack, "slack")
  if slack < 0:
    raise ValueError(f"slack must be >= 0, got {slack}")
  l_min = bounds["lambda_min_lower"] - slack
  u_min = bounds["lambda_min_upper"] + slack
  l_max = bounds["lambda_max_lower"] - slack
  u_max = bounds["lambda_max_upper"] + slack
  upper = u_max / l_min if l_min > 0 else math.inf
  lower = max(1.0, l_max / u_min) if u_min > 0 else math.inf
  return lower, upper


def kappa_bounds(lam_min_s: float, lam_max_s: float, lam_min_b: float,
                 lam_max_b: float, ridge: float = 0.0,
                 slack: float = 0.0) -> tuple[float, float]:
  """Bounds on the condition number of ``K_S + K_b + ridge I``.

  ``kappa <= (s_n + b_n + rho) / (s_1 + b_1 + rho)`` and
  ``kappa >= max(1, (max(s_n + b_1, s_1 + b_n) + rho) /
  (min(s_1 + b_n, s_n + b_1) + rho))``, with the +inf conventions of
  :func:`kappa_from_bounds` (derivation in the module docstring).

  Args:
    lam_min_s, lam_max_s: extreme eigenvalues of K_S (0, 0 for the empty set).
    lam_min_b, lam_max_b: extreme eigenvalues of K_b.
    ridge: rho >= 0.
    slack: absolute rounding slack, see :func:`kappa_from_bounds`.

  Returns:
    ``(kappa_lower, kappa_upper)`` floats (possibly inf).
  """
  return kappa_from_bounds(
      extreme_bounds(lam_min_s, lam_max_s, lam_min_b, lam_max_b, ridge), slack)


def slack_for(eigs_a: Any, eigs_b: Any, ridge: float = 0.0,
              rtol: float = DEFAULT_RTOL) -> float:
  """Absolute slack ``rtol * (max|a| + max|b| + ridge)`` for bound checks."""
  scale = (float(np.max(np.abs(eigs_a))) + float(np.max(np.abs(eigs_b))) +
           float(ridge))
  return rtol * scale


def check_bounds(k_s: Any, k_b: Any, ridge: float = 0.0,
                 rtol: float = DEFAULT_RTOL) -> dict:
  """Exact spectrum of ``K_S + K_b + ridge I`` against all the bounds above.

  Args:
    k_s: (n, n) symmetric kernel of the current set (zeros for the empty set).
    k_b: (n, n) symmetric kernel of the added block.
    ridge: rho >= 0.
    rtol: rounding slack relative to ``max|eig(K_S)| + max|eig(K_b)| + rho``.

  Returns:
    JSON-serializable dict: ``eigs`` (exact, ascending, ridge included),
    ``weyl_lower``, ``weyl_upper`` (lists), ``lambda_min``, ``lambda_max``,
    ``kappa`` (exact) and their bounds (``lambda_min_lower`` ... ,
    ``kappa_lower``, ``kappa_upper``), ``slack``, ``checks`` (number of
    inequalities checked), ``violations`` (how many failed) and ``violated``
    (their names).

  Raises:
    ValueError: shapes differ, not square/symmetric/finite, ridge < 0.
  """
  k_s, k_b = symmetric_kernel(k_s, "k_s"), symmetric_kernel(k_b, "k_b")
  if k_s.shape != k_b.shape:
    raise ValueError(f"k_s has shape {k_s.shape} but k_b has {k_b.shape}")
  rho = _ridge(ridge)
  eigs_s = np.linalg.eigvalsh(k_s)
  eigs_b = np.linalg.eigvalsh(k_b)
  eigs = np.linalg.eigvalsh(k_s + k_b) + rho
  slack = slack_for(eigs_s, eigs_b, rho, rtol)
  lower, upper = weyl_bounds(eigs_s, eigs_b[0], eigs_b[-1])
  lower, upper = lower + rho, upper + rho
  ext = extreme_bounds(eigs_s[0], eigs_s[-1], eigs_b[0], eigs_b[-1], rho)
  kappa_lo, kappa_hi = kappa_from_bounds(ext, slack)
  kappa = condition_number(eigs)
  lam_min, lam_max = float(eigs[0]), float(eigs[-1])
  violated = []
  checks = 0
  for k in range(eigs.shape[0]):
    checks += 2
    if eigs[k] < lower[k] - slack:
      violated.append(f"weyl_lower[{k}]")
    if eigs[k] > upper[k] + slack:
      violated.append(f"weyl_upper[{k}]")
  for name, ok in (
      ("lambda_min_lower", lam_min >= ext["lambda_min_lower"] - slack),
      ("lambda_min_upper", lam_min <= ext["lambda_min_upper"] + slack),
      ("lambda_max_lower", lam_max >= ext["lambda_max_lower"] - slack),
      ("lambda_max_upper", lam_max <= ext["lambda_max_upper"] + slack),
      ("kappa_lower", kappa >= kappa_lo),
      ("kappa_upper", kappa <= kappa_hi)):
    checks += 1
    if not ok:
      violated.append(name)
  return {
      "n": int(eigs.shape[0]), "ridge": rho,
      "eigs": eigs.tolist(),
      "weyl_lower": lower.tolist(), "weyl_upper": upper.tolist(),
      "lambda_min": lam_min, "lambda_max": lam_max, "kappa": kappa,
      **ext, "kappa_lower": kappa_lo, "kappa_upper": kappa_hi,
      "slack": slack, "checks": checks, "violations": len(violated),
      "violated": violated,
  }


__all__ = ["DEFAULT_RTOL", "check_bounds", "condition_number",
           "extreme_bounds", "interval_bounds", "kappa_bounds",
           "kappa_from_bounds", "slack_for", "weyl_bounds"]
