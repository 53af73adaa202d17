"""Closed-form training of the fully linearized model (kernel regression).

Conventions (shared with ``ntkft.train``):

* n training examples ``X`` with outputs ``f(X; theta)`` of shape (n, O) and
  targets ``Y`` of shape (n, O) (or (n,) for a single output).
* Empirical risk ``R(theta) = 1/(2n) sum_i |f(x_i; theta) - y_i|^2`` (summed
  over the O outputs, averaged over examples).
* L2 pull toward the pretrained point: ``lambda/2 |theta - theta0|^2``.
* Linearized model ``fbar(theta) = f0 + J (theta - theta0)`` with
  ``f0 = f(X; theta0)`` and ``J = df/dtheta`` at ``theta0``
  (``ntkft.linearize.tangent_apply_fn``), and the empirical NTK ``K = J J^T``.

Kernel layouts. Two shapes of ``k_train_train`` are accepted:

* (n, n), "shared": one kernel for every output column (the NTK with the output
  axis traced, ``trace_axes=(-1,)``). This is exact when the full per-output
  kernel ``K[i, o, j, p]`` equals ``K[i, j] delta_op``, as for a linear head on
  shared features; for other models it is the usual NTK approximation.
  ``y_train`` is (n,) or (n, O); each column is solved with the same ``K``.
* (nO, nO), "flattened": the full (n, O, n, O) kernel reshaped row-major, i.e.
  row ``i * O + o`` is output o of example i (``J`` of shape (n, O, P) reshaped
  to (nO, P)). ``y_train`` is (n, O) and is flattened the same way internally;
  results come back as (n, O). ``k_test_train`` is then (n_test O, nO).

The number of examples n that scales the ridge is always ``y_train.shape[0]``.

Kernel ridge (the minimizer). With ``d = theta - theta0``, the objective
``1/(2n) |f0 + J d - Y|^2 + lambda/2 |d|^2`` is strictly convex for
``lambda > 0``; its gradient ``J^T (f0 + J d - Y)/n + lambda d = 0`` is solved
by ``d* = J^T (K + n lambda I)^{-1} (Y - f0)`` (check: the residual is
``f0 + J d* - Y = -n lambda (K + n lambda I)^{-1} (Y - f0)``, so
``J^T residual / n = -lambda d*``). Hence

    fbar(X)  = f0  + K   (K + n lambda I)^{-1} (Y - f0),
    fbar(X*) = f0* + K*  (K + n lambda I)^{-1} (Y - f0),   K* = J* J^T.

The factor n multiplying lambda comes from the 1/(2n) in the risk. At
``lambda = 0`` with PD ``K`` this is the minimum-norm interpolant.

Gradient flow / descent. Let ``r = fbar(X) - Y``, ``r0 = f0 - Y``,
``Kn = K/n`` and ``A = Kn + lambda I``. In parameter space
``d' = -J^T r / n - lambda d = -(J^T J/n + lambda) d - J^T r0 / n`` with
``d(0) = 0``, so ``d(t) = -J^T h_t(A) r0 / n`` (push-through identity) with

    flow (t >= 0 real):  h_t(a) = (1 - exp(-a t)) / a       (-> t at a = 0)
    GD (step eta, t=k):  h_k(a) = (1 - (1 - eta a)^k) / a  (-> eta k at a = 0)

(GD: ``d_{k+1} = (I - eta B) d_k - eta J^T r0 / n``, ``B = J^T J/n + lambda``,
sums the geometric series ``eta sum_{j<k} (1 - eta a)^j``). Therefore

    fbar(X;  t) = f0  + Kn       h_t(A) (Y - f0),
    fbar(X*; t) = f0* + (K*/n)   h_t(A) (Y - f0),

evaluated in the eigenbasis ``Kn = V diag(sigma) V^T`` (``a_i = sigma_i +
lambda``). Equivalently ``r' = -A r + lambda r0`` so ``r(t) = r_inf + exp(-A t)
(r0 - r_inf)``, ``r_inf = lambda A^{-1} r0``, and the test offset
``u = fbar(X*) - f0*`` obeys ``u' = -K* r / n - lambda u``, ``u(0) = 0``
(GD: ``r_{k+1} = (I - eta A) r_k + eta lambda r0``,
``u_{k+1} = (1 - eta lambda) u_k - eta K* r_k / n``). As ``t -> inf`` with
``lambda > 0``, ``h -> 1/a`` and both equal ``kernel_ridge``. The a = 0 limits
(``sigma_i = 0`` and ``lambda = 0``) are taken explicitly, so nothing divides
by zero; ``expm1``/``log1p`` keep ``h`` accurate for small ``a``.

Like ``neural_tangents.predict.gradient_descent_mse`` but with ``lambda`` a pull
toward ``theta0`` (NT's ``diag_reg`` is a ridge on the kernel only).

Example::

  predict_fn = gradient_descent_mse_ntk(k_tt, y, fx0, k_st, fx0_test, lam=1e-3)
  fx_train, fx_test = predict_fn(jnp.array([0., 10., 100.]))  # (3, n, O), ...
"""
import functools
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from ntkft.spectral.stats import symmetric_part


