"""Tests for ntkft.kernel.classifiers against primal solutions on explicit features.

Every kernel here is K = Φ Ψᵀ for random features (Ψ = Φ for symmetric kernels)
with fewer features than examples, so each kernel solver can be checked against
the same problem solved in feature space: a closed form (ridge, AsK-LS
stationarity) or scikit-learn on the raw features (logistic regression, SVM).
"""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from ntkft.kernel import classifiers

N, M, P = 40, 15, 6


def _data(num_classes, seed=0):
  rng = np.random.default_rng(seed)
  phi, phi_test = rng.normal(size=(N, P)), rng.normal(size=(M, P))
  w = rng.normal(size=(P, num_classes))
  labels = np.argmax(phi @ w + 0.5 * rng.normal(size=(N, num_classes)), axis=1)
  return phi, phi_test, labels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_ridge_matches_primal_ridge_on_features(num_classes):
  phi, phi_test, labels = _data(num_classes)
  rng = np.random.default_rng(1)
  f0, f0_test = rng.normal(size=(N, num_classes)), rng.normal(size=(M, num_classes))
  lam = 0.05
  got = classifiers.ridge_scores(phi @ phi.T, labels, phi_test @ phi.T, num_classes, lam,
                                 f0, f0_test)
  # argmin_w 1/(2n) |Φw - (Y - f0)|² + λ/2 |w|²
  y = np.eye(num_classes)[labels]
  w = np.linalg.solve(phi.T @ phi + N * lam * np.eye(P), phi.T @ (y - f0))
  want = f0_test + phi_test @ w
  # kernel_ridge runs in JAX's default float32.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("num_classes", [2, 3])
def test_logistic_matches_sklearn_on_raw_features(num_classes):
  # Kernel logistic regression only sees K = ΦΦᵀ and K* = Φ*Φᵀ; its spectral
  # features are a rotation of Φ, so it must equal linear LR on Φ itself.
  phi, phi_test, labels = _data(num_classes)
  lam = 0.02
  got = classifiers.logistic_scores(phi @ phi.T, labels, phi_test @ phi.T, num_classes, lam)
  ref = LogisticRegression(C=1 / (N * lam), tol=1e-12, max_iter=10000).fit(phi, labels)
  np.testing.assert_allclose(got, ref.predict_log_proba(phi_test), rtol=1e-5, atol=1e-6)


