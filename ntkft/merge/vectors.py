"""Task vectors and their algebra: pure functions over pytrees of arrays.

A run fine-tunes θ = (φ, h): φ the adapted parameters that every task shares
(LoRA A and B of the encoder; any encoder leaf a run trains) and h its own
classification head (the leaves under ``head/`` and ``pooler/``, see
:func:`is_head`), which is never merged. Its task vector is

  τ = φ_T − φ0                         (same pytree as φ, float64)

and a set of vectors τ_1..τ_T (one pytree structure, float64 arrays) combines by

  weighted_sum(τs, α) = Σ_t α_t τ_t    task addition (Ilharco et al. 2023), α_t = α for all
  negate(τ) = −τ                       task negation (= weighted_sum with α = −1)
  ties_merge(τs, k)                    TIES-merging (Yadav et al. 2023): trim, elect, disjoint mean
  apply_vector(φ0, τ) = φ0 + τ         cast back to φ0's dtypes

Vectors are float64 numpy arrays, so φ0 + 1·(φ_T − φ0) rounds back to φ_T
exactly: one run merged at α = 1 is that run, bit for bit.

TIES follows the authors' code (prateeky2806/ties-merging, ``src/utils/merge_utils.py``:
``topk_values_mask``, ``resolve_sign`` with "mass", ``disjoint_merge`` with
"dis-mean"; the merged model is φ0 + λ τ_m). Each vector is trimmed over all its
coordinates at once (every leaf raveled into one vector of d entries), keeping
|τ_i| ≥ the (d − ⌊k d⌋)-th smallest |τ_i|: the ⌊k d⌋ + 1 largest magnitudes (one
more than "top-k%", as ``torch.kthvalue`` with ``>=`` there; ties at the threshold
kept too). Hugging Face PEFT's ``ties`` (``peft/utils/merge_utils.py``) differs: it
keeps exactly ⌊k d⌋ per tensor, trims each tensor separately, elects + where the
sum is exactly 0 and weights the vectors before the disjoint mean.
"""
from typing import Callable, Sequence

import jax
import numpy as np

from ntkft.models import flatten, unflatten
from ntkft.typing import Params

HEAD_PREFIXES = ("head/", "pooler/")  # a task's own leaves ('/'-joined names)


def is_head(name: str) -> bool:
  """Whether the '/'-joined leaf ``name`` is a task's own (head, pooler), not shared."""
  return name.startswith(HEAD_PREFIXES)


def split_head(params: Params) -> tuple[dict, dict]:
  """(shared, head) nested dicts of ``params``' leaves (disjoint, same nesting)."""
  flat = flatten(params)
  return (unflatten({k: v for k, v in flat.items() if not is_head(k)}),
          unflatten({k: v for k, v in flat.items() if is_head(k)}))


def task_vector(trained: Params, theta0: Params) -> dict:
  """τ = φ_T − φ0 over the shared leaves of two same-named pytrees, in float64.

  Args:
    trained: the run's trained parameters θ_T (nested dict; head leaves ignored).
    theta0: its θ0 (same leaf names).

  Raises:
    ValueError: the two have different leaf names or shapes.
  """
  a, b = flatten(split_head(trained)[0]), flatten(split_head(theta0)[0])
  if set(a) != set(b):
    raise ValueError(f"task_vector: trained and θ0 leaves differ: "
                     f"{sorted(set(a) ^ set(b))[:3]}")
  out = {}
  for name in sorted(a):
    x, x0 = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
    if x.shape != x0.shape:
      raise ValueError(f"task_vector: leaf {name!r} has shape {x.shape} trained, {x0.shape} at θ0")
    out[name] = x - x0
  return unflatten(out)


def _check_same_structure(vectors: Sequence[Params], what: str) -> None:
  if not vectors:
    raise ValueError(f"{what}: no task vectors")
  first = jax.tree.structure(vectors[0])
  for i, v in enumerate(vectors[1:], 1):
    if jax.tree.structure(v) != first:
      raise ValueError(f"{what}: task vector {i} has another pytree structure than vector 0")


def weighted_sum(vectors: Sequence[Params], alphas: Sequence[float]) -> Params:
  """Σ_t α_t τ_t, leaf by leaf (task addition); one α per vector."""
  _check_same_structure(vectors, "weighted_sum")
  if len(alphas) != len(vectors):
    raise ValueError(f"weighted_sum: {len(alphas)} alphas for {len(vectors)} task vectors")
  total = jax.tree.map(lambda x: alphas[0] * np.asarray(x, np.float64), vectors[0])
  for alpha, v in zip(alphas[1:], vectors[1:]):
    total = jax.tree.map(lambda s, x, a=alpha: s + a * np.asarray(x, np.float64), total, v)
  return total


