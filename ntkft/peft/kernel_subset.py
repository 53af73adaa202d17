"""One call that picks the parameters a kernel is taken over: ``kernel_subset``.

The empirical NTK differentiates only the leaves passed as ``params``; every
other weight must travel to the model as a jit argument (a closure would make it
a compile-time constant). ``kernel_subset(model, spec)`` does that split once::

  spec = peft.PeftSpec(targets=("query", "value"), head=False)     # LoRA B·A only
  model = load_pretrained("minilm-l6", HeadConfig(2),
                          adapters=peft.adapters_for(spec, num_layers=6))
  sub = peft.kernel_subset(model, spec)
  k_train = sub.ntk_fn()(x_train)                  # (n, n), traced over logits
  k_test = sub.ntk_fn()(x_test, x_train)           # (m, n)
  k_sign = sub.ntk_fn("sign")(x_test, x_train)     # J(x_test) · sign J(x_train)

``spec`` is a ``PeftSpec`` (LoRA adapters, BitFit biases, whole layers, the
head) or an explicit iterable of '/'-joined parameter names.
"""
import dataclasses
from typing import Any, Callable, Iterable

import jax

from ntkft import ntk
from ntkft.models.functional import Model
from ntkft.peft.subsets import PeftSpec, combine, count, partition, trainable_names
from ntkft.typing import PLAIN, check_kernel_kind


@dataclasses.dataclass(frozen=True)
class KernelSubset:
  """A model split into the parameters a kernel differentiates and the rest.

  Attributes:
    apply_fn: ``apply_fn(trainable, x, frozen) -> (N, C)`` outputs (dropout
      off), the signature the kernel functions of ``ntkft.ntk`` call.
    trainable: nested dict of the differentiated leaves.
    frozen: nested dict of every other leaf.
    names: sorted '/'-joined names of the differentiated leaves.
  """
  apply_fn: Callable[..., jax.Array]
  trainable: dict
  frozen: dict
  names: tuple[str, ...]

  @property
  def num_params(self) -> int:
    return count(self.trainable)

  def outputs(self, x) -> jax.Array:
    """(N, C) model outputs at these parameters."""
    return jax.jit(self.apply_fn)(self.trainable, x, self.frozen)

  def ntk_fn(self, kind: str = PLAIN, **options: Any) -> Callable[..., jax.Array]:
    """``fn(x1, x2=None) -> K`` over this subset.

    Args:
      kind: "plain" (``ntk.empirical_ntk_fn``, K = J(x1) J(x2)ᵀ) or "sign"
        (``ntk.sign_ntk_fn``, K = J(x1) sign J(x2)ᵀ; put training examples
        in x2).
      **options: keyword arguments of those functions (trace_axes (default
        (-1,): mean over logits), batch_size, memory_budget_bytes,
        length_buckets, implementation for "plain", eps for "sign", ...).

    Raises:
      ValueError: an unknown kind (:func:`ntkft.typing.check_kernel_kind`).
    """
    check_kernel_kind(kind, "KernelSubset.ntk_fn")
    make = ntk.empirical_ntk_fn if kind == PLAIN else ntk.sign_ntk_fn
    fn = make(self.apply_fn, **options)

    def kernel(x1, x2=None) -> jax.Array:
      return fn(x1, x2, self.trainable, self.frozen)

    return kernel


def kernel_subset(model: Model, spec: PeftSpec | Iterable[str]) -> KernelSubset:
  """Splits ``model.params`` for a kernel over ``spec``'s parameters.

  Args:
    model: a ``Model`` (``load_pretrained``/``init_model``) built with the
      adapters ``spec`` needs (``peft.adapters_for(spec, num_layers)``).
    spec: a ``PeftSpec`` (its ``head`` field includes the head and pooler) or
      the '/'-joined names of the leaves to differentiate.

  Raises:
    ValueError: the spec selects no parameter, or names a missing one.
  """
  if isinstance(spec, PeftSpec):
    names = trainable_names(spec, model.params, model.config.num_layers)
  elif isinstance(spec, str):
    raise TypeError("kernel_subset: pass a PeftSpec or an iterable of names, not one string")
  else:
    names = sorted(spec)
    if not names:
      raise ValueError("kernel_subset: no parameter names given")
  trainable, frozen = partition(model.params, names)
  apply = model.apply_fn

  def apply_fn(params, x, frozen_params):
    return apply(combine(params, frozen_params), x)

  return KernelSubset(apply_fn, trainable, frozen, tuple(names))


__all__ = ["KernelSubset", "kernel_subset"]
