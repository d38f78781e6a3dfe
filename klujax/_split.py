"""The split API: analyze once, factor/refactor per matrix, solve per right-hand side."""

from __future__ import annotations

from functools import partial
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._formats import SparseMatrix, is_matrix, matrix_args, require, to_coo
from ._handles import KLUHandleManager, handle_array, warn_unowned
from ._ops import bind, effect_needed, handle_prim, prim
from ._options import KLUOptions, as_options
from ._shapes import as_index, canonical, canonical_rhs, compute_dtype, static_n_col
from ._shapes import canonical_values as _values

Handle: TypeAlias = KLUHandleManager | jax.Array


def _track(out: Any, *handles: Any) -> Any:
    """Lets owning managers wait for ``out`` before they free their native objects."""
    for h in handles:
        if isinstance(h, KLUHandleManager):
            h._track(out)
    return out


def _wrap(h: jax.Array, kind: str, dtype: Any = None) -> KLUHandleManager:
    traced = isinstance(h, jax.core.Tracer)
    if traced:
        warn_unowned(kind)
    return KLUHandleManager(h, kind=kind, dtype=dtype, owned=not traced)


# == analyze ==#


@partial(jax.jit, static_argnums=(2, 3, 4))
def _analyze(
    Ai: jax.Array, Aj: jax.Array, n_col: int, effect: bool, options: KLUOptions
) -> jax.Array:
    Ai = as_index("klujax.analyze", "Ai", Ai)
    Aj = as_index("klujax.analyze", "Aj", Aj)
    if Ai.shape != Aj.shape:
        raise ValueError(f"klujax.analyze: Ai {Ai.shape} and Aj {Aj.shape} differ in length")
    return bind(handle_prim("analyze"), Ai, Aj, n_col=n_col, effect=effect, options=options)


def analyze(
    Ai: ArrayLike | SparseMatrix,
    Aj: ArrayLike | None = None,
    n_col: int | None = None,
    *,
    options: KLUOptions | None = None,
) -> KLUHandleManager:
    """Symbolic analysis (ordering, block triangular form) of a sparsity pattern.

    ``analyze(A)`` takes the pattern of a sparse matrix (see :func:`klujax.solve`).

    Args:
        Ai: ``(n_nz,)`` row indices (duplicates allowed), or a sparse matrix ``A``.
        Aj: ``(n_nz,)`` column indices.
        n_col: the matrix size ``n`` (the matrix is ``n x n``); must be a Python int.
        options: :class:`klujax.KLUOptions`; ``ordering`` and ``btf`` apply here (the
            factorizations made with this handle use their own ``tol`` and ``scale``).

    Returns:
        A symbolic :class:`KLUHandleManager` (``handle`` shape ``()``). Every call returns
        its own handle, but handles of one pattern share a single analysis (also with
        :func:`klujax.solve`'s cache), so numeric handles factored through one work with
        any other.
    """
    if is_matrix(Ai):
        if Aj is not None or n_col is not None:
            raise TypeError("klujax.analyze: pass either a sparse matrix A or (Ai, Aj, n_col)")
        Ai, Aj, _, n_col = to_coo("klujax.analyze", Ai)
    require("klujax.analyze", Aj=Aj, n_col=n_col)
    n_col = static_n_col("klujax.analyze", n_col)
    opts = as_options("klujax.analyze", options)
    if isinstance(Ai, np.ndarray) or isinstance(Aj, np.ndarray):
        as_index("klujax.analyze", "Ai", Ai)
        as_index("klujax.analyze", "Aj", Aj)
    return _wrap(_analyze(Ai, Aj, n_col, effect_needed(), opts), "symbolic")


# == factor / refactor ==#


@partial(jax.jit, static_argnums=(4, 5))
def _factor(
    Ai: Any, Aj: Any, Ax: Any, sym: jax.Array, effect: bool, options: KLUOptions
) -> jax.Array:
    ndim = jnp.ndim(Ax)
    Ai, Aj, Ax2 = _values("klujax.factor", Ai, Aj, Ax)
    h = bind(prim("factor", Ax2.dtype), Ai, Aj, Ax2, sym, effect=effect, options=options)
    return h if ndim == 2 else h.reshape(())