class _Layout(NamedTuple):
  """How (n, O) outputs map onto the rows of a kernel."""
  n: int  # number of training examples
  mode: str  # "shared" or "flat"
  train_shape: tuple  # shape of y_train / fx_train
  test_shape: Optional[tuple]  # shape of fx_test_0


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _layout(k_train_train, y_train, fx_train_0, k_test_train, fx_test_0,
            where: str) -> _Layout:
  """Validates shapes and decides between the shared and flattened layouts."""
  if k_train_train.ndim != 2 or (k_train_train.shape[0] !=
                                 k_train_train.shape[1]):
    raise ValueError(f"{where}: k_train_train must be square (m, m), got "
                     f"{k_train_train.shape}")
  if y_train.ndim not in (1, 2) or y_train.shape[0] == 0:
    raise ValueError(f"{where}: y_train must be (n,) or (n, O), got "
                     f"{y_train.shape}")
  if fx_train_0.shape != y_train.shape:
    raise ValueError(f"{where}: fx_train_0 shape {fx_train_0.shape} != "
                     f"y_train shape {y_train.shape}")
  n = y_train.shape[0]
  num_out = 1 if y_train.ndim == 1 else y_train.shape[1]
  m = k_train_train.shape[0]
  if m == n:
    mode = "shared"
  elif m == n * num_out:
    mode = "flat"
  else:
    raise ValueError(
        f"{where}: k_train_train is {k_train_train.shape} but y_train is "
        f"{y_train.shape}; expected ({n}, {n}) (kernel shared by the outputs)"
        f" or ({n * num_out}, {n * num_out}) (flattened (n, O, n, O) kernel)")
  if (k_test_train is None) != (fx_test_0 is None):
    raise ValueError(f"{where}: pass both k_test_train and fx_test_0 or "
                     "neither")
  test_shape = None
  if k_test_train is not None:
    if fx_test_0.ndim != y_train.ndim or fx_test_0.shape[1:] != \
        y_train.shape[1:]:
      raise ValueError(f"{where}: fx_test_0 shape {fx_test_0.shape} does not "
                       f"match y_train shape {y_train.shape} beyond axis 0")
    n_test = fx_test_0.shape[0]
    rows = n_test if mode == "shared" else n_test * num_out
    if k_test_train.shape != (rows, m):
      raise ValueError(f"{where}: k_test_train shape {k_test_train.shape} != "
                       f"({rows}, {m}) expected from fx_test_0 "
                       f"{fx_test_0.shape} and k_train_train {(m, m)}")
    test_shape = tuple(fx_test_0.shape)
  return _Layout(n, mode, tuple(y_train.shape), test_shape)


def _to_columns(x, mode: str):
  """(n,) / (n, O) outputs -> (m, c) right-hand sides."""
  if mode == "flat":
    return x.reshape(-1, 1)
  return x.reshape(x.shape[0], -1)


def _inputs(where, k_train_train, y_train, fx_train_0, k_test_train, fx_test_0):
  """The five inputs as arrays (None stays None), their layout and float dtype."""
  arrays = tuple(None if a is None else jnp.asarray(a)
                 for a in (k_train_train, y_train, fx_train_0, k_test_train, fx_test_0))
  return arrays, _layout(*arrays, where), _float_dtype(*arrays)


def _float_dtype(*arrays):
  dtype = jnp.result_type(*[a for a in arrays if a is not None])
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(dtype, jnp.float32)
  return dtype


def _check_nonneg(value, name: str, where: str):
  if _is_concrete(value):
    value = float(value)
    if not np.isfinite(value) or value < 0.0:
      raise ValueError(f"{where}: {name} must be finite and >= 0, got {value}")


# --------------------------------------------------------------------------
# Kernel ridge.


@jax.jit
def _ridge_core(k_train_train, targets, f0, k_test_train, f0_test, reg):
  m = k_train_train.shape[0]
  k_sym = symmetric_part(k_train_train)
  chol = jnp.linalg.cholesky(k_sym + reg * jnp.eye(m, dtype=k_sym.dtype))
  coef = jax.scipy.linalg.cho_solve((chol, True), targets - f0)
  fx_train = f0 + k_sym @ coef
  fx_test = None if k_test_train is None else f0_test + k_test_train @ coef
  return fx_train, fx_test, jnp.min(jnp.diagonal(chol))


