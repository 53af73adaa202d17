"""Classifiers on precomputed kernels: ridge, logistic regression, SVM, asymmetric LS-SVM.

The "fully linear" regime solves the kernel problem of the linearized model in
closed form (``ntkft.kernel.predict.kernel_ridge``). Following LM-Kernel-FT
(Malladi et al. 2023, "A Kernel-Based View of Language Model Fine-Tuning"),
the same kernel can be fit with other losses. Every solver here takes

  k_train_train  (n, n)       K(x_i, x_j) over the training examples,
  labels         (n,)         integer classes in [0, C),
  k_test_train   (m, n)       K(x*_a, x_j) for the examples to predict,

and returns class scores ``(m, C)`` (argmax = predicted class). ``K`` is a
kernel with the output axis traced (one (n, n) matrix shared by the classes, as
``ntk.empirical_ntk_fn(..., trace_axes=(-1,))`` returns).

Solvers (``SOLVERS``), each with one regularization ``reg`` = λ on the
objective ``(1/n) Σ_i loss_i + λ/2 ‖w‖²`` of a model that is linear in the
kernel's features φ (K = Φ Φᵀ), so λ means the same for all of them:

* ``ridge``: squared loss on one-hot targets around the outputs at θ0,
  ``f = f0 + K (K + nλ I)⁻¹ (Y − f0)``: ``kernel_ridge`` (the λ pull of the
  linearized model; needs ``fx_train_0``/``fx_test_0``, zeros otherwise).
* ``logistic``: multinomial kernel logistic regression, cross-entropy + λ/2‖w‖²
  with an unpenalized bias. Solved by scikit-learn's ``LogisticRegression``
  (C = 1/(nλ)) on the spectral features of K: ``K = V S Vᵀ`` gives train
  features ``Φ = V S^{1/2}`` and test features ``Φ* = K* V S^{-1/2}`` (the
  projection of φ(x*) on the span of the training features, where every
  minimizer's w lies by the representer theorem), eigenvalues below
  ``rtol · max`` dropped.
* ``svm``: soft-margin kernel SVM, hinge + λ/2‖w‖² with a bias, scikit-learn's
  ``SVC(kernel="precomputed", C=1/(nλ))`` (one-vs-one for C > 2; scores are
  its one-vs-rest decision values).
* ``asym_ls_svm``: least-squares SVM for asymmetric kernels (AsK-LS; He et al.
  2022, "Learning with Asymmetric Kernels: Least Squares and Feature
  Interpretation"), the solver LM-Kernel-FT uses for the Adam (SignGD) kernel
  ``K(x, x') = <J(x), sign J(x')> = <φ(x), ψ(x')>``. For targets y ∈ {±1}ⁿ
  and γ = 1/(nλ) it is the stationary point of

      ωᵀν + γ/2 Σ e_i² + γ/2 Σ r_i²
      s.t. y_i ωᵀφ(x_i) = 1 − e_i,  y_i νᵀψ(x_i) = 1 − r_i,

  whose KKT conditions (ν = Σ α_j y_j φ_j, ω = Σ β_j y_j ψ_j, e = α/γ,
  r = β/γ) are, with H_ij = y_i K(x_i, x_j) y_j,

      [ I/γ   H  ] [α]   [1]
      [ Hᵀ   I/γ ] [β] = [1].

  Scores: ``s(x) = w · ωᵀφ(x) + (1 − w) · νᵀψ(x)`` with
  ``ωᵀφ(x) = Σ_j β_j y_j K(x, x_j)`` (``k_test_train``) and
  ``νᵀψ(x) = Σ_j α_j y_j K(x_j, x)`` (``k_train_test``, the kernel the other
  way round), ``w = source_weight``. One machine per class (one-vs-rest). For
  a symmetric K, α = β and this is kernel ridge on ±1 targets with nλ = 1/γ.

For the sign (Adam) kernel, ``ridge``, ``logistic`` and ``svm`` use the symmetric
part ``(K + Kᵀ)/2`` of ``k_train_train`` (they need a symmetric kernel; the one
policy, ``ntkft.spectral.symmetric_kernel``) and ``k_test_train`` as is;
``asym_ls_svm`` uses both orientations.
"""
from typing import Optional

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from ntkft import targets as targets_lib
from ntkft.kernel.predict import kernel_ridge
from ntkft.spectral import symmetric_kernel

