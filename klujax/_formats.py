"""Sparse-matrix inputs: ``jax.experimental.sparse.BCOO``/``BCSR`` and ``scipy.sparse``.

Every public function that takes ``(Ai, Aj, Ax[, n_col])`` also takes one sparse matrix
``A`` in their place; :func:`matrix_args` turns it into the COO form, the only form the
primitives know. The rules:

* ``BCOO``: 2-D (``n_batch=0``), or with one leading batch dimension of values over a
  shared pattern (``n_batch=1``: a batch of matrices, ``Ax`` of shape ``(n_lhs, n_nz)``).
  Entries whose indices are out of range are padding (``BCOO.fromdense(..., nse=...)``
  pads that way, and JAX's own BCOO operations drop them): they are ignored. A batched
  BCOO whose members do not share one pattern gives NaN (checked inside ``jit`` too).
* ``BCSR``: 2-D or one leading batch dimension over a shared pattern, likewise.
* ``scipy.sparse`` matrices and arrays (any format: converted with ``tocoo()``), outside
  ``jit`` only (they are host objects).

Gradients flow to ``A.data`` (the cotangent of a BCOO/BCSR input is one of the same
pattern).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

#: a BCOO, a BCSR or a scipy.sparse matrix/array (for type hints; checked at run time)
SparseMatrix: TypeAlias = Any


def require(fn: str, **args: Any) -> None:
    """TypeError naming the first required argument that is missing (None)."""
    for name, value in args.items():
        if value is None:
            raise TypeError(f"{fn}: missing argument {name}")


def _sparse_module() -> Any:
    from jax.experimental import sparse  # imported lazily: it is not needed for COO

    return sparse


def _is_scipy(A: Any) -> bool:
    mod = type(A).__module__
    return mod.startswith("scipy.sparse") and hasattr(A, "tocoo")


def is_matrix(A: Any) -> bool:
    """Whether ``A`` is a sparse matrix object (as opposed to a COO index array)."""
    if _is_scipy(A):
        return True
    if type(A).__module__.startswith("jax.experimental.sparse"):
        sparse = _sparse_module()
        return isinstance(A, (sparse.BCOO, sparse.BCSR))
    return False


def _shared_pattern(fn: str, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The first member's indices of batched (B, ...) indices, and whether all agree."""
    same = jnp.all(idx == idx[:1])
    return idx[0], same


def to_coo(fn: str, A: Any) -> tuple[Any, Any, Any, int]:
    """``(Ai, Aj, Ax, n)`` of a square sparse matrix; ``Ax`` is (n_nz,) or (n_lhs, n_nz)."""
    if _is_scipy(A):
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{fn}: A must be a square matrix, got shape {A.shape}")
        c = A.tocoo()
        return (
            np.asarray(c.row, np.int64),
            np.asarray(c.col, np.int64),
            np.asarray(c.data),
            int(A.shape[0]),
        )
    sparse = _sparse_module()
    if A.n_dense:
        raise ValueError(f"{fn}: A must have no dense dimensions, got n_dense={A.n_dense}")
    if A.n_batch > 1 or A.ndim - A.n_batch != 2:
        raise ValueError(
            f"{fn}: A must be (n, n) or (n_lhs, n, n) with n_batch <= 1, got shape "
            f"{A.shape} with n_batch={A.n_batch}"
        )
    n, m = A.shape[-2:]
    if n != m:
        raise ValueError(f"{fn}: A must be square, got shape {A.shape}")
    same = None
    if isinstance(A, sparse.BCSR):
        indptr, cols = A.indptr, A.indices
        if A.n_batch:
            indptr, same_p = _shared_pattern(fn, indptr)
            cols, same_c = _shared_pattern(fn, cols)
            same = same_p & same_c
        nse = cols.shape[-1]
        rows = jnp.repeat(
            jnp.arange(n, dtype=cols.dtype), jnp.diff(indptr), total_repeat_length=nse
        )
        # slots past indptr[-1] are padding
        valid = jnp.arange(nse) < indptr[-1]
    else:
        idx = A.indices
        if A.n_batch:
            idx, same = _shared_pattern(fn, idx)
        rows, cols = idx[:, 0], idx[:, 1]
        valid = (rows >= 0) & (rows < n) & (cols >= 0) & (cols < n)
    data = A.data
    if same is not None:
        data = jnp.where(same, data, jnp.nan)  # members of different patterns: NaN
    # Padding (out-of-range or unused slots) becomes an explicit zero at (0, 0).
    rows = jnp.where(valid, rows, 0)
    cols = jnp.where(valid, cols, 0)
    data = jnp.where(valid, data, jnp.zeros((), data.dtype))
    return rows, cols, data, int(n)


def as_array(x: Any) -> Any:
    """Python lists and tuples -> NumPy arrays (outside ``jit`` they work like arrays)."""
    return np.asarray(x) if isinstance(x, (list, tuple)) else x


def matrix_args(
    fn: str, args: tuple[Any, ...], n_rest: int, *, n_col: bool = False, rhs: str | None = None
) -> tuple[Any, ...]:
    """Normalises ``(A, *rest)`` or ``(Ai, Aj, Ax, [n_col,] *rest)`` to the COO form.

    ``args`` are the positional arguments as the user passed them, padded with ``None``;
    ``n_rest`` is how many follow the matrix (``b``, handles); ``rhs`` names the first of
    them when it is a right-hand side, whose ``n_col`` axis must match a sparse ``A``.
    Returns ``(Ai, Aj, Ax, [n_col,] *rest)`` with lists converted to arrays.
    """
    if not is_matrix(args[0]):
        width = 3 + int(n_col) + n_rest
        return tuple(as_array(a) for a in args[:width])
    A = args[0]
    if any(a is not None for a in args[1 + n_rest :]):
        raise TypeError(
            f"{fn}: pass either a sparse matrix A or (Ai, Aj, Ax"
            f"{', n_col' if n_col else ''}), not both"
        )
    Ai, Aj, Ax, n = to_coo(fn, A)
    rest = tuple(as_array(a) for a in args[1 : 1 + n_rest])
    if rhs is not None and rest and rest[0] is not None:
        _check_size(fn, Ax, n, rest[0], rhs)
    return (Ai, Aj, Ax, n, *rest) if n_col else (Ai, Aj, Ax, *rest)


def _check_size(fn: str, Ax: Any, n: int, b: Any, name: str) -> None:
    """A sparse A's size must match the n_col axis of b (the shape rules of solve)."""
    shape = np.shape(b)
    if len(shape) == 1:
        n_b = shape[0]
    elif len(shape) == 2:  # (n_col, n_rhs) for one matrix, (n_lhs, n_col) for a batch
        n_b = shape[1] if np.ndim(Ax) == 2 else shape[0]
    elif len(shape) == 3:
        n_b = shape[1]
    else:
        return  # the shape checks of solve report it
    if n_b != n:
        raise ValueError(f"{fn}: A is {n} x {n} but {name} has shape {shape} (n_col={n_b})")