def kernel_ridge(k_train_train: Any, y_train: Any, fx_train_0: Any,
                 k_test_train: Any = None, fx_test_0: Any = None,
                 ridge: float = 0.0, relative_ridge: bool = False
                ) -> tuple[jax.Array, Optional[jax.Array]]:
  """Outputs of the linearized model at the minimizer of R + lambda/2|d|^2.

  ``fbar(X) = f0 + K (K + n lambda I)^{-1} (Y - f0)`` and
  ``fbar(X*) = f0* + K* (K + n lambda I)^{-1} (Y - f0)``; see the module
  docstring for the derivation and the kernel layouts.

  Args:
    k_train_train: (n, n) shared or (nO, nO) flattened kernel ``J J^T``
      (symmetrized internally).
    y_train: (n,) or (n, O) targets.
    fx_train_0: outputs at ``theta0``, same shape as ``y_train``.
    k_test_train: optional (n_test, n) or (n_test O, nO) kernel ``J* J^T``.
    fx_test_0: (n_test,) or (n_test, O) outputs at ``theta0`` (with
      ``k_test_train``).
    ridge: lambda >= 0, the same lambda as the L2 pull; the solver adds
      ``n * lambda`` to the diagonal of K.
    relative_ridge: multiply lambda by the mean diagonal ``trace(K)/m``
      (= trace(K)/n for an (n, n) kernel), making lambda scale-free.

  Returns:
    ``(fx_train, fx_test)`` with the shapes of ``y_train`` and ``fx_test_0``;
    ``fx_test`` is None without a test kernel.

  Raises:
    ValueError: inconsistent shapes, negative ridge, or ``K + n lambda I`` not
      numerically positive definite (e.g. ``ridge=0`` with a singular K).
  """
  where = "kernel_ridge"
  (k_train_train, y_train, fx_train_0, k_test_train, fx_test_0), layout, dtype = _inputs(
      where, k_train_train, y_train, fx_train_0, k_test_train, fx_test_0)
  _check_nonneg(ridge, "ridge", where)
  k_train_train = k_train_train.astype(dtype)
  lam = jnp.asarray(ridge, dtype)
  if relative_ridge:
    lam = lam * jnp.trace(k_train_train) / k_train_train.shape[0]
  reg = layout.n * lam
  fx_train, fx_test, min_pivot = _ridge_core(
      k_train_train,
      _to_columns(y_train.astype(dtype), layout.mode),
      _to_columns(fx_train_0.astype(dtype), layout.mode),
      None if k_test_train is None else k_test_train.astype(dtype),
      None if fx_test_0 is None else _to_columns(fx_test_0.astype(dtype),
                                                 layout.mode),
      reg)
  if _is_concrete(min_pivot) and not (np.isfinite(float(min_pivot)) and
                                      float(min_pivot) > 0.0):
    raise ValueError(
        f"{where}: K + n*lambda*I is not positive definite (Cholesky failed; "
        f"n={layout.n}, lambda={float(lam):.3e}, dtype={dtype}). With "
        "ridge=0 the kernel must be PD; a singular or rank-deficient K (e.g. "
        "more outputs than parameters) needs ridge > 0")
  fx_train = fx_train.reshape(layout.train_shape)
  if fx_test is not None:
    fx_test = fx_test.reshape(layout.test_shape)
  return fx_train, fx_test


# --------------------------------------------------------------------------
# Gradient flow / gradient descent.


def _h(a, t, learning_rate, gd: bool):
  """h_t(a) = (1 - E_t(a)) / a with its a = 0 limit; shape t.shape + a.shape."""
  a = a.reshape((1,) * t.ndim + a.shape)
  t = t.reshape(t.shape + (1,))
  zero = a == 0
  safe_a = jnp.where(zero, jnp.ones_like(a), a)
  if not gd:
    return jnp.where(zero, t, -jnp.expm1(-safe_a * t) / safe_a)
  x = learning_rate * a
  q = 1.0 - x
  # 0 < q: 1 - q^k = -expm1(k log1p(-x)) is accurate for small x.
  use_log = x < 1.0
  x_log = jnp.where(use_log, x, jnp.zeros_like(x))
  one_minus_qk_log = -jnp.expm1(t * jnp.log1p(-x_log))
  # q <= 0 (eta a >= 1): no cancellation; the sign of q^k needs integer k.
  odd = jnp.mod(t, 2.0) == 1.0
  sign = jnp.where((q < 0) & odd, -1.0, 1.0).astype(a.dtype)
  one_minus_qk_pow = 1.0 - sign * jnp.power(jnp.abs(q), t)
  num = jnp.where(use_log, one_minus_qk_log, one_minus_qk_pow)
  return jnp.where(zero, learning_rate * t, num / safe_a)


