"""How linear is fine-tuning? Three regimes from one θ0, with bounds beside them.

Setting (the theory's): squared loss on one-hot targets over a fixed sample of n
training examples,

    R(θ) = 1/(2n) Σ_i ‖f(x_i; θ) − y_i‖²,       J(θ) = R(θ) + λ/2 ‖θ − θ0‖²,

trained by gradient descent with step η (full batch, or minibatch SGD with one
deterministic example order shared by the two trained regimes), with the pull
λ(θ − θ0) added to the gradient (optionally gated, ``ntkft.train.pull``).
The three regimes, all from the same θ0:

  nonlinear    θ_t   trains f(θ; x)
  linearized   θ̄_t   trains f̄(θ; x) = f(θ0; x) + J_f(θ0; x)(θ − θ0)   (tangent model)
  fully linear f_cf(t): the closed-form trajectory of the linearized model,
               ``ntkft.kernel.gradient_descent_mse_ntk`` with the same η and λ, and
               its endpoint ``kernel_ridge`` (the minimizer of J̄).

For full-batch GD with the pull always on, f̄(θ̄_t) = f_cf(t) exactly (both are the
same linear recursion), so ‖f̄_t − f_cf(t)‖ is a rounding-level end-to-end check of
the tangent model, the kernel and its layout. The kernel is the full per-output
NTK K[(i,o),(j,p)] = ⟨∂f_o(x_i), ∂f_p(x_j)⟩ flattened row-major to (nC, nC)
(``empirical_ntk_fn(trace_axes=())``, *not* the mean over outputs), the kernel
of the squared loss summed over C outputs.

Norms. Parameter distances are Euclidean norms over all trainable leaves. Output
gaps are RMS over examples of the per-example Euclidean norm over the C outputs,
``sqrt(1/N Σ_i ‖a_i‖²)`` (``rms``); agreements are the fraction of examples whose
argmax matches.

Bound (i), objective decrease. If J is non-increasing along the run then

    λ/2 ‖θ_t − θ0‖²  ≤  R(θ_t) + λ/2 ‖θ_t − θ0‖² = J(θ_t)  ≤  J(θ0) = R(θ0),

so ‖θ_t − θ0‖ ≤ sqrt(2 R(θ0)/λ) (R ≥ 0; R(θ0) is the same for both trained
regimes since f̄(θ0) = f(θ0)). Monotonicity holds for full-batch GD with the pull
always on when η < 2/L, L a Lipschitz constant of ∇J on the path (descent
lemma: J(θ − η∇J) ≤ J(θ) − η(1 − ηL/2)‖∇J‖²). For the linearized model J̄ is
quadratic with Hessian JᵀJ/n + λI, so L = λ + λmax(K)/n exactly (``lipschitz``);
for the nonlinear model this is the Gauss-Newton estimate (the residual-weighted
curvature Σ r_i ∇²f_i / n is left out). Minibatch steps and steps with the gate
off (selective regularization) are not descent steps on J, so neither the
monotonicity nor the bound is guaranteed; both are checked at *every* step
(``check_objective``) and every increase of J and every step with
‖θ_t − θ0‖ above the bound is flagged and counted.

Bound (ii), second-order remainder. With d = θ − θ0 and f analytic,

    f(θ) − f̄(θ) = ½ dᵀ∇²f(θ0) d + O(‖d‖³),

so ‖f(θ) − f̄(θ)‖ ≈ ½ |dᵀ∇²f d|, with dᵀ∇²f d from a jvp of a jvp
(``ntkft.linearize.taylor_terms_fn``). The estimate is compared with the measured
gap at the same θ (the nonlinear iterate θ_t); the ratio → 1 as ‖d‖ → 0. It is an
estimate, not an upper bound: a ratio far from 1 means the cubic and higher
terms matter (fine-tuning left the quadratic regime), and is reported as such.
"""
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntkft import ntk
from ntkft.kernel import gradient_descent_mse_ntk, kernel_ridge
from ntkft.linearize import tangent_apply_fn, taylor_terms_fn
from ntkft.spectral import symmetric_kernel
from ntkft.train import losses, pull
from ntkft.train import step as step_lib

