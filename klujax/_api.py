"""The public solve / dot / coalesce functions."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _partition, _rules  # noqa: F401  (register the rules and the partitioners)
from ._formats import SparseMatrix, matrix_args, require
from ._ops import bind, prim
from ._options import KLUOptions, as_options
from ._shapes import as_index, canonical


@partial(jax.jit, static_argnames="options")
def _solve(
    Ai: jax.Array, Aj: jax.Array, Ax: jax.Array, b: jax.Array, options: KLUOptions
) -> jax.Array:
    Ai, Aj, Ax, b3, layout = canonical("klujax.solve", Ai, Aj, Ax, b)
    x = bind(
        prim("solve", Ax.dtype), Ai, Aj, Ax, b3, transpose=False, retain=False, options=options
    )
    return layout.restore(x)


@jax.jit
def _dot(Ai: jax.Array, Aj: jax.Array, Ax: jax.Array, x: jax.Array) -> jax.Array:
    Ai, Aj, Ax, x3, layout = canonical("klujax.dot", Ai, Aj, Ax, x, b_name="x")
    return layout.restore(bind(prim("dot", Ax.dtype), Ai, Aj, Ax, x3))


def _host_checks(fn: str, Ai: Any, Aj: Any) -> None:
    # Host (NumPy) index arrays are range-checked before jax narrows them (x64 off).
    if isinstance(Ai, np.ndarray) or isinstance(Aj, np.ndarray):
        as_index(fn, "Ai", Ai)
        as_index(fn, "Aj", Aj)


def solve(
    Ai: ArrayLike | SparseMatrix,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    options: KLUOptions | None = None,
) -> jax.Array:
    """Solve ``A x = b`` for a sparse ``A`` given in COO form, with KLU.

    ``solve(A, b)`` takes a sparse matrix instead of ``(Ai, Aj, Ax)``: a
    ``jax.experimental.sparse.BCOO``/``BCSR`` (``(n, n)``, or ``(n_lhs, n, n)`` over one
    shared pattern, like a 2D ``Ax``) or a ``scipy.sparse`` matrix (outside ``jit``).

    Args:
        Ai: ``(n_nz,)`` integer row indices of the nonzeros (or the sparse matrix ``A``).
        Aj: ``(n_nz,)`` integer column indices of the nonzeros.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values; duplicate ``(Ai, Aj)`` entries add up.
        b: ``(n_col,)``, ``(n_col, n_rhs)`` (1D ``Ax``), ``(n_lhs, n_col)`` (2D ``Ax``) or
            ``(n_lhs, n_col, n_rhs)`` right-hand sides. A batch of 1 in ``Ax`` or ``b``
            broadcasts against the other's ``n_lhs``.
        options: :class:`klujax.KLUOptions` (static); default ``KLUOptions()``.

    Returns:
        ``x`` with the broadcast shape of ``b``: float64 or complex128 (float32 or
        complex64 when ``jax_enable_x64`` is off), always computed in double precision.
        Complex if either ``Ax`` or ``b`` is complex.

    Every solution's normwise backward error is measured and refined to ``1e-14`` (see
    :class:`klujax.KLUOptions`), whether its factorization is fresh or reuses a pivot
    order. A system whose matrix is singular gives NaN for that system only; the other
    members of a batch are unaffected. Out-of-range indices raise (at run time under ``jit``:
    ``jax.errors.JaxRuntimeError`` whose message names the argument). Works under
    ``jit``, ``vmap``, ``grad``/``jvp``/``jacfwd``/``jacrev`` (any order) w.r.t. ``Ax``
    and ``b``.
    """
    fn = "klujax.solve"
    Ai, Aj, Ax, b = matrix_args(fn, (Ai, Aj, Ax, b), 1, rhs="b")
    require(fn, Aj=Aj, Ax=Ax, b=b)
    _host_checks(fn, Ai, Aj)
    return _solve(Ai, Aj, Ax, b, options=as_options(fn, options))


def dot(
    Ai: ArrayLike | SparseMatrix,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    x: ArrayLike | None = None,
) -> jax.Array:
    """Multiply ``A x`` for a sparse ``A`` given in COO form (or ``dot(A, x)``).

    Shapes, broadcasting, dtypes and sparse-matrix inputs follow :func:`solve` with ``x``
    in place of ``b``; duplicate entries add up. Differentiable w.r.t. ``Ax`` and ``x``.

    Returns:
        ``b = A x`` with the broadcast shape of ``x``.
    """
    fn = "klujax.dot"
    Ai, Aj, Ax, x = matrix_args(fn, (Ai, Aj, Ax, x), 1, rhs="x")
    require(fn, Aj=Aj, Ax=Ax, x=x)
    _host_checks(fn, Ai, Aj)
    return _dot(Ai, Aj, Ax, x)


def coalesce(
    Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, *, size: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sum duplicate entries of a COO matrix and sort the entries by (row, column).

    Args:
        Ai: ``(n_nz,)`` integer row indices.
        Aj: ``(n_nz,)`` integer column indices.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values.
        size: number of entries to return. Needed only when ``Ai``/``Aj`` are traced
            (inside ``jit`` without being closed over); extra slots are filled with the
            no-op entry ``(0, 0, 0)`` and a too small ``size`` drops the largest entries.

    Returns:
        ``(Ai, Aj, Ax)`` with ``(n_unique,)``, ``(n_unique,)``, ``(..., n_unique)`` shapes
        (``size`` instead of ``n_unique`` when given). Differentiable w.r.t. ``Ax``.
    """
    fn = "klujax.coalesce"
    # Concrete indices (NumPy, or jax arrays closed over inside jit) are worked out with
    # NumPy, so the output size is known; traced ones need `size`.
    traced = isinstance(Ai, jax.core.Tracer) or isinstance(Aj, jax.core.Tracer)
    return _coalesce(fn, traced, Ai, Aj, Ax, size)