SOLVERS = ("ridge", "logistic", "svm", "asym_ls_svm")


def _check(k_train_train, labels, k_test_train, num_classes, where):
  """Float64 arrays with consistent shapes; integer labels in [0, C)."""
  k_tt = np.asarray(k_train_train, np.float64)
  k_st = np.asarray(k_test_train, np.float64)
  labels = np.asarray(labels)
  n = labels.shape[0]
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} "
                     f"{labels.shape}")
  if k_tt.shape != (n, n):
    raise ValueError(f"{where}: k_train_train shape {k_tt.shape} != ({n}, {n}) from labels")
  if k_st.ndim != 2 or k_st.shape[1] != n:
    raise ValueError(f"{where}: k_test_train shape {k_st.shape} != (m, {n})")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"{where}: labels must lie in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}]")
  return k_tt, labels, k_st


def _check_reg(reg, where):
  if not (np.isfinite(reg) and reg > 0):
    raise ValueError(f"{where}: reg must be finite and > 0, got {reg}")


def ridge_scores(k_train_train, labels, k_test_train, num_classes: int, reg: float,
                 fx_train_0: Optional[np.ndarray] = None,
                 fx_test_0: Optional[np.ndarray] = None) -> np.ndarray:
  """(m, C) outputs of kernel ridge on one-hot targets around f0 (``kernel_ridge``)."""
  where = "ridge_scores"
  k_tt, labels, k_st = _check(k_train_train, labels, k_test_train, num_classes, where)
  _check_reg(reg, where)
  n, m = len(labels), k_st.shape[0]
  f0 = np.zeros((n, num_classes)) if fx_train_0 is None else np.asarray(fx_train_0, np.float64)
  f0_test = (np.zeros((m, num_classes)) if fx_test_0 is None
             else np.asarray(fx_test_0, np.float64))
  targets = targets_lib.targets(np.asarray(labels), num_classes, False, np.float64)
  k_sym = symmetric_kernel(k_tt, "k_train_train", symmetrize=True)
  _, fx_test = kernel_ridge(k_sym, targets, f0, k_st, f0_test, ridge=reg)
  return np.asarray(fx_test, np.float64)


def spectral_features(k_train_train, k_test_train, rtol: float = 1e-10):
  """(Φ (n, r), Φ* (m, r)) with Φ Φᵀ = K (eigenvalues > rtol·max) and Φ* = K* V S^{-1/2}.

  Φ* Φᵀ = K* V Vᵀ: the test kernel projected on the span of the kept
  eigenvectors (equal to K* when K* lies in the span of K's rows, e.g. for
  K = J Jᵀ, K* = J* Jᵀ with J of full row rank).
  """
  s, v = np.linalg.eigh(symmetric_kernel(k_train_train, "k_train_train", symmetrize=True))
  keep = s > rtol * max(s.max(), 0.0)
  if not keep.any():
    raise ValueError("spectral_features: the kernel has no positive eigenvalue")
  s, v = s[keep], v[:, keep]
  return v * np.sqrt(s), (np.asarray(k_test_train, np.float64) @ v) / np.sqrt(s)