@functools.partial(jax.jit, static_argnames=("gd",))
def _gd_core(t, sigma, eigvecs, coef, f0, test_basis, f0_test, lam,
             learning_rate, gd):
  """fbar(t) from the eigendecomposition; ``t``'s axes lead the outputs."""
  lead = (1,) * t.ndim
  h = _h(sigma + lam, t, learning_rate, gd)
  sigma_h = sigma.reshape(lead + sigma.shape) * h
  fx_train = (f0.reshape(lead + f0.shape) +
              jnp.einsum("ij,...j,jc->...ic", eigvecs, sigma_h, coef))
  fx_test = None
  if test_basis is not None:
    fx_test = (f0_test.reshape(lead + f0_test.shape) +
               jnp.einsum("ij,...j,jc->...ic", test_basis, h, coef))
  return fx_train, fx_test


def gradient_descent_mse_ntk(
    k_train_train: Any, y_train: Any, fx_train_0: Any,
    k_test_train: Any = None, fx_test_0: Any = None, lam: float = 0.0,
    learning_rate: Optional[float] = None
) -> Callable[[Any], tuple[jax.Array, Optional[jax.Array]]]:
  """Linearized model trained by gradient flow or full-batch GD, in closed form.

  Minimizes ``R(theta) + lam/2 |theta - theta0|^2`` for the linearized model
  from ``theta0``; see the module docstring for the derivation. The kernel is
  eigendecomposed once here; each ``predict_fn(t)`` call costs two matmuls.

  Args:
    k_train_train, y_train, fx_train_0, k_test_train, fx_test_0: the kernels,
      targets and outputs at ``theta0``, as in :func:`kernel_ridge`.
    lam: L2 pull strength lambda >= 0.
    learning_rate: None for gradient flow (continuous t), else the GD step
      size eta (t counts steps and must be integer-valued). GD diverges when
      ``eta (sigma_max + lam) > 2``; a warning is emitted.

  Returns:
    ``predict_fn(t) -> (fx_train, fx_test)``. ``t`` is a scalar or an array of
    times/steps; its shape is prepended to the outputs, e.g. t of shape (T,)
    gives fx_train (T, n, O). ``fx_test`` is None without a test kernel.
    ``predict_fn(0)`` returns ``(fx_train_0, fx_test_0)``. It passes the
    eigendecomposition to a jitted core as arguments; wrapping ``predict_fn``
    itself in ``jax.jit`` works but bakes V and the kernels in as constants.
  """
  where = "gradient_descent_mse_ntk"
  (k_train_train, y_train, fx_train_0, k_test_train, fx_test_0), layout, dtype = _inputs(
      where, k_train_train, y_train, fx_train_0, k_test_train, fx_test_0)
  _check_nonneg(lam, "lam", where)
  gd = learning_rate is not None
  if gd and _is_concrete(learning_rate) and not float(learning_rate) > 0.0:
    raise ValueError(f"{where}: learning_rate must be > 0 or None (gradient "
                     f"flow), got {learning_rate}")
  k_n = k_train_train.astype(dtype) / layout.n
  sigma, eigvecs = jnp.linalg.eigh(symmetric_part(k_n))
  lam = jnp.asarray(lam, dtype)
  eta = jnp.asarray(learning_rate if gd else 0.0, dtype)
  if gd and _is_concrete(sigma):
    a_max = float(jnp.max(sigma) + lam)
    if float(eta) * a_max > 2.0:
      warnings.warn(f"{where}: learning_rate * (sigma_max + lam) = "
                    f"{float(eta) * a_max:.3g} > 2; gradient descent diverges", stacklevel=2)
  f0 = _to_columns(fx_train_0.astype(dtype), layout.mode)
  coef = eigvecs.T @ (_to_columns(y_train.astype(dtype), layout.mode) - f0)
  test_basis = f0_test = None
  if k_test_train is not None:
    test_basis = (k_test_train.astype(dtype) / layout.n) @ eigvecs
    f0_test = _to_columns(fx_test_0.astype(dtype), layout.mode)

  def predict_fn(t):
    t = jnp.asarray(t, dtype)
    if gd and _is_concrete(t):
      t_host = np.asarray(t)
      if np.any(t_host != np.round(t_host)) or np.any(t_host < 0):
        raise ValueError(f"{where}: with a learning_rate, t counts GD steps "
                         f"and must be non-negative integers, got {t_host}")
    fx_train, fx_test = _gd_core(t, sigma, eigvecs, coef, f0, test_basis,
                                 f0_test, lam, eta, gd=gd)
    fx_train = fx_train.reshape(t.shape + layout.train_shape)
    if fx_test is not None:
      fx_test = fx_test.reshape(t.shape + layout.test_shape)
    return fx_train, fx_test

  return predict_fn