REGIMES = ("nonlinear", "linearized")


# --------------------------------------------------------------------------
# Small pure helpers.


def rms(a) -> float:
  """RMS over examples of the per-example norm: sqrt(mean_i Σ_c a[i, c]²); a (N, C)."""
  a = np.asarray(a, np.float64)
  return float(np.sqrt(np.mean(np.sum(np.square(a.reshape(a.shape[0], -1)), axis=-1))))


def agreement(a, b) -> float:
  """Fraction of rows of (N, C) outputs ``a`` and ``b`` with the same argmax."""
  return float(np.mean(np.argmax(np.asarray(a), -1) == np.argmax(np.asarray(b), -1)))


def _sub(a, b):
  return jax.tree.map(jnp.subtract, a, b)


def objective_bound(risk0: float, lam: float) -> float:
  """sqrt(2 R(θ0)/λ): the distance bound (i); inf at λ = 0."""
  if lam < 0 or risk0 < 0:
    raise ValueError(f"objective_bound: need lam >= 0 and risk0 >= 0, got {lam}, {risk0}")
  return float(np.sqrt(2.0 * risk0 / lam)) if lam > 0 else float("inf")


def lipschitz(k_flat, n: int, lam: float) -> float:
  """L = λ + λmax(K)/n, the curvature of J̄ (Gauss-Newton estimate for J); K (nC, nC)."""
  k = symmetric_kernel(k_flat, "k_flat", symmetrize=True)
  return float(lam + np.linalg.eigvalsh(k)[-1] / n)


def check_objective(objectives, distances, bound: float, rtol: float = 1e-5,
                    atol: float = 0.0) -> dict:
  """Flags every step where J increases and every step where the distance bound fails.

  Args:
    objectives: (T+1,) J(θ_t) for t = 0..T.
    distances: (T+1,) ‖θ_t − θ0‖.
    bound: sqrt(2 R(θ0)/λ) (inf: never violated).
    rtol, atol: tolerance for rounding: an increase counts when
      J_{t+1} > J_t + atol + rtol·|J_t|; a violation when d_t > bound(1 + rtol) + atol.

  Returns:
    dict with ``objective_increase_steps`` (t+1 for each increase from t to t+1),
    ``bound_violation_steps`` (t), their counts and ``max_distance_over_bound``.
  """
  obj = np.asarray(objectives, np.float64)
  dist = np.asarray(distances, np.float64)
  if obj.ndim != 1 or obj.shape != dist.shape:
    raise ValueError(f"check_objective: objectives {obj.shape} and distances {dist.shape} "
                     "must be equal 1-D shapes")
  up = np.nonzero(obj[1:] > obj[:-1] + atol + rtol * np.abs(obj[:-1]))[0] + 1
  bad = np.nonzero(~np.isfinite(dist) | (dist > bound * (1 + rtol) + atol))[0]
  bad_obj = np.nonzero(~np.isfinite(obj))[0]
  up = np.union1d(up, bad_obj)
  ratio = float(np.max(dist) / bound) if np.isfinite(bound) and bound > 0 else 0.0
  return {"objective_increase_steps": up.tolist(), "num_objective_increases": int(up.size),
          "bound_violation_steps": bad.tolist(), "num_bound_violations": int(bad.size),
          "max_distance_over_bound": ratio}


def flat_ntk(apply_fn: Callable, x1, x2, params, *extra, batch_size: Optional[int] = None):
  """The full per-output NTK flattened to (N1·C, N2·C), row i·C + o (``kernel``'s layout).

  ``empirical_ntk_fn(trace_axes=())`` gives K[i, j, o, p] (no mean over outputs);
  transposed to (i, o, j, p) and reshaped. ``x2=None`` means x1.
  """
  k = ntk.empirical_ntk_fn(apply_fn, trace_axes=(), batch_size=batch_size)(
      x1, x2, params, *extra)
  k = np.asarray(k)
  if k.ndim != 4:
    raise ValueError(f"flat_ntk: expected (N1, N2, C, C) from outputs (N, C), got {k.shape}")
  n1, n2, c, _ = k.shape
  return k.transpose(0, 2, 1, 3).reshape(n1 * c, n2 * c)


