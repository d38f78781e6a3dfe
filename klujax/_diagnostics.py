"""What KLU knows about a matrix: rcond, condest, slogdet and the LU factors themselves."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _klujax
from ._formats import SparseMatrix, matrix_args, require
from ._handles import KLUHandleManager, handle_array
from ._ops import bind, prim
from ._options import KLUOptions, as_options
from ._shapes import as_index, canonical_values, compute_dtype, static_n_col

#: the ``what`` codes of the diagnostics primitive (src/diagnostics.hpp: Diag)
RCOND, CONDEST, SLOGDET = 0, 1, 2


@partial(jax.jit, static_argnames=("fn", "n_col", "what", "options"))
def _diagnose(
    Ai: Any, Aj: Any, Ax: Any, *, fn: str, n_col: int, what: int, options: KLUOptions
) -> jax.Array:
    ndim = jnp.ndim(Ax)
    Ai, Aj, Ax2 = canonical_values(fn, Ai, Aj, Ax)
    out = bind(prim("diagnostics", Ax2.dtype), Ai, Aj, Ax2, n_col=n_col, what=what, options=options)
    return out if ndim == 2 else out[0]


@partial(jax.jit, static_argnames="what")
def _diagnose_numeric(num: jax.Array, what: int) -> jax.Array:
    real = jax.dtypes.canonicalize_dtype(np.float64)
    out = bind(prim("diagnostics_numeric", real), num.reshape(-1), what=what)
    return out[:, 0].reshape(num.shape)


def _estimate(
    fn: str, what: int, Ai: Any, Aj: Any, Ax: Any, n_col: Any, options: KLUOptions | None
) -> jax.Array:
    if isinstance(Ai, KLUHandleManager) or (Aj is None and getattr(Ai, "dtype", None) == np.uint64):
        if Aj is not None or Ax is not None or n_col is not None:
            raise TypeError(f"{fn}: pass either a numeric handle alone or (Ai, Aj, Ax, n_col)")
        return _diagnose_numeric(handle_array(fn, "numeric", Ai, "numeric"), what)
    Ai, Aj, Ax, n_col = matrix_args(fn, (Ai, Aj, Ax, n_col), 0, n_col=True)
    if Aj is None or Ax is None or n_col is None:
        raise TypeError(f"{fn}: expected (Ai, Aj, Ax, n_col), a sparse matrix, or a numeric handle")
    out = _diagnose(
        Ai, Aj, Ax, fn=fn, n_col=static_n_col(fn, n_col), what=what, options=as_options(fn, options)
    )
    return out[..., 0].real


def rcond(
    Ai: ArrayLike | SparseMatrix | KLUHandleManager,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    n_col: int | None = None,
    *,
    options: KLUOptions | None = None,
) -> jax.Array:
    """KLU's cheap reciprocal pivot ratio ``min |u_kk| / max |u_kk|`` of ``A``'s LU factors.

    A crude, O(n) indicator (``klu_rcond``) of a nearly singular matrix; it depends on the
    pivot order and scaling (see :func:`condest` for a real condition estimate).

    Args:
        Ai: ``(n_nz,)`` row indices, a sparse matrix ``A`` alone (as for
            :func:`klujax.solve`), or a numeric handle (:func:`klujax.factor`) alone,
            whose current factorization is inspected.
        Aj: ``(n_nz,)`` column indices.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values (float or complex).
        n_col: the matrix size ``n`` (static int).
        options: :class:`klujax.KLUOptions` of the factorization.

    Returns:
        A real scalar, or ``(n_lhs,)`` for 2D ``Ax`` (the handle's shape for a handle):
        ``0`` for a singular matrix, ``NaN`` when ``Ax`` has NaN or Inf entries, else in
        ``(0, 1]``. Jittable; not differentiable. Each member is factored afresh.
    """
    return _estimate("klujax.rcond", RCOND, Ai, Aj, Ax, n_col, options)


def condest(
    Ai: ArrayLike | SparseMatrix | KLUHandleManager,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    n_col: int | None = None,
    *,
    options: KLUOptions | None = None,
) -> jax.Array:
    """KLU's estimate of the 1-norm condition number ``||A||_1 ||A^-1||_1`` (``klu_condest``).

    Hager/Higham's estimator on the LU factors: a few solves, usually within a small
    factor of the true value and never above it by more than rounding.

    Args:
        Ai: ``(n_nz,)`` row indices, a sparse matrix alone, or a numeric handle alone.
        Aj: ``(n_nz,)`` column indices.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values.
        n_col: the matrix size ``n`` (static int).
        options: :class:`klujax.KLUOptions` of the factorization.

    Returns:
        A real scalar or ``(n_lhs,)``: ``inf`` for a singular matrix, ``NaN`` when ``Ax``
        has NaN or Inf entries, else ``>= 1``. Jittable; not differentiable.
    """
    return _estimate("klujax.condest", CONDEST, Ai, Aj, Ax, n_col, options)


def slogdet(
    Ai: ArrayLike | SparseMatrix,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    n_col: int | None = None,
    *,
    options: KLUOptions | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sign and natural log of ``|det A|``, like ``jax.numpy.linalg.slogdet``.

    From the LU factors: ``det A = sign(P) sign(Q) prod(R) prod(diag U)`` with KLU's
    permutations ``P``, ``Q`` and row scale factors ``R`` (see :func:`lu`).

    Args:
        Ai: ``(n_nz,)`` row indices, or a sparse matrix ``A`` alone.
        Aj: ``(n_nz,)`` column indices.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values.
        n_col: the matrix size ``n`` (static int).
        options: :class:`klujax.KLUOptions` of the factorization.

    Returns:
        ``(sign, logabsdet)``, scalars or ``(n_lhs,)``: ``sign`` has ``Ax``'s dtype
        (``+-1``, or a unit complex number), ``logabsdet`` is real. A singular matrix
        gives ``sign = 0``, ``logabsdet = -inf``.

    Jittable, batchable, and differentiable w.r.t. ``Ax`` (first order):
    ``d logdet = sum_k dAx[k] (A^-T)[Ai[k], Aj[k]]``. The gradient costs one transposed
    solve per column of ``A`` (``n`` solves, ``O(n nnz(L+U))`` work, blocked 32 at a
    time), far more than ``slogdet`` itself (one factorization).
    """
    fn = "klujax.slogdet"
    Ai, Aj, Ax, n_col = matrix_args(fn, (Ai, Aj, Ax, n_col), 0, n_col=True)
    require(fn, Aj=Aj, Ax=Ax, n_col=n_col)
    out = _diagnose(
        Ai,
        Aj,
        Ax,
        fn=fn,
        n_col=static_n_col(fn, n_col),
        what=SLOGDET,
        options=as_options(fn, options),
    )
    return out[..., 0], out[..., 1].real


class KLUFactors(NamedTuple):
    """The factors of :func:`lu`; ``(A / R[:, None])[P][:, Q] == L @ U + F`` (dense)."""

    #: ``(n, n)`` unit lower triangular (block diagonal), BCOO
    L: Any
    #: ``(n, n)`` upper triangular (block diagonal), BCOO
    U: Any
    #: ``(n, n)`` the off-diagonal blocks of the block triangular form, BCOO
    F: Any
    #: ``(n,)`` row permutation
    P: np.ndarray
    #: ``(n,)`` column permutation
    Q: np.ndarray
    #: ``(n,)`` row scale factors (ones for ``scale="none"``)
    R: np.ndarray
    #: ``(n_blocks + 1,)`` boundaries of the diagonal blocks (in permuted order)
    blocks: np.ndarray


def lu(
    Ai: ArrayLike | SparseMatrix,
    Aj: ArrayLike | None = None,
    Ax: ArrayLike | None = None,
    n_col: int | None = None,
    *,
    options: KLUOptions | None = None,
) -> KLUFactors:
    """The factors KLU computes for one matrix: ``(A / R[:, None])[P][:, Q] = L @ U + F``.

    KLU permutes ``A`` to block upper triangular form (``btf``), scales its rows by ``R``
    (``scale``), and factors each diagonal block with partial pivoting: ``L`` (unit
    diagonal) and ``U`` hold the blocks' factors, ``F`` the entries above the diagonal
    blocks. ``R[i]`` is the scale factor of row ``i`` (ones with ``scale="none"``).

    Args:
        Ai: ``(n_nz,)`` row indices, or a sparse matrix ``A`` alone.
        Aj: ``(n_nz,)`` column indices.
        Ax: ``(n_nz,)`` values of one matrix (float or complex).
        n_col: the matrix size ``n``.
        options: :class:`klujax.KLUOptions` (ordering, btf, tol, scale).

    Returns:
        A :class:`KLUFactors` ``(L, U, F, P, Q, R, blocks)``: ``L``, ``U``, ``F`` are
        ``jax.experimental.sparse.BCOO`` of shape ``(n, n)``, the rest NumPy arrays.

    Not jittable: the factors' sizes depend on the values. Raises ``ValueError`` for a
    singular matrix.
    """
    from jax.experimental import sparse

    fn = "klujax.lu"
    Ai, Aj, Ax, n_col = matrix_args(fn, (Ai, Aj, Ax, n_col), 0, n_col=True)
    require(fn, Aj=Aj, Ax=Ax, n_col=n_col)
    n = static_n_col(fn, n_col)
    opts = as_options(fn, options)
    dtype = compute_dtype(fn, Ax=Ax)
    ai = np.asarray(as_index(fn, "Ai", Ai), np.int32)
    aj = np.asarray(as_index(fn, "Aj", Aj), np.int32)
    ax = np.asarray(Ax)
    if ax.ndim != 1 or ai.shape != ax.shape or aj.shape != ax.shape:
        raise ValueError(
            f"{fn}: expected Ai, Aj, Ax of one shape (n_nz,) (one matrix), got "
            f"{ai.shape}, {aj.shape}, {ax.shape}"
        )
    cplx = np.issubdtype(ax.dtype, np.complexfloating)
    ax = np.ascontiguousarray(ax, np.complex128 if cplx else np.float64)
    f = _klujax.lu(ai, aj, ax, n, opts.as_attribute())

    def matrix(p: np.ndarray, i: np.ndarray, x: np.ndarray) -> Any:
        cols = np.repeat(np.arange(n, dtype=np.int32), np.diff(p))
        vals = x.view(np.complex128) if cplx else x
        idx = np.stack([i, cols], axis=1) if len(i) else np.zeros((0, 2), np.int32)
        return sparse.BCOO((jnp.asarray(vals.astype(dtype)), jnp.asarray(idx)), shape=(n, n))

    R = np.empty(n)
    R[f["P"]] = f["Rs"]  # klu_extract gives the scale factors in pivot order
    return KLUFactors(
        L=matrix(f["Lp"], f["Li"], f["Lx"]),
        U=matrix(f["Up"], f["Ui"], f["Ux"]),
        F=matrix(f["Fp"], f["Fi"], f["Fx"]),
        P=f["P"],
        Q=f["Q"],
        R=R,
        blocks=f["R"],
    )