def test_logistic_probabilities_are_normalized_and_regularization_shrinks_them():
  phi, phi_test, labels = _data(3)
  k, k_test = phi @ phi.T, phi_test @ phi.T
  weak = classifiers.logistic_scores(k, labels, k_test, 3, 1e-4)
  strong = classifiers.logistic_scores(k, labels, k_test, 3, 1e3)
  np.testing.assert_allclose(np.exp(weak).sum(1), 1.0, rtol=1e-12)
  # λ → ∞ leaves only the (unpenalized) bias: the test rows all get the same scores.
  assert np.ptp(strong, axis=0).max() < 0.01 < 1.0 < np.ptp(weak, axis=0).max()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_svm_matches_linear_svc_on_raw_features(num_classes):
  phi, phi_test, labels = _data(num_classes)
  lam = 0.01
  got = classifiers.svm_scores(phi @ phi.T, labels, phi_test @ phi.T, num_classes, lam)
  ref = SVC(kernel="linear", C=1 / (N * lam), tol=1e-6).fit(phi, labels)
  np.testing.assert_array_equal(np.argmax(got, 1), ref.predict(phi_test))
  if num_classes == 2:
    np.testing.assert_allclose(got[:, 1], ref.decision_function(phi_test), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(got[:, 0], -got[:, 1])


def test_asym_ls_svm_is_kernel_ridge_on_pm1_targets_for_symmetric_kernels():
  phi, phi_test, labels = _data(3)
  k, k_test = phi @ phi.T, phi_test @ phi.T
  lam = 0.03
  got = classifiers.asym_ls_svm_scores(k, labels, k_test, k_test.T, 3, lam)
  for c in range(3):
    y = np.where(labels == c, 1.0, -1.0)
    np.testing.assert_allclose(got[:, c], k_test @ np.linalg.solve(k + N * lam * np.eye(N), y),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("source_weight", [0.0, 0.5, 1.0])
def test_asym_ls_svm_matches_primal_stationary_point(source_weight):
  # K(x, x') = <φ(x), ψ(x')>. Eliminating α = γ e, β = γ r from the KKT
  # conditions gives the primal system ν + γΦᵀΦω = γΦᵀy, ω + γΨᵀΨν = γΨᵀy.
  rng = np.random.default_rng(3)
  phi, phi_test, labels = _data(2)
  psi, psi_test = phi + 0.7 * rng.normal(size=(N, P)), phi_test + 0.7 * rng.normal(size=(M, P))
  lam = 0.05
  gamma = 1 / (N * lam)
  got = classifiers.asym_ls_svm_scores(phi @ psi.T, labels, phi_test @ psi.T, phi @ psi_test.T,
                                       2, lam, source_weight=source_weight)
  for c in range(2):
    y = np.where(labels == c, 1.0, -1.0)
    system = np.block([[gamma * phi.T @ phi, np.eye(P)], [np.eye(P), gamma * psi.T @ psi]])
    omega_nu = np.linalg.solve(system, gamma * np.concatenate([phi.T @ y, psi.T @ y]))
    omega, nu = omega_nu[:P], omega_nu[P:]
    want = source_weight * phi_test @ omega + (1 - source_weight) * psi_test @ nu
    np.testing.assert_allclose(got[:, c], want, rtol=1e-7, atol=1e-9)


def test_bad_inputs_raise_one_line_errors():
  phi, phi_test, labels = _data(2)
  k, k_test = phi @ phi.T, phi_test @ phi.T
  with pytest.raises(ValueError, match="k_train_train shape"):
    classifiers.ridge_scores(k[:-1, :-1], labels, k_test, 2, 0.1)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    classifiers.svm_scores(k, labels + 1, k_test, 2, 0.1)
  with pytest.raises(ValueError, match="reg must be finite and > 0"):
    classifiers.logistic_scores(k, labels, k_test, 2, 0.0)
  with pytest.raises(ValueError, match="k_train_test shape"):
    classifiers.asym_ls_svm_scores(k, labels, k_test, k_test, 2, 0.1)


@pytest.mark.parametrize("solver", ["ridge", "logistic", "svm"])
def test_symmetric_solvers_see_only_the_symmetric_part(solver):
  """ridge, logistic and svm fit (K + Kᵀ)/2 (ntkft.spectral's one policy): adding a
  skew-symmetric part to k_train_train changes nothing."""
  phi, phi_test, labels = _data(3)
  # K on a 2^-11 grid and an integer skew part: (K + S) + (K + S)ᵀ = 2K exactly, so
  # both calls must see the same symmetric kernel and agree bit for bit.
  k = np.round(phi @ phi.T * 1024) / 1024
  k = (k + k.T) / 2
  k_test = phi_test @ phi.T
  skew = np.triu(np.random.default_rng(2).integers(-3, 4, size=(N, N)), 1).astype(float)
  skew = skew - skew.T
  fn = {"ridge": classifiers.ridge_scores, "logistic": classifiers.logistic_scores,
        "svm": classifiers.svm_scores}[solver]
  sym = fn(k, labels, k_test, 3, 0.1)
  asym = fn(k + skew, labels, k_test, 3, 0.1)
  assert not np.array_equal(k + skew, (k + skew).T)
  np.testing.assert_array_equal(asym, sym)


def test_non_finite_kernel_is_an_error_naming_it():
  phi, phi_test, labels = _data(2)
  k, k_test = phi @ phi.T, phi_test @ phi.T
  k[0, 1] = np.nan
  for fn in (classifiers.ridge_scores, classifiers.logistic_scores, classifiers.svm_scores):
    with pytest.raises(ValueError, match="k_train_train has non-finite entries"):
      fn(k, labels, k_test, 2, 0.1)