def _coalesce(
    fn: str, traced: bool, Ai: Any, Aj: Any, Ax: Any, size: int | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    xp: Any = jnp if traced else np
    Ai = xp.asarray(Ai)
    Aj = xp.asarray(Aj)
    Ax = jnp.asarray(Ax)
    for name, idx in (("Ai", Ai), ("Aj", Aj)):
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise TypeError(f"{fn}: {name} must be a 1D integer array, got {idx.dtype}{idx.shape}")
    if Ax.ndim not in (1, 2) or Ai.shape != Aj.shape or Ax.shape[-1] != Ai.shape[0]:
        raise ValueError(
            f"{fn}: expected Ai, Aj (n_nz,) and Ax (..., n_nz), got "
            f"{Ai.shape}, {Aj.shape}, {Ax.shape}"
        )
    order = xp.lexsort((Aj, Ai))
    si, sj = Ai[order], Aj[order]
    new = xp.concatenate(
        [xp.ones(min(1, si.shape[0]), bool), (si[1:] != si[:-1]) | (sj[1:] != sj[:-1])]
    )
    seg = xp.cumsum(new) - 1
    if size is None:
        if traced:
            raise ValueError(
                f"{fn}: Ai/Aj are traced, so the number of unique entries is "
                "unknown: pass size=... (or close over concrete indices)"
            )
        size = int(new.sum())
    slot = xp.where(seg < size, seg, size)  # out of bounds: dropped by mode="drop"
    idx_dtype = jax.dtypes.canonicalize_dtype(Ai.dtype)  # int64 -> int32 with x64 off
    out_i = jnp.zeros(size, idx_dtype).at[slot].set(si.astype(idx_dtype), mode="drop")
    out_j = jnp.zeros(size, idx_dtype).at[slot].set(sj.astype(idx_dtype), mode="drop")
    sx = jnp.moveaxis(Ax, -1, 0)[order]
    out_x = jnp.zeros((size, *sx.shape[1:]), Ax.dtype).at[slot].add(sx, mode="drop")
    return out_i, out_j, jnp.moveaxis(out_x, 0, -1)