# --------------------------------------------------------------------------
# Jitted pieces (functions static, arrays as arguments).


@functools.partial(jax.jit, static_argnames=("mode", "apply_fn", "selective", "block_of"))
def _step(params, params0, x, y, w, lam, lr, extra, *, mode, apply_fn, selective, block_of):
  """One (S)GD step on R + λ/2‖θ−θ0‖² (gated); returns θ_{t+1}, R_batch(θ_t), ‖θ_t−θ0‖, gate."""
  out = step_lib.regime_fn(mode, apply_fn)
  risk = lambda p: losses.squared(out(p, params0, x, *extra), y, w)
  loss, grads = jax.value_and_grad(risk)(params)
  grads, on = pull.pull_gradient(grads, params, params0, lam, selective, block_of)
  new = jax.tree.map(lambda p, g: p - lr * g, params, grads)
  return new, loss, optax.tree.norm(_sub(params, params0)), on


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _outputs_all(params, params_lin, params0, x, extra, *, apply_fn):
  """f(θ), f̄(θ̄) and the Taylor terms (f0, J d, dᵀ∇²f d) at d = θ − θ0, in one program.

  One compiled function serves the records, f(θ0) and ``remainder`` (fewer, not
  smaller, XLA compilations: compiling is most of a short run's cost).
  """
  f = apply_fn(params, x, *extra)
  fbar = tangent_apply_fn(apply_fn)(params0, params_lin, x, *extra)
  f0, jd, dhd = taylor_terms_fn(apply_fn)(params0, params, x, *extra)
  return f, fbar, f0, jd, dhd


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _outputs_pair(params, params_lin, params0, x, extra, *, apply_fn):
  """f(θ) and f̄(θ̄) (the full-batch objective of minibatch runs)."""
  return (apply_fn(params, x, *extra),
          tangent_apply_fn(apply_fn)(params0, params_lin, x, *extra))


def _risk(f, y) -> float:
  """R = 1/(2n) Σ_i ‖f_i − y_i‖² on the host (float64)."""
  return 0.5 * rms(np.asarray(f, np.float64) - np.asarray(y, np.float64)) ** 2


def _remainder_from(f, f0, jd, dhd) -> dict:
  measured = rms(np.asarray(f, np.float64) - np.asarray(f0, np.float64)
                 - np.asarray(jd, np.float64))
  estimate = 0.5 * rms(dhd)
  return {"measured": measured, "estimate": estimate,
          "ratio": measured / estimate if estimate > 0 else float("nan")}


def remainder(apply_fn: Callable, params0, params, x, *extra) -> dict:
  """Measured ‖f(θ) − f̄(θ)‖ vs the estimate ½‖dᵀ∇²f d‖ (both RMS over examples).

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, C)``.
    params0, params: θ0 and θ (same structure).
    x: inputs with a leading example axis.

  Returns:
    {"measured", "estimate", "ratio" (measured/estimate; nan if estimate = 0),
     "distance" ‖θ − θ0‖, "outputs" f(θ) (N, C)}.
  """
  f, _, f0, jd, dhd = _outputs_all(params, params0, params0, x, tuple(extra),
                                   apply_fn=apply_fn)
  return {**_remainder_from(f, f0, jd, dhd),
          "distance": float(optax.tree.norm(_sub(params, params0))), "outputs": np.asarray(f)}


def _take(x, idx):
  return jax.tree.map(lambda a: a[idx], x)


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """(steps, batch_size) example indices: consecutive slices of per-epoch permutations."""
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size={batch_size} must be in [1, n={n}]")
  rng = np.random.default_rng(seed)
  per_epoch = n // batch_size
  out = []
  while len(out) < steps:
    perm = rng.permutation(n)
    out.extend(perm[i * batch_size:(i + 1) * batch_size] for i in range(per_epoch))
  return np.stack(out[:steps])


