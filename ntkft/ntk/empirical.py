"""Exact empirical kernels: the NTK, per parameter block, and the sign (Adam) kernel.

For a model ``f(params, x, *extra)`` with per-example outputs ``f(x_n) in R^S``
(``S`` the per-example output shape, e.g. ``(C,)`` logits) and Jacobian
``J(x_n) = d f(x_n) / d params`` (shape ``S + (P,)``), the empirical NTK is

    K(x1_n, x2_m)[s, s'] = sum_p J(x1_n)[s, p] J(x2_m)[s', p],

the kernel of gradient flow on the linearized model (Jacot et al. 2018). Only
the leaves of ``params`` are differentiated; ``*extra`` (frozen weights, rng,
...) is passed through to ``apply_fn`` untouched, as jit arguments.

Output layout follows neural-tangents' ``empirical_ntk_fn`` exactly
(``neural_tangents/_src/empirical.py``). For an output ``f(x)`` of shape
``(N, *S)``, each output axis (in order) contributes two kernel axes
``(size1, size2)``, or one axis if it is in ``diagonal_axes`` (the diagonal of
that pair), or none if it is in ``trace_axes``. Traced axes are reduced by the
*normalized* trace, i.e. the mean over the traced index:

    trace_axes=(-1,)                    -> (N1, N2)      sum_c J1[c] . J2[c] / C
    trace_axes=()                       -> (N1, N2, C, C)
    trace_axes=(), diagonal_axes=(-1,)  -> (N1, N2, C)

.. warning::
  As in neural-tangents, ``trace_axes=(-1,)`` divides the trace by the size of
  the traced axis (``C``): it is the mean, not the sum, over logits. Multiply
  by ``C`` for the plain trace ``sum_c <J1[c], J2[c]>``.

Implementations (:class:`NtkImplementation`):

* ``"jacobian_contraction"``: per-example Jacobians ``jax.vmap`` over examples
  of ``jax.jacrev`` of the single-example function (cost ~ one forward and
  ``O`` backward passes per example), contracted leaf by leaf
  (``lax.dot_general`` per leaf, summed) in one jitted contraction.
* ``"ntk_vector_products"``: for each x2 example and output basis vector
  ``e``, ``v = J(x2_m)^T e`` by ``jax.vjp`` and then ``J(x1) v`` by
  ``jax.jvp`` over the x1 chunk; no Jacobian contraction, ``N1 N2 O`` jvp
  passes. Useful as an independent check and for wide outputs.

Chunking (:mod:`ntkft.ntk.engine`): ``batch_size`` (or ``memory_budget_bytes``, see
:mod:`ntkft.ntk.chunking`) splits x1 and x2 into example chunks; the kernel is
assembled block by block on the host. Per-chunk work is a jitted function
taking the params, ``extra`` and the x chunk as arguments (Jacobian of a chunk,
or NTK-vp stack of a chunk pair), followed by a jitted contraction; the Jacobian
of a row chunk is reused along its row. The last chunk is padded (by repeating
its first example) to the chunk size so that
every call has the same shapes and compiles once; the padding is sliced off.
When one example's Jacobian does not fit the budget, the parameter leaves are
split into groups differentiated one at a time (kernel = sum over groups).
With ``x2=None`` only blocks on and above the diagonal are computed; the rest
are mirrored, and diagonal blocks are symmetrized, so K is exactly symmetric.

Example:
  >>> ntk_fn = empirical_ntk_fn(apply_fn, trace_axes=(-1,))
  >>> k_train_train = ntk_fn(x_train, None, params, frozen)   # (N, N)
  >>> k_test_train = ntk_fn(x_test, x_train, params, frozen)  # (M, N)

References:
  Jacot, Gabriel, Hongler. "Neural Tangent Kernel", NeurIPS 2018.
  Novak et al. "Fast Finite Width Neural Tangent Kernel", ICML 2022.
  Malladi et al. "A Kernel-Based View of Language Model Fine-Tuning", ICML 2023
  (the sign kernel J sign(J)ᵀ of Adam / SignGD, :func:`sign_ntk_fn`).
"""
from typing import Callable, Optional, Sequence, Union