def negate(vector: Params) -> Params:
  """−τ (task negation: applied as φ0 − α τ it moves the model away from the task)."""
  return jax.tree.map(lambda x: -np.asarray(x, np.float64), vector)


def _ravel(vector: Params) -> tuple[np.ndarray, Callable]:
  """(d,) float64 concatenation of the leaves, and its inverse."""
  leaves, treedef = jax.tree.flatten(vector)
  leaves = [np.asarray(x, np.float64) for x in leaves]
  sizes = np.cumsum([x.size for x in leaves])[:-1]

  def unravel(flat: np.ndarray) -> Params:
    parts = np.split(flat, sizes)
    return jax.tree.unflatten(treedef, [p.reshape(x.shape) for p, x in zip(parts, leaves)])

  return (np.concatenate([x.ravel() for x in leaves]) if leaves else np.zeros(0)), unravel


def trim_top_k(x: np.ndarray, k: float) -> np.ndarray:
  """x of shape (d,) with entries below the trim threshold zeroed (the authors' top-k).

  Keeps |x_i| ≥ the (d − ⌊k d⌋)-th smallest |x| (1-based): the ⌊k d⌋ + 1 largest
  magnitudes (as ``topk_values_mask``), more on ties at the threshold; ⌊k d⌋ = 0
  keeps the largest, ⌊k d⌋ = d keeps all.
  """
  d = x.size
  keep = int(d * k)
  if keep >= d:
    return x.copy()
  threshold = np.partition(np.abs(x), d - keep - 1)[d - keep - 1]
  return np.where(np.abs(x) >= threshold, x, 0.0)


def elect_sign(trimmed: np.ndarray) -> np.ndarray:
  """(d,) elected signs of (T, d) trimmed vectors: sign(Σ_t τ_t), and where that sum
  is 0 the majority sign sign(Σ_i sign(Σ_t τ_ti)) over the coordinates."""
  sign = np.sign(trimmed.sum(axis=0))
  sign[sign == 0] = np.sign(sign.sum())
  return sign


def disjoint_mean(trimmed: np.ndarray, sign: np.ndarray) -> np.ndarray:
  """(d,) mean over t of the τ_ti whose sign is the elected sign_i (strictly: zeros never
  count; where sign_i ≤ 0 the negative entries count), 0 where none does."""
  agree = np.where(sign[None, :] > 0, trimmed > 0, trimmed < 0)
  return (trimmed * agree).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)


def ties_merge(vectors: Sequence[Params], k: float = 0.2) -> Params:
  """TIES-merging τ_m of task vectors (scale it by λ and add to φ0 to get the model).

  1. trim: each τ_t keeps its ⌊k d⌋ + 1 largest magnitudes (:func:`trim_top_k`);
  2. elect: per coordinate, the sign of the summed trimmed values (:func:`elect_sign`);
  3. disjoint mean: per coordinate, the mean of the trimmed values of that sign
     (:func:`disjoint_mean`).

  Args:
    vectors: T pytrees of one structure (d entries in all).
    k: kept fraction in (0, 1] (the authors' default top-20%: 0.2).
  """
  if not 0.0 < k <= 1.0:
    raise ValueError(f"ties k={k}: the kept fraction must be in (0, 1]")
  _check_same_structure(vectors, "ties_merge")
  flat, unravel = zip(*(_ravel(v) for v in vectors))
  trimmed = np.stack([trim_top_k(x, k) for x in flat])  # (T, d)
  return unravel[0](disjoint_mean(trimmed, elect_sign(trimmed)))


def scale(vector: Params, alpha: float) -> Params:
  """α τ."""
  return jax.tree.map(lambda x: alpha * np.asarray(x, np.float64), vector)


def apply_vector(theta0: Params, vector: Params) -> dict:
  """φ0 + τ on the shared leaves of ``theta0`` (cast to their dtypes); head leaves unchanged.

  Raises:
    ValueError: ``vector``'s leaf names are not the shared leaves of ``theta0``.
  """
  flat0, delta = flatten(theta0), flatten(vector)
  shared = {k for k in flat0 if not is_head(k)}
  if set(delta) != shared:
    raise ValueError(f"apply_vector: task vector leaves differ from θ0's shared leaves: "
                     f"{sorted(set(delta) ^ shared)[:3]}")
  out = {}
  for name, x0 in flat0.items():
    if name in delta:
      dtype = np.asarray(x0).dtype
      out[name] = (np.asarray(x0, np.float64) + delta[name]).astype(dtype)
    else:
      out[name] = x0
  return unflatten(out)
