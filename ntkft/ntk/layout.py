"""How per-example output axes map to empirical-NTK kernel axes.

For outputs ``f(x1)`` of shape ``(N1, *S)`` and ``f(x2)`` of shape
``(N2, *S')``, every per-example axis contributes two kernel axes
``(size1, size2)`` ("pair"), one axis if it is in ``diagonal_axes`` ("diag",
the diagonal of that pair), or none if it is in ``trace_axes`` ("trace",
reduced by the normalized trace). The kernel has shape
``(N1, N2) + Layout.shape_tail``; this is neural-tangents' convention (see
:mod:`ntkft.ntk.empirical`).
"""
import dataclasses
import string
from typing import Sequence, Union

import numpy as np

Axes = Union[int, Sequence[int]]


def as_axes(name: str, axes: Axes) -> tuple[int, ...]:
  """``axes`` (an int or a sequence of ints) as a tuple; ``name`` for errors."""
  if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
    return (int(axes),)
  if isinstance(axes, (tuple, list)) and all(
      isinstance(a, (int, np.integer)) and not isinstance(a, bool)
      for a in axes):
    return tuple(int(a) for a in axes)
  raise ValueError(f"{name} must be an int or a tuple of ints, got {axes!r}")


def is_traced(trace_axes: Axes, where: str) -> bool:
  """The two layouts of kernels of outputs (N, O) (budgeted kernels, sketches, operator).

  Returns:
    True for ``trace_axes=(-1,)`` (or ``(1,)``, ``-1``, ``1``): K (N1, N2), the
    mean over the O outputs; False for ``()``: K (N1, N2, O, O).

  Raises:
    ValueError: any other ``trace_axes``, naming ``where``.
  """
  axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
  if axes in ((-1,), (1,)):
    return True
  if axes == ():
    return False
  raise ValueError(f"{where} takes outputs (N, O) and trace_axes (-1,) or (); "
                   f"got trace_axes={trace_axes!r}")


@dataclasses.dataclass(frozen=True)
class Layout:
  """How the per-example output axes map to kernel axes (static, hashable).

  Attributes:
    out_ndim: ndim of one example's output (len(S)).
    kinds: per output axis: "pair" (two kernel axes), "diag" or "trace".
    trace_size: product of traced axis sizes (the normalization).
    shape_tail: kernel shape after (N1, N2).
  """
  out_ndim: int
  kinds: tuple[str, ...]
  trace_size: int
  shape_tail: tuple[int, ...]

  def _letters(self, extra: int):
    letters = iter(c for c in string.ascii_letters if c not in "ab")
    s1, s2, out = [], [], ["a", "b"]
    for kind in self.kinds:
      l1 = next(letters)
      if kind == "pair":
        l2 = next(letters)
        out += [l1, l2]
      else:
        l2 = l1
        if kind == "diag":
          out.append(l1)
      s1.append(l1)
      s2.append(l2)
    params = [next(letters) for _ in range(extra)]
    return "".join(s1), "".join(s2), "".join(params), "".join(out)

  def vp_spec(self) -> str:
    """einsum of the NTK-vp stack (n2, *S2, n1, *S1) -> kernel."""
    s1, s2, _, out = self._letters(0)
    return f"b{s2}a{s1}->{out}"

  def transpose_perm(self) -> tuple[int, ...]:
    """Permutation exchanging the roles of x1 and x2 in a kernel block."""
    perm, pos = [1, 0], 2
    for kind in self.kinds:
      if kind == "pair":
        perm += [pos + 1, pos]
        pos += 2
      elif kind == "diag":
        perm.append(pos)
        pos += 1
    return tuple(perm)


def output_layout(shape1: tuple[int, ...], shape2: tuple[int, ...],
                  trace_axes: tuple[int, ...],
                  diagonal_axes: tuple[int, ...]) -> Layout:
  """The layout of outputs of shapes (N1, *S) and (N2, *S'), axes validated.

  Raises:
    ValueError: different ranks, an axis out of range, the example axis 0,
      repeated or overlapping axes, or a traced/diagonal axis whose sizes differ.
  """
  ndim = len(shape1)
  if len(shape2) != ndim:
    raise ValueError(f"f(x1) has shape {shape1} but f(x2) has shape {shape2}; "
                     "they must have the same number of axes")

  def canon(name, axes):
    out = []
    for a in axes:
      if not -ndim <= a < ndim:
        raise ValueError(f"{name}={axes} out of range for outputs of shape "
                         f"{shape1} (ndim {ndim})")
      a %= ndim
      if a == 0:
        raise ValueError(f"{name}={axes} includes the example axis 0 of the "
                         f"outputs {shape1}; only per-example axes can be "
                         "traced or diagonalized")
      if a in out:
        raise ValueError(f"{name}={axes} repeats axis {a}")
      out.append(a)
    return out

  trace = canon("trace_axes", trace_axes)
  diag = canon("diagonal_axes", diagonal_axes)
  if set(trace) & set(diag):
    raise ValueError(f"trace_axes={trace_axes} and diagonal_axes="
                     f"{diagonal_axes} overlap")
  kinds, tail, trace_size = [], [], 1
  for axis in range(1, ndim):
    d1, d2 = shape1[axis], shape2[axis]
    if axis in trace or axis in diag:
      if d1 != d2:
        raise ValueError(f"output axis {axis} is traced/diagonal but has sizes "
                         f"{d1} (x1) and {d2} (x2)")
    if axis in trace:
      kinds.append("trace")
      trace_size *= d1
    elif axis in diag:
      kinds.append("diag")
      tail.append(d1)
    else:
      kinds.append("pair")
      tail += [d1, d2]
  return Layout(ndim - 1, tuple(kinds), trace_size, tuple(tail))
