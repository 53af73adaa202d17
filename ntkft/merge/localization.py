"""Kernel localization at θ0: how much of one task's kernel lies in another's top eigenspace.

Ortiz-Jimenez et al. 2023 (Sec. 5) tie weight disentanglement to NTK eigenfunctions
localized on each task's inputs. Here, per task t, Φ_t is the Jacobian of task t's
model at θ0 (its head h0_t fixed) on its n_t examples with respect to the shared
leaves (LoRA A and B), flattened over outputs: (n_t·O_t, P). With

  K_ss = Φ_s Φ_sᵀ = U Σ² Uᵀ,   K_ts = Φ_t Φ_sᵀ,

task s's top eigenspace is spanned by the r_s leading right singular vectors V_s of
Φ_s, r_s the smallest count holding a fraction ``energy`` of tr K_ss, and the energy
of task t's kernel in it is

  E(t | s) = ‖Φ_t V_s‖²_F / ‖Φ_t‖²_F = ‖K_ts U_r Σ_r⁻¹‖²_F / tr K_tt     (V_s = Φ_sᵀ U_r Σ_r⁻¹)

in [0, 1]; E(s | s) is the held fraction itself (≥ ``energy``). The pair's overlap is
O(s, t) = (E(t | s) + E(s | t)) / 2. Grams are float64 from float32 Jacobians (as
``ntkft.theta0.layer_sets``).
"""
import functools
from typing import Mapping

import numpy as np

from ntkft import data
from ntkft.merge import runs as runs_lib
from ntkft.merge import vectors
from ntkft.peft import combine
from ntkft.theta0.layer_sets import block_jacobians


@functools.lru_cache(maxsize=16)
def _shared_apply(apply_fn):
  """apply(shared, x, rest) of one model, the same object per model (jit caches key on it)."""
  return lambda shared, x, rest: apply_fn(combine(shared, rest), x)


def shared_jacobian(run: runs_lib.Run, encoded: data.Encoded, chunk_size: int = 0) -> np.ndarray:
  """(N·O, P) float32 Jacobian at θ0 of the run's model w.r.t. its shared leaves.

  Row i·O + o is output o of example i (``encoded``'s order); columns are the shared
  leaves in ``flatten`` order, each raveled, so Φ @ concat(ravel(τ_leaf)) = J(θ0) (τ, 0).
  The head stays at h0 (``trainable0``). The model's nonlinear function is used in either
  mode (the tangent model's Jacobian at θ0 is the same).
  """
  shared, head0 = vectors.split_head(run.trainable0)
  x = data.one_padded_batch(encoded)
  jac = block_jacobians(_shared_apply(run.apply_fn), shared, combine(head0, run.frozen), x,
                        lambda name: "shared", chunk_size)
  return jac["shared"]


def top_eigenspace(k_ss: np.ndarray, energy: float) -> tuple[np.ndarray, np.ndarray]:
  """(U_r (n, r), Σ_r (r,)) of K_ss = U Σ² Uᵀ: the fewest leading eigenpairs holding at least
  ``energy`` of the trace (eigenvalues below 0, rounding, count as 0).

  Raises:
    ValueError: ``energy`` outside (0, 1], or K_ss has no positive eigenvalue.
  """
  if not 0.0 < energy <= 1.0:
    raise ValueError(f"top_eigenspace: energy={energy} must be in (0, 1]")
  lam, u = np.linalg.eigh(np.asarray(k_ss, np.float64))
  lam, u = np.clip(lam[::-1], 0.0, None), u[:, ::-1]
  total = lam.sum()
  if total <= 0:
    raise ValueError("top_eigenspace: the kernel has no positive eigenvalue")
  r = int(np.searchsorted(np.cumsum(lam) / total, energy - 1e-12) + 1)
  return u[:, :r], np.sqrt(lam[:r])


def energy_in(k_ts: np.ndarray, trace_tt: float, u_r: np.ndarray, sigma_r: np.ndarray) -> float:
  """E(t | s) = ‖K_ts U_r Σ_r⁻¹‖²_F / tr K_tt (K_ts: (n_t, n_s) cross kernel)."""
  proj = np.asarray(k_ts, np.float64) @ (u_r / sigma_r[None, :])
  return float(np.sum(proj * proj) / trace_tt)


def energies(jacobians: Mapping[str, np.ndarray], energy: float = 0.9) -> dict:
  """E(t | s) for every ordered pair of tasks, from their (n_t, P) Jacobians.

  Returns:
    {"energy": {t: {s: E(t | s)}}, "rank": {s: r_s}, "trace": {t: tr K_tt},
     "overlap": {"t+s": O(t, s) for t before s in the given order}}
  """
  names = list(jacobians)
  phi = {t: np.asarray(j, np.float64) for t, j in jacobians.items()}
  widths = {j.shape[1] for j in phi.values()}
  if len(widths) != 1:
    raise ValueError(f"energies: Jacobians have different parameter counts {sorted(widths)}")
  trace = {t: float(np.sum(phi[t] * phi[t])) for t in names}
  tops = {s: top_eigenspace(phi[s] @ phi[s].T, energy) for s in names}
  out = {t: {s: energy_in(phi[t] @ phi[s].T, trace[t], *tops[s]) for s in names}
         for t in names}
  overlap = {f"{t}+{s}": (out[t][s] + out[s][t]) / 2
             for i, t in enumerate(names) for s in names[i + 1:]}
  return {"energy": out, "rank": {s: int(tops[s][0].shape[1]) for s in names},
          "trace": trace, "overlap": overlap}