def factor(
    Ai: ArrayLike | SparseMatrix,
    Aj: Any = None,
    Ax: Any = None,
    symbolic: Handle | None = None,
    *,
    options: KLUOptions | None = None,
) -> KLUHandleManager:
    """Numeric LU factorization(s) of ``A`` with a symbolic analysis (or ``factor(A, sym)``).

    Args:
        Ai: ``(n_nz,)`` row indices of the pattern ``symbolic`` was analysed from.
        Aj: ``(n_nz,)`` column indices of that pattern.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values: one factorization per batch member.
        symbolic: from :func:`analyze`.
        options: :class:`klujax.KLUOptions`; ``tol`` and ``scale`` apply here.

    Returns:
        A numeric :class:`KLUHandleManager`, ``handle`` of shape ``()`` or ``(n_lhs,)``.
        A singular member gives NaN when solved with.
    """
    Ai, Aj, Ax, symbolic = matrix_args("klujax.factor", (Ai, Aj, Ax, symbolic), 1)
    require("klujax.factor", Aj=Aj, Ax=Ax, symbolic=symbolic)
    sym = handle_array("klujax.factor", "symbolic", symbolic, "symbolic")
    dtype = compute_dtype("klujax.factor", Ax=Ax)
    opts = as_options("klujax.factor", options)
    return _wrap(
        _track(_factor(Ai, Aj, Ax, sym, effect_needed(), opts), symbolic), "numeric", dtype
    )


def _dependency_operands(dependency: Any) -> tuple[jax.Array, ...]:
    """Array leaves of ``dependency``: extra operands that order an op after them."""
    return tuple(
        jnp.asarray(x)
        for x in jax.tree_util.tree_leaves(dependency)
        if not isinstance(x, KLUHandleManager)
    )


@partial(jax.jit, static_argnums=(6, 7))
def _refactor(
    Ai: Any,
    Aj: Any,
    Ax: Any,
    num: jax.Array,
    sym: jax.Array,
    deps: tuple,
    effect: bool,
    options: KLUOptions,
) -> jax.Array:
    Ai, Aj, Ax2 = _values("klujax.refactor", Ai, Aj, Ax)
    out = bind(
        prim("refactor", Ax2.dtype),
        Ai,
        Aj,
        Ax2,
        num.reshape(-1),
        sym,
        *deps,
        effect=effect,
        options=options,
    )
    return out.reshape(num.shape)


def refactor(
    Ai: ArrayLike | SparseMatrix,
    Aj: Any = None,
    Ax: Any = None,
    numeric: Any = None,
    symbolic: Any = None,
    dependency: Any = None,
    *,
    options: KLUOptions | None = None,
) -> KLUHandleManager:
    """Refactor with new values, reusing the numeric objects' memory and pivot order.

    ``refactor(A, numeric, symbolic[, dependency])`` takes a sparse matrix instead.

    ``Ax`` is ``(n_nz,)`` or ``(n_lhs, n_nz)`` matching ``numeric``'s batch (or a single
    member for all). The old pivot order is kept unless the new pivots fail a cheap
    ratio test (``klu_rcond`` below 0.1x the last fresh factorization's), or the
    factorization was made with another ``tol``/``scale`` in ``options``; then the member
    is factored with fresh pivoting. A reused pivot order can still lose digits without
    failing that test: the solves with ``numeric`` check every solution's backward error
    and, where refinement does not reach the target, factor afresh from the values kept
    with the factorization (see :class:`klujax.KLUOptions`), so the answers are as
    accurate as a fresh factorization's.

    The native objects are updated in place (handles are references, as in klujax 0.5):
    every later use of ``numeric`` sees the new values. It returns the handle it updated
    as a new *value*: inside ``jit`` later solves and frees must consume that returned
    value, which orders them after the refactorization. A solve that must see the *old*
    factorization inside the same ``jit`` orders the refactorization after itself with
    ``dependency=`` (any pytree of arrays, e.g. that solve's result); without it XLA may
    run the refactorization first. Outside ``jit`` the returned manager is ``numeric``.
    """
    fn = "klujax.refactor"
    Ai, Aj, Ax, numeric, symbolic, dependency = matrix_args(
        fn, (Ai, Aj, Ax, numeric, symbolic, dependency), 3
    )
    require(fn, Aj=Aj, Ax=Ax, numeric=numeric, symbolic=symbolic)
    num = handle_array(fn, "numeric", numeric, "numeric")
    sym = handle_array(fn, "symbolic", symbolic, "symbolic")
    dtype = compute_dtype(fn, Ax=Ax)
    if (
        isinstance(numeric, KLUHandleManager)
        and numeric.dtype is not None
        and numeric.dtype != dtype
    ):
        raise TypeError(f"{fn}: numeric was factored as {numeric.dtype}, Ax is {dtype}")
    opts = as_options(fn, options)
    out = _track(
        _refactor(Ai, Aj, Ax, num, sym, _dependency_operands(dependency), effect_needed(), opts),
        numeric,
        symbolic,
    )
    if isinstance(numeric, KLUHandleManager) and not isinstance(out, jax.core.Tracer):
        numeric.handle = out
        return numeric
    return KLUHandleManager(out, kind="numeric", dtype=dtype, owned=False)


# == solves ==#