def _current_outputs(params, params0, x, extra, apply_fn):
  """[f(θ_t), f̄(θ̄_t), f0, J d, dᵀ∇²f d] (numpy) at the current iterates."""
  return [np.asarray(a) for a in _outputs_all(params["nonlinear"], params["linearized"],
                                              params0, x, extra, apply_fn=apply_fn)]


def _record(t, params, params0, sets, closed_form, *, apply_fn, extra, lam):
  """One record of the gaps between the regimes at step t.

  Args:
    sets: {"train": (x, y), "eval": (x or None, y or None)}.
    closed_form: {"train": f_cf(t), "eval": f_cf(t) or None}.

  Returns:
    (row, last): the record and {set: (f, f̄)} outputs at this step.
  """
  row: dict[str, Any] = {"step": t}
  row["dist_nonlinear"] = float(optax.tree.norm(_sub(params["nonlinear"], params0)))
  row["dist_linearized"] = float(optax.tree.norm(_sub(params["linearized"], params0)))
  row["dist_nonlinear_vs_linearized"] = float(
      optax.tree.norm(_sub(params["nonlinear"], params["linearized"])))
  last = {}
  for name, (x, y) in sets.items():
    if x is None:
      continue
    f, fbar, f0_, jd, dhd = _current_outputs(params, params0, x, extra, apply_fn)
    last[name] = (f, fbar)
    rem = _remainder_from(f, f0_, jd, dhd)
    cf = np.asarray(closed_form[name])
    row[f"f_gap_{name}"] = rms(f.astype(np.float64) - fbar)
    row[f"remainder_measured_{name}"] = rem["measured"]
    row[f"remainder_estimate_{name}"] = rem["estimate"]
    row[f"remainder_ratio_{name}"] = rem["ratio"]
    row[f"agree_nonlinear_linearized_{name}"] = agreement(f, fbar)
    row[f"agree_linearized_closed_form_{name}"] = agreement(fbar, cf)
    row[f"closed_form_gap_{name}"] = rms(fbar.astype(np.float64) - cf)
    if name == "eval" and y is not None:
      labels = np.argmax(np.asarray(y), -1)
      for regime, out in (("nonlinear", f), ("linearized", fbar), ("closed_form", cf)):
        row[f"acc_{regime}_eval"] = float(np.mean(np.argmax(out, -1) == labels))
    if name == "train":
      for regime, out in (("nonlinear", f), ("linearized", fbar), ("closed_form", cf)):
        row[f"risk_{regime}"] = _risk(out, y)
      for regime in REGIMES:
        row[f"objective_{regime}"] = row[f"risk_{regime}"] + 0.5 * lam * row[
            f"dist_{regime}"] ** 2
  return row, last


def _minibatch(x_train, y_train, idx, dtype):
  """(x, y, weights) of the examples ``idx``."""
  return _take(x_train, idx), y_train[idx], jnp.ones((len(idx),), dtype)


def _sgd_step(params, params0, batch, full_train, per_step, *, lam, lam_a, lr_a, extra,
              apply_fn, selective, block_of):
  """One step of both trained regimes; appends objective, distance, gate to per_step.

  ``full_train``: (x, y) of the whole training set for minibatch steps (the
  objective is the full-batch one at θ_t, not the minibatch loss), else None.
  """
  xb, yb, wb = batch
  if full_train is not None:
    pair = _outputs_pair(params["nonlinear"], params["linearized"], params0, full_train[0],
                         extra, apply_fn=apply_fn)
  new_params = {}
  for i, m in enumerate(REGIMES):
    new_params[m], loss, dist, on = _step(params[m], params0, xb, yb, wb, lam_a, lr_a, extra,
                                          mode=m, apply_fn=apply_fn, selective=selective,
                                          block_of=block_of)
    if full_train is not None:
      loss = _risk(pair[i], full_train[1])
    per_step[m]["objective"].append(float(loss) + 0.5 * lam * float(dist) ** 2)
    per_step[m]["distance"].append(float(dist))
    per_step[m]["gate"].append(float(on))
  return new_params