from ntkft.models import blocks as blocks_lib
from ntkft.ntk import engine as engine_lib
from ntkft.ntk.engine import NtkImplementation, OnChunk
from ntkft.ntk.layout import Axes
from ntkft.typing import PLAIN, SIGN, ApplyFn, Array, Params


def _engine(apply_fn: ApplyFn, block_of, kind: str, eps: Optional[float], *,
            trace_axes: Axes = (-1,), diagonal_axes: Axes = (),
            implementation: Union[NtkImplementation, str, int] = (
                NtkImplementation.JACOBIAN_CONTRACTION),
            batch_size: Optional[int] = None, memory_budget_bytes: Optional[int] = None,
            on_chunk: Optional[OnChunk] = None, length_buckets: Optional[Sequence[int]] = None,
            mask_key: str = "attention_mask", precision: str = "highest"):
  """The engine of a kernel function: the options of :func:`empirical_ntk_fn`, their defaults."""
  return engine_lib.make_engine(
      apply_fn, block_of=block_of, trace_axes=trace_axes, diagonal_axes=diagonal_axes,
      implementation=implementation, kind=kind, eps=eps, batch_size=batch_size,
      memory_budget_bytes=memory_budget_bytes, on_chunk=on_chunk,
      length_buckets=length_buckets, mask_key=mask_key, precision=precision)


def empirical_ntk_fn(
    apply_fn: ApplyFn,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    implementation: Union[NtkImplementation, str, int] = (
        NtkImplementation.JACOBIAN_CONTRACTION),
    **options,
) -> Callable[..., Array]:
  """Returns ``ntk_fn(x1, x2, params, *extra)``, the empirical NTK of apply_fn.

  Args:
    apply_fn: ``apply_fn(params, x, *extra) -> (N, *S)``; examples must not
      interact (no batch statistics): the engine evaluates it one example at a
      time under ``jax.vmap``.
    trace_axes: output axes to trace over (normalized trace, as in
      neural-tangents); never the example axis 0.
    diagonal_axes: output axes for which only the diagonal is kept.
    implementation: ``"jacobian_contraction"`` (default) or
      ``"ntk_vector_products"`` (or the :class:`NtkImplementation` values).
    **options: keyword-only, shared by :func:`per_block_ntk_fn` and
      :func:`sign_ntk_fn`:

      * ``batch_size``: example-chunk size; None (default) for no chunking.
      * ``memory_budget_bytes``: bound in bytes on the two chunk Jacobians of
        a block ((c1 + c2) O P itemsize); picks the chunk size and, if needed,
        splits the parameters into groups. Combined with ``batch_size`` by the
        minimum. None (default): no bound.
      * ``on_chunk``: called once per kernel block with a dict: ``rows``,
        ``cols`` ((start, stop) example ranges), ``chunk_size`` ((c1, c2)
        padded sizes), ``group``, ``num_groups``, ``num_params`` (parameter
        group), ``jacobian_bytes``, ``memory_budget_bytes``.
      * ``length_buckets``: e.g. ``(16, 32, 48, 64)``: compute each chunk's
        Jacobians in groups of examples cut to the shortest bucket that holds
        their real tokens (:mod:`ntkft.ntk.lengths`); same kernel, less work on
        padding. Needs dict inputs with a padding mask, a model whose outputs
        ignore padding, and ``"jacobian_contraction"``. Putting the rows back
        in order briefly holds two more copies of a chunk's Jacobians (outside
        ``memory_budget_bytes``). None (default): no cutting.
      * ``mask_key``: the padding mask's key in the inputs (default
        ``"attention_mask"``; for ``length_buckets``).
      * ``precision``: matmul precision of every traced matmul, model and
        contraction (:mod:`ntkft.ntk.precision`; ``"highest"`` by default: no
        TF32 on GPUs).

  Returns:
    ``ntk_fn(x1, x2, params, *extra) -> K``. ``x1``, ``x2``: pytrees of arrays
    with a leading example axis (``x2=None`` means x1, computed once and exactly
    symmetric). ``params``: the differentiated pytree. ``*extra``: passed to
    ``apply_fn`` as is (arrays; not differentiated). ``K`` has the layout in
    the module docstring, e.g. (N1, N2) for ``trace_axes=(-1,)``.

  Raises:
    ValueError: unknown implementation, malformed axes or sizes.
    TypeError: an unknown option.
  """
  engine = _engine(apply_fn, None, PLAIN, None, trace_axes=trace_axes,
                   diagonal_axes=diagonal_axes, implementation=implementation, **options)

  def ntk_fn(x1, x2, params: Params, *extra) -> Array:
    return engine(x1, x2, params, *extra)[engine_lib.WHOLE]

  return ntk_fn


