"""The split API: analyze once, factor/refactor per matrix, solve per right-hand side."""

from __future__ import annotations

import operator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._handles import KLUHandleManager, handle_array, warn_unowned
from ._ops import effect_needed, handle_prim, prim
from ._shapes import as_index, canonical, canonical_rhs, compute_dtype

Handle = KLUHandleManager | jax.Array


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


#== analyze ==#

@partial(jax.jit, static_argnums=(2, 3))
def _analyze(Ai: jax.Array, Aj: jax.Array, n_col: int, effect: bool) -> jax.Array:
    Ai = as_index("klujax.analyze", "Ai", Ai)
    Aj = as_index("klujax.analyze", "Aj", Aj)
    if Ai.shape != Aj.shape:
        raise ValueError(f"klujax.analyze: Ai {Ai.shape} and Aj {Aj.shape} differ in length")
    return handle_prim("analyze").bind(Ai, Aj, n_col=n_col, effect=effect)


def analyze(Ai: ArrayLike, Aj: ArrayLike, n_col: int) -> KLUHandleManager:
    """Symbolic analysis (ordering, block triangular form) of a sparsity pattern.

    Args:
        Ai: ``(n_nz,)`` row indices (duplicates allowed).
        Aj: ``(n_nz,)`` column indices.
        n_col: the matrix size ``n`` (the matrix is ``n x n``); must be a Python int.

    Returns:
        A symbolic :class:`KLUHandleManager` (``handle`` shape ``()``). Every call returns
        its own handle, but handles of one pattern share a single analysis (also with
        :func:`klujax.solve`'s cache), so numeric handles factored through one work with
        any other.
    """
    try:
        n_col = operator.index(n_col)  # ints and integer scalars; not 5.7, not tracers
    except TypeError:
        raise TypeError(f"klujax.analyze: n_col must be a static Python int, got {n_col!r}") from None
    if n_col < 0:
        raise ValueError(f"klujax.analyze: n_col must be >= 0, got {n_col}")
    if isinstance(Ai, np.ndarray) or isinstance(Aj, np.ndarray):
        as_index("klujax.analyze", "Ai", Ai)
        as_index("klujax.analyze", "Aj", Aj)
    return _wrap(_analyze(Ai, Aj, n_col, effect_needed()), "symbolic")


#== factor / refactor ==#