def _ridge_gaps(last, ridge_train, ridge_eval, y_train) -> dict:
  """Gaps of the final iterates to the kernel-ridge endpoint (the minimizer of J̄)."""
  _, fbar_t = last["train"]
  ridge = {"gap_linearized_train": rms(fbar_t.astype(np.float64) - np.asarray(ridge_train)),
           "risk": _risk(ridge_train, y_train)}
  if ridge_eval is not None:
    f_e, fbar_e = last["eval"]
    ridge["gap_linearized_eval"] = rms(fbar_e.astype(np.float64) - np.asarray(ridge_eval))
    ridge["gap_nonlinear_eval"] = rms(f_e.astype(np.float64) - np.asarray(ridge_eval))
    ridge["agree_nonlinear_eval"] = agreement(f_e, ridge_eval)
  return ridge


# --------------------------------------------------------------------------
# The experiment for one λ.


def run_regimes(apply_fn: Callable, params0, x_train, y_train, x_eval=None, y_eval=None, *,
                extra: tuple = (), lam: float, lr: float, steps: int,
                record_every: int = 1, batch_size: Optional[int] = None, seed: int = 0,
                selective: str = "none", block_of: Callable[[str], str] = lambda name: "all",
                kernels: Optional[tuple] = None, ntk_batch_size: Optional[int] = None,
                rtol: float = 1e-5) -> dict:
  """Runs the nonlinear, linearized and closed-form regimes for one λ and records gaps.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, C)``; examples independent.
    params0: θ0, the trainable pytree (its dtype sets the precision).
    x_train: n training inputs (pytree, leading example axis); y_train (n, C)
      one-hot (or regression) targets.
    x_eval: optional held-out inputs (N_eval, ...); y_eval: optional (N_eval, C)
      targets, only for the accuracies ``acc_*_eval`` (argmax vs argmax).
    extra: arrays passed through to apply_fn (e.g. frozen weights), not trained.
    lam: the pull λ ≥ 0; lr: the step η > 0; steps: T ≥ 1.
    record_every: k: records at t = 0, k, 2k, ..., and T.
    batch_size: None for full-batch GD, else minibatch SGD with the
      ``batch_order(n, batch_size, steps, seed)`` shared by both trained regimes.
    selective: pull gate, "none" | "global" | "per_block" (``ntkft.train.pull``).
    kernels: optional precomputed (K_train (nC, nC), K_eval_train (N_eval C, nC) or
      None) from ``flat_ntk``; computed here otherwise (reuse across a λ grid).
    rtol: tolerance of the monotonicity and bound checks (rounding).

  Returns:
    A JSON-able dict: ``records`` (one dict per recorded step), ``per_step``
    (objective, distance, gate per step and regime), ``checks`` (violation flags
    per regime), ``bounds`` and the scalars L, η·L, R(θ0), ``ridge`` endpoint gaps
    and ``closed_form_exact`` (whether f̄_t = f_cf(t) is expected).
  """
  if lam < 0 or not np.isfinite(lam):
    raise ValueError(f"run_regimes: lam must be finite and >= 0, got {lam}")
  if not lr > 0:
    raise ValueError(f"run_regimes: lr must be > 0, got {lr}")
  if steps < 1 or record_every < 1:
    raise ValueError(f"run_regimes: steps ({steps}) and record_every ({record_every}) "
                     "must be >= 1")
  pull._check(selective)
  y_train = jnp.asarray(y_train)
  if y_train.ndim != 2:
    raise ValueError(f"run_regimes: y_train must be (n, C), got {y_train.shape}")
  n = y_train.shape[0]
  dtype = jax.tree.leaves(params0)[0].dtype
  y_train = y_train.astype(dtype)
  extra = tuple(extra)
  lam_a, lr_a = jnp.asarray(lam, dtype), jnp.asarray(lr, dtype)
  full = batch_size is None or batch_size >= n
  order = None if full else batch_order(n, batch_size, steps, seed)
  ones = jnp.ones((n,), dtype)

  # Closed form (fully linear regime).
  if kernels is None:
    k_tt = flat_ntk(apply_fn, x_train, None, params0, *extra, batch_size=ntk_batch_size)
    k_et = None if x_eval is None else flat_ntk(apply_fn, x_eval, x_train, params0, *extra,
                                                batch_size=ntk_batch_size)
  else:
    k_tt, k_et = kernels
  params = {m: params0 for m in REGIMES}
  f0 = _current_outputs(params, params0, x_train, extra, apply_fn)[0]
  f0_eval = None if x_eval is None else _current_outputs(params, params0, x_eval, extra,
                                                          apply_fn)[0]
  predict = gradient_descent_mse_ntk(k_tt, y_train, f0, k_et, f0_eval, lam=lam,
                                     learning_rate=lr)
  try:
    ridge_train, ridge_eval = kernel_ridge(k_tt, y_train, f0, k_et, f0_eval, ridge=lam)
  except ValueError:  # λ = 0 with a singular K: no unique minimizer
    ridge_train = ridge_eval = None

  risk0 = _risk(f0, y_train)
  bound = objective_bound(risk0, lam)
  big_l = lipschitz(k_tt, n, lam)

  per_step = {m: {"objective": [], "distance": [], "gate": []} for m in REGIMES}
  records = []
  last = {}
  record_at = sorted(set(range(0, steps + 1, record_every)) | {steps})
  sets = {"train": (x_train, y_train), "eval": (x_eval, y_eval)}
  for t in range(steps + 1):
    if t in record_at:
      cf = dict(zip(("train", "eval"), predict(float(t))))
      row, last = _record(t, params, params0, sets, cf, apply_fn=apply_fn, extra=extra,
                          lam=lam)
      records.append({**row, "distance_bound": bound})
    if t == steps:  # θ_T: from the last record (t = T is always recorded)
      for m in REGIMES:
        per_step[m]["objective"].append(records[-1][f"objective_{m}"])
        per_step[m]["distance"].append(records[-1][f"dist_{m}"])
      break
    batch = (x_train, y_train, ones) if full else _minibatch(x_train, y_train, order[t], dtype)
    params = _sgd_step(params, params0, batch, None if full else (x_train, y_train), per_step,
                       lam=lam, lam_a=lam_a, lr_a=lr_a, extra=extra, apply_fn=apply_fn,
                       selective=selective, block_of=block_of)

  checks = {m: check_objective(per_step[m]["objective"], per_step[m]["distance"], bound,
                               rtol=rtol) for m in REGIMES}
  final = records[-1]
  ridge = {} if ridge_train is None else _ridge_gaps(last, ridge_train, ridge_eval, y_train)
  return {
      "lam": float(lam), "lr": float(lr), "steps": int(steps), "n_train": int(n),
      "n_eval": None if x_eval is None else int(jax.tree.leaves(x_eval)[0].shape[0]),
      "num_outputs": int(y_train.shape[1]), "batch_size": None if full else int(batch_size),
      "selective": selective, "dtype": str(dtype),
      "closed_form_exact": bool(full and selective == "none"),
      "risk0": risk0, "lipschitz": big_l, "lr_times_lipschitz": float(lr * big_l),
      "gd_stable": bool(lr * big_l < 2.0),
      "bounds": {"distance": bound,
                 "derivation": "lam/2 |theta_t-theta0|^2 <= J(theta_t) <= J(theta0) = R(theta0)"},
      "records": records, "per_step": per_step, "checks": checks,
      "num_violations": int(sum(c["num_objective_increases"] + c["num_bound_violations"]
                                for c in checks.values())),
      "final": final, "ridge": ridge,
  }