def logistic_scores(k_train_train, labels, k_test_train, num_classes: int, reg: float,
                    rtol: float = 1e-10, max_iter: int = 5000) -> np.ndarray:
  """(m, C) log-probabilities of multinomial kernel logistic regression.

  Minimizes ``(1/n) Σ_i CE(w·φ(x_i) + b, y_i) + λ/2 ‖w‖²`` over w in the
  kernel's feature space (see the module docstring), with scikit-learn.
  """
  where = "logistic_scores"
  k_tt, labels, k_st = _check(k_train_train, labels, k_test_train, num_classes, where)
  _check_reg(reg, where)
  phi, phi_test = spectral_features(k_tt, k_st, rtol)
  model = LogisticRegression(C=1.0 / (len(labels) * reg), tol=1e-10, max_iter=max_iter)
  model.fit(phi, labels)
  scores = np.full((k_st.shape[0], num_classes), -np.inf)
  scores[:, model.classes_] = model.predict_log_proba(phi_test)
  return scores


def svm_scores(k_train_train, labels, k_test_train, num_classes: int, reg: float
               ) -> np.ndarray:
  """(m, C) decision values of ``SVC(kernel="precomputed", C=1/(nλ))``."""
  where = "svm_scores"
  k_tt, labels, k_st = _check(k_train_train, labels, k_test_train, num_classes, where)
  _check_reg(reg, where)
  classes = np.unique(labels)
  if len(classes) < 2:
    raise ValueError(f"{where}: needs at least two classes among the labels, got {classes}")
  model = SVC(kernel="precomputed", C=1.0 / (len(labels) * reg), tol=1e-6,
              decision_function_shape="ovr")
  model.fit(symmetric_kernel(k_tt, "k_train_train", symmetrize=True), labels)
  decision = model.decision_function(k_st)
  scores = np.full((k_st.shape[0], num_classes), -np.inf)
  if len(classes) == 2:
    scores[:, classes] = np.stack([-decision, decision], axis=1)
  else:
    scores[:, model.classes_] = decision
  return scores


def asym_ls_svm_scores(k_train_train, labels, k_test_train, k_train_test, num_classes: int,
                       reg: float, source_weight: float = 0.5) -> np.ndarray:
  """(m, C) one-vs-rest scores of the asymmetric least-squares SVM (AsK-LS).

  Args:
    k_train_train: (n, n) K(x_i, x_j), asymmetric allowed.
    labels: (n,) classes.
    k_test_train: (m, n) K(x*_a, x_j).
    k_train_test: (n, m) K(x_j, x*_a) (the kernel the other way round; for a
      symmetric kernel, ``k_test_train.T``).
    num_classes: C.
    reg: λ; γ = 1/(nλ).
    source_weight: w in ``w ωᵀφ(x) + (1 − w) νᵀψ(x)``.
  """
  where = "asym_ls_svm_scores"
  k_tt, labels, k_st = _check(k_train_train, labels, k_test_train, num_classes, where)
  _check_reg(reg, where)
  k_ts = np.asarray(k_train_test, np.float64)
  n, m = len(labels), k_st.shape[0]
  if k_ts.shape != (n, m):
    raise ValueError(f"{where}: k_train_test shape {k_ts.shape} != ({n}, {m})")
  if not 0.0 <= source_weight <= 1.0:
    raise ValueError(f"{where}: source_weight must be in [0, 1], got {source_weight}")
  gamma = 1.0 / (n * reg)
  eye = np.eye(n) / gamma
  scores = np.zeros((m, num_classes))
  for c in range(num_classes):
    y = np.where(labels == c, 1.0, -1.0)
    h = y[:, None] * k_tt * y[None, :]
    system = np.block([[eye, h], [h.T, eye]])
    alpha_beta = np.linalg.solve(system, np.ones(2 * n))
    alpha, beta = alpha_beta[:n], alpha_beta[n:]
    source = k_st @ (beta * y)       # ωᵀφ(x*)
    target = k_ts.T @ (alpha * y)    # νᵀψ(x*)
    scores[:, c] = source_weight * source + (1.0 - source_weight) * target
  return scores


__all__ = ["SOLVERS", "asym_ls_svm_scores", "logistic_scores", "ridge_scores",
           "spectral_features", "svm_scores"]