def _values(fn: str, Ai: Any, Aj: Any, Ax: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    dtype = compute_dtype(fn, Ax=Ax)
    Ai, Aj = as_index(fn, "Ai", Ai), as_index(fn, "Aj", Aj)
    Ax = jnp.asarray(Ax)
    if Ax.ndim not in (1, 2) or Ai.shape != (Ax.shape[-1],) or Aj.shape != Ai.shape:
        raise ValueError(f"{fn}: expected Ai, Aj (n_nz,) and Ax (n_nz,) or (n_lhs, n_nz), got "
                         f"{Ai.shape}, {Aj.shape}, {Ax.shape}")
    return Ai, Aj, (Ax if Ax.ndim == 2 else Ax[None]).astype(dtype)


@partial(jax.jit, static_argnums=4)
def _factor(Ai: Any, Aj: Any, Ax: Any, sym: jax.Array, effect: bool) -> jax.Array:
    ndim = jnp.ndim(Ax)
    Ai, Aj, Ax2 = _values("klujax.factor", Ai, Aj, Ax)
    h = prim("factor", Ax2.dtype).bind(Ai, Aj, Ax2, sym, effect=effect)
    return h if ndim == 2 else h.reshape(())


def factor(Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, symbolic: Handle) -> KLUHandleManager:
    """Numeric LU factorization(s) of ``A`` with a symbolic analysis.

    Args:
        Ai: ``(n_nz,)`` row indices of the pattern ``symbolic`` was analysed from.
        Aj: ``(n_nz,)`` column indices of that pattern.
        Ax: ``(n_nz,)`` or ``(n_lhs, n_nz)`` values: one factorization per batch member.
        symbolic: from :func:`analyze`.

    Returns:
        A numeric :class:`KLUHandleManager`, ``handle`` of shape ``()`` or ``(n_lhs,)``.
        A singular member gives NaN when solved with.
    """
    sym = handle_array("klujax.factor", "symbolic", symbolic, "symbolic")
    dtype = compute_dtype("klujax.factor", Ax=Ax)
    return _wrap(_track(_factor(Ai, Aj, Ax, sym, effect_needed()), symbolic), "numeric", dtype)


def _dependency_operands(dependency: Any) -> tuple[jax.Array, ...]:
    """Array leaves of ``dependency``: extra operands that order an op after them."""
    return tuple(jnp.asarray(x) for x in jax.tree_util.tree_leaves(dependency)
                 if not isinstance(x, KLUHandleManager))


@partial(jax.jit, static_argnums=6)
def _refactor(Ai: Any, Aj: Any, Ax: Any, num: jax.Array, sym: jax.Array, deps: tuple,
              effect: bool) -> jax.Array:
    Ai, Aj, Ax2 = _values("klujax.refactor", Ai, Aj, Ax)
    out = prim("refactor", Ax2.dtype).bind(Ai, Aj, Ax2, num.reshape(-1), sym, *deps, effect=effect)
    return out.reshape(num.shape)


def refactor(
    Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, numeric: Handle, symbolic: Handle,
    dependency: Any = None,
) -> KLUHandleManager:
    """Refactor with new values, reusing the numeric objects' memory and pivot order.

    ``Ax`` is ``(n_nz,)`` or ``(n_lhs, n_nz)`` matching ``numeric``'s batch (or a single
    member for all). A refactorization whose pivots degrade (cheap rcond check) is redone
    with fresh pivoting.

    The native objects are updated in place (handles are references, as in klujax 0.5):
    every later use of ``numeric`` sees the new values. It returns the handle it updated
    as a new *value*: inside ``jit`` later solves and frees must consume that returned
    value, which orders them after the refactorization. A solve that must see the *old*
    factorization inside the same ``jit`` orders the refactorization after itself with
    ``dependency=`` (any pytree of arrays, e.g. that solve's result); without it XLA may
    run the refactorization first. Outside ``jit`` the returned manager is ``numeric``.
    """
    fn = "klujax.refactor"
    num = handle_array(fn, "numeric", numeric, "numeric")
    sym = handle_array(fn, "symbolic", symbolic, "symbolic")
    dtype = compute_dtype(fn, Ax=Ax)
    if isinstance(numeric, KLUHandleManager) and numeric.dtype is not None and numeric.dtype != dtype:
        raise TypeError(f"{fn}: numeric was factored as {numeric.dtype}, Ax is {dtype}")
    out = _track(_refactor(Ai, Aj, Ax, num, sym, _dependency_operands(dependency), effect_needed()),
                 numeric, symbolic)
    if isinstance(numeric, KLUHandleManager) and not isinstance(out, jax.core.Tracer):
        numeric.handle = out
        return numeric
    return KLUHandleManager(out, kind="numeric", dtype=dtype, owned=False)


#== solves ==#

@partial(jax.jit, static_argnames="transpose")
def _solve_with_symbol(Ai: Any, Aj: Any, Ax: Any, b: Any, sym: jax.Array, transpose: bool) -> jax.Array:
    fn = "klujax.tsolve_with_symbol" if transpose else "klujax.solve_with_symbol"
    Ai, Aj, Ax, b3, layout = canonical(fn, Ai, Aj, Ax, b)
    x = prim("solve_with_symbol", Ax.dtype).bind(Ai, Aj, Ax, b3, sym, transpose=transpose, retain=False)
    return layout.restore(x)


def solve_with_symbol(
    Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, b: ArrayLike, symbolic: Handle
) -> jax.Array:
    """Solve ``A x = b`` reusing a symbolic analysis: factor (or refactor) + solve.

    Shapes, broadcasting, dtypes and the NaN policy are those of :func:`klujax.solve`.
    Differentiable w.r.t. ``Ax`` and ``b``; batchable over ``Ax`` and ``b``.
    """
    sym = handle_array("klujax.solve_with_symbol", "symbolic", symbolic, "symbolic")
    return _track(_solve_with_symbol(Ai, Aj, Ax, b, sym, transpose=False), symbolic)


def tsolve_with_symbol(
    Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, b: ArrayLike, symbolic: Handle
) -> jax.Array:
    """Solve ``A^T x = b`` (plain transpose, also for complex); see :func:`solve_with_symbol`."""
    sym = handle_array("klujax.tsolve_with_symbol", "symbolic", symbolic, "symbolic")
    return _track(_solve_with_symbol(Ai, Aj, Ax, b, sym, transpose=True), symbolic)


@partial(jax.jit, static_argnames=("transpose", "ax_ndim", "dtype"))
def _solve_with_numeric(num: jax.Array, b: Any, sym: jax.Array, transpose: bool, ax_ndim: int,
                        dtype: Any) -> jax.Array:
    fn = "klujax.tsolve_with_numeric" if transpose else "klujax.solve_with_numeric"
    # Factorizations are double precision whatever dtype they were made from, so only
    # real vs complex matters: the result dtype is the usual one for (numeric, b).
    out_dtype = compute_dtype(fn, b=b, numeric=np.zeros((), dtype or np.float64))
    b = jnp.asarray(b)
    num1 = num.reshape(-1)
    b3, layout = canonical_rhs(fn, b, num1.shape[0], ax_ndim, lhs_name="numeric")
    if dtype is not None and np.issubdtype(out_dtype, np.complexfloating) and not np.issubdtype(dtype, np.complexfloating):
        # A real factorization with a complex b: solve the two halves.
        real = compute_dtype(fn, numeric=np.zeros((), np.float64))
        p = prim("solve_with_numeric", real)
        re = p.bind(num1, b3.real.astype(real), sym, transpose=transpose)
        im = p.bind(num1, b3.imag.astype(real), sym, transpose=transpose)
        return layout.restore(jax.lax.complex(re, im))
    p = prim("solve_with_numeric", out_dtype)
    return layout.restore(p.bind(num1, b3.astype(out_dtype), sym, transpose=transpose))


def _numeric_solve(fn: str, numeric: Handle, b: ArrayLike, symbolic: Handle, transpose: bool) -> jax.Array:
    num = handle_array(fn, "numeric", numeric, "numeric")
    sym = handle_array(fn, "symbolic", symbolic, "symbolic")
    dtype = numeric._dtype_name if isinstance(numeric, KLUHandleManager) else None
    out = _solve_with_numeric(num, b, sym, transpose=transpose, ax_ndim=num.ndim + 1, dtype=dtype)
    return _track(out, numeric, symbolic)


def solve_with_numeric(numeric: Handle, b: ArrayLike, symbolic: Handle) -> jax.Array:
    """Solve ``A x = b`` with existing factorization(s): just the triangular solves.

    ``numeric`` with ``handle`` of shape ``()`` acts like a 1D ``Ax``, shape ``(n_lhs,)``
    like a 2D one, for the shape rules of :func:`klujax.solve`. Differentiable w.r.t.
    ``b`` (its transpose is the transposed solve on the same factorization); batchable
    over ``b`` and ``numeric``.
    """
    return _numeric_solve("klujax.solve_with_numeric", numeric, b, symbolic, False)


def tsolve_with_numeric(numeric: Handle, b: ArrayLike, symbolic: Handle) -> jax.Array:
    """Solve ``A^T x = b`` with existing factorization(s); see :func:`solve_with_numeric`."""
    return _numeric_solve("klujax.tsolve_with_numeric", numeric, b, symbolic, True)


def refactor_and_solve(
    Ai: ArrayLike, Aj: ArrayLike, Ax: ArrayLike, b: ArrayLike, numeric: Handle, symbolic: Handle
) -> jax.Array:
    """Refactor ``numeric`` in place with new values ``Ax``, then solve ``A x = b``.

    Equivalent to ``solve_with_numeric(refactor(Ai, Aj, Ax, numeric, symbolic), b,
    symbolic)``; later solves with ``numeric`` see the new factorization. Inside ``jit``
    nothing orders such a later solve after this call: use :func:`refactor` +
    :func:`solve_with_numeric` there and consume the handle ``refactor`` returns.
    Shapes as :func:`klujax.solve`. Differentiable w.r.t. ``b`` only (use
    :func:`solve_with_symbol` for ``Ax``).
    """
    num = refactor(Ai, Aj, Ax, numeric, symbolic)
    return solve_with_numeric(num, b, symbolic)


#== free ==#

@partial(jax.jit, static_argnums=(2, 3))
def _free_jit(arr: jax.Array, deps: tuple, kind: str, effect: bool) -> jax.Array:
    return handle_prim(f"free_{kind}").bind(arr.reshape(-1), *deps, effect=effect)


def _free(fn: str, kind: str, h: Handle, dependency: Any) -> jax.Array:
    arr = handle_array(fn, kind, h, kind) if not (isinstance(h, KLUHandleManager) and h.closed) else None
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