def per_block_ntk_fn(apply_fn: ApplyFn, block_of: blocks_lib.BlockOf,
                     **options) -> Callable[..., dict[str, Array]]:
  """Returns ``fn(x1, x2, params, *extra) -> {block: K_b}`` with sum_b K_b = K.

  ``K_b`` is the NTK restricted to the parameters of block ``b``
  (``J_b(x1) J_b(x2)^T``), each with the layout of :func:`empirical_ntk_fn`.
  With ``"jacobian_contraction"`` the Jacobian is computed once and contracted
  leaf by leaf into the blocks; with ``"ntk_vector_products"`` each block costs
  its own vjp/jvp passes.

  Args:
    apply_fn: as in :func:`empirical_ntk_fn`.
    block_of: ``path -> block name`` over the '/'-joined leaf paths of params,
      a dict path -> name covering exactly those paths (e.g. from
      :func:`ntkft.ntk.block_names`), or a mode name ``"layer"``,
      ``"layer_projection"``, ``"leaf"``.
    **options: keyword-only: ``trace_axes``, ``diagonal_axes``,
      ``implementation`` and the options of :func:`empirical_ntk_fn`, with
      its defaults.

  Returns:
    The per-block kernel function; dict keys in order of first appearance in
    the leaves.

  Raises:
    ValueError / TypeError (at call time): block_of mismatching params or
    returning non-strings.
  """
  if isinstance(block_of, str):
    blocks_lib.block_of_fn(block_of)   # unknown mode -> error now
  engine = _engine(apply_fn, block_of, PLAIN, None, **options)

  def block_ntk_fn(x1, x2, params: Params, *extra) -> dict[str, Array]:
    return engine(x1, x2, params, *extra)

  return block_ntk_fn


def sign_ntk_fn(apply_fn: ApplyFn, *, eps: Optional[float] = None,
                **options) -> Callable[..., Array]:
  """Returns ``fn(x1, x2, params, *extra)``, the sign kernel (kind ``"sign"``).

  Malladi et al. (2023), "A Kernel-Based View of Language Model Fine-Tuning":
  early Adam behaves like SignGD, whose kernel (the "Adam kernel") is

      K(x1_n, x2_m)[s, s'] = sum_p J(x1_n)[s, p] sign(J(x2_m)[s', p]),

  with ``sign(j)`` replaced by ``j / sqrt(j^2 + eps^2)`` when ``eps`` is given.
  Layout and trace normalization as in :func:`empirical_ntk_fn`. Computed by
  Jacobian contraction only.

  .. warning::
    The kernel is asymmetric: K(x1, x2) != K(x2, x1)^T, and ``x2=None`` gives a
    non-symmetric (N, N) matrix. Put the *training* examples (whose gradient
    signs drive the update) in ``x2``. Analyse its symmetric part with
    ``ntkft.spectral.symmetric_kernel(K, symmetrize=True)`` (the one policy).

  Args:
    apply_fn: as in :func:`empirical_ntk_fn`.
    eps: None for the exact sign, or a positive smoothing constant.
    **options: keyword-only: ``trace_axes``, ``diagonal_axes`` and the options
      of :func:`empirical_ntk_fn`, with its defaults (``implementation`` only
      ``"jacobian_contraction"``).
  """
  engine = _engine(apply_fn, None, SIGN, eps, **options)

  def kernel_fn(x1, x2, params: Params, *extra) -> Array:
    return engine(x1, x2, params, *extra)[engine_lib.WHOLE]

  return kernel_fn