@partial(jax.jit, static_argnames=("transpose", "options"))
def _solve_with_symbol(
    Ai: Any, Aj: Any, Ax: Any, b: Any, sym: jax.Array, transpose: bool, options: KLUOptions
) -> jax.Array:
    fn = "klujax.tsolve_with_symbol" if transpose else "klujax.solve_with_symbol"
    Ai, Aj, Ax, b3, layout = canonical(fn, Ai, Aj, Ax, b)
    x = bind(
        prim("solve_with_symbol", Ax.dtype),
        Ai,
        Aj,
        Ax,
        b3,
        sym,
        transpose=transpose,
        retain=False,
        options=options,
    )
    return layout.restore(x)


def _symbol_solve(
    fn: str,
    Ai: Any,
    Aj: Any,
    Ax: Any,
    b: Any,
    symbolic: Any,
    transpose: bool,
    options: KLUOptions | None,
) -> jax.Array:
    Ai, Aj, Ax, b, symbolic = matrix_args(fn, (Ai, Aj, Ax, b, symbolic), 2, rhs="b")
    require(fn, Aj=Aj, Ax=Ax, b=b, symbolic=symbolic)
    sym = handle_array(fn, "symbolic", symbolic, "symbolic")
    out = _solve_with_symbol(
        Ai, Aj, Ax, b, sym, transpose=transpose, options=as_options(fn, options)
    )
    return _track(out, symbolic)


def solve_with_symbol(
    Ai: ArrayLike | SparseMatrix,
    Aj: Any = None,
    Ax: Any = None,
    b: Any = None,
    symbolic: Any = None,
    *,
    options: KLUOptions | None = None,
) -> jax.Array:
    """Solve ``A x = b`` reusing a symbolic analysis: factor (or refactor) + solve.

    Shapes, broadcasting, dtypes, sparse-matrix inputs (``solve_with_symbol(A, b, sym)``),
    the accuracy check and the NaN policy are those of :func:`klujax.solve`; ``options`` (:class:`klujax.KLUOptions`) gives ``tol``,
    ``scale`` and the check (the ordering is the symbolic handle's). Differentiable
    w.r.t. ``Ax`` and ``b``; batchable over ``Ax`` and ``b``.
    """
    return _symbol_solve("klujax.solve_with_symbol", Ai, Aj, Ax, b, symbolic, False, options)


def tsolve_with_symbol(
    Ai: ArrayLike | SparseMatrix,
    Aj: Any = None,
    Ax: Any = None,
    b: Any = None,
    symbolic: Any = None,
    *,
    options: KLUOptions | None = None,
) -> jax.Array:
    """Solve ``A^T x = b`` (plain transpose, also for complex); see :func:`solve_with_symbol`."""
    return _symbol_solve("klujax.tsolve_with_symbol", Ai, Aj, Ax, b, symbolic, True, options)


@partial(jax.jit, static_argnames=("transpose", "ax_ndim", "dtype", "options"))
def _solve_with_numeric(
    num: jax.Array,
    b: Any,
    sym: jax.Array,
    transpose: bool,
    ax_ndim: int,
    dtype: Any,
    options: KLUOptions,
) -> jax.Array:
    fn = "klujax.tsolve_with_numeric" if transpose else "klujax.solve_with_numeric"
    # Factorizations are double precision whatever dtype they were made from, so only
    # real vs complex matters: the result dtype is the usual one for (numeric, b).
    out_dtype = compute_dtype(fn, b=b, numeric=np.zeros((), dtype or np.float64))
    b = jnp.asarray(b)
    num1 = num.reshape(-1)
    b3, layout = canonical_rhs(fn, b, num1.shape[0], ax_ndim, lhs_name="numeric")
    if (
        dtype is not None
        and np.issubdtype(out_dtype, np.complexfloating)
        and not np.issubdtype(dtype, np.complexfloating)
    ):
        # A real factorization with a complex b: solve the two halves.
        real = compute_dtype(fn, numeric=np.zeros((), np.float64))
        p = prim("solve_with_numeric", real)
        re = bind(p, num1, b3.real.astype(real), sym, transpose=transpose, options=options)
        im = bind(p, num1, b3.imag.astype(real), sym, transpose=transpose, options=options)
        return layout.restore(jax.lax.complex(re, im))
    p = prim("solve_with_numeric", out_dtype)
    return layout.restore(
        bind(p, num1, b3.astype(out_dtype), sym, transpose=transpose, options=options)
    )


def _numeric_solve(
    fn: str,
    numeric: Handle,
    b: ArrayLike,
    symbolic: Handle,
    transpose: bool,
    options: KLUOptions | None,
) -> jax.Array:
    num = handle_array(fn, "numeric", numeric, "numeric")
    sym = handle_array(fn, "symbolic", symbolic, "symbolic")
    dtype = numeric._dtype_name if isinstance(numeric, KLUHandleManager) else None
    out = _solve_with_numeric(
        num,
        b,
        sym,
        transpose=transpose,
        ax_ndim=num.ndim + 1,
        dtype=dtype,
        options=as_options(fn, options),
    )
    return _track(out, numeric, symbolic)


def solve_with_numeric(
    numeric: Handle, b: ArrayLike, symbolic: Handle, *, options: KLUOptions | None = None
) -> jax.Array:
    """Solve ``A x = b`` with existing factorization(s): the triangular solves, checked.

    ``numeric`` with ``handle`` of shape ``()`` acts like a 1D ``Ax``, shape ``(n_lhs,)``
    like a 2D one, for the shape rules of :func:`klujax.solve`. ``symbolic`` may be any
    symbolic handle of the same pattern. ``options`` gives the accuracy check
    (``check``, ``refine``, ``target`` of :class:`klujax.KLUOptions`): a factorization
    that reuses a pivot order (:func:`refactor`) or pivoted loosely (UMFPACK) and misses
    the target after refinement is factored afresh, strictly, in place. Differentiable w.r.t. ``b`` (its transpose is the
    transposed solve on the same factorization); batchable over ``b`` and ``numeric``.
    """
    return _numeric_solve("klujax.solve_with_numeric", numeric, b, symbolic, False, options)


def tsolve_with_numeric(
    numeric: Handle, b: ArrayLike, symbolic: Handle, *, options: KLUOptions | None = None
) -> jax.Array:
    """Solve ``A^T x = b`` with existing factorization(s); see :func:`solve_with_numeric`."""
    return _numeric_solve("klujax.tsolve_with_numeric", numeric, b, symbolic, True, options)


def refactor_and_solve(
    Ai: ArrayLike | SparseMatrix,
    Aj: Any = None,
    Ax: Any = None,
    b: Any = None,
    numeric: Any = None,
    symbolic: Any = None,
    *,
    options: KLUOptions | None = None,
) -> tuple[jax.Array, KLUHandleManager]:
    """Refactor ``numeric`` in place with new values ``Ax``, then solve ``A x = b``.

    Equivalent to ``num = refactor(Ai, Aj, Ax, numeric, symbolic)`` followed by
    ``solve_with_numeric(num, b, symbolic)``; later solves with ``numeric`` see the new
    factorization. Shapes as :func:`klujax.solve`. Differentiable w.r.t. ``b`` only (use
    :func:`solve_with_symbol` for ``Ax``).

    Returns:
        ``(x, numeric)`` as in klujax 0.5: the solution and the refactored handle. Inside
        ``jit``, later solves must consume this returned handle, which orders them after
        the refactorization.
    """
    fn = "klujax.refactor_and_solve"
    Ai, Aj, Ax, b, numeric, symbolic = matrix_args(
        fn, (Ai, Aj, Ax, b, numeric, symbolic), 3, rhs="b"
    )
    require(fn, Aj=Aj, Ax=Ax, b=b, numeric=numeric, symbolic=symbolic)
    num = refactor(Ai, Aj, Ax, numeric, symbolic, options=options)
    return solve_with_numeric(num, b, symbolic, options=options), num


# == free ==#


@partial(jax.jit, static_argnums=(2, 3))
def _free_jit(arr: jax.Array, deps: tuple, kind: str, effect: bool) -> jax.Array:
    return bind(handle_prim(f"free_{kind}"), arr.reshape(-1), *deps, effect=effect)


def _free(fn: str, kind: str, h: Handle, dependency: Any) -> jax.Array:
    arr = (
        handle_array(fn, kind, h, kind)
        if not (isinstance(h, KLUHandleManager) and h.closed)
        else None
    )
    if arr is None:
        return jnp.zeros((), jnp.int32)  # already freed: freeing twice is harmless
    # The dependency's arrays are operands of the free: a data dependency that XLA must
    # respect (an optimization barrier alone does not order side effects on CPU).
    out = _free_jit(arr, _dependency_operands(dependency), kind, effect_needed())
    if isinstance(h, KLUHandleManager):
        h._disown()
        h.owned = True  # it was freed through this manager: report it as closed
    return out


def free_symbolic(symbolic: Handle, dependency: Any = None) -> jax.Array:
    """Free a symbolic handle (after ``dependency``, any pytree, has been computed).

    Freeing twice, or freeing a manager already closed, is harmless. Returns the number
    of native objects released (an int32 scalar).
    """
    return _free("klujax.free_symbolic", "symbolic", symbolic, dependency)


def free_numeric(numeric: Handle, dependency: Any = None) -> jax.Array:
    """Free numeric handle(s) (after ``dependency`` has been computed); see :func:`free_symbolic`."""
    return _free("klujax.free_numeric", "numeric", numeric, dependency)
