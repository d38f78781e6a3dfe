"""The one module of test helpers: random sparse systems, dense references, comparisons,
handle bookkeeping and subprocesses, for every klujax test file.

The references are NumPy (independent of the library), except the ``*_jnp`` functions
which build the same dense references with jax.numpy so they can be differentiated and
transposed as references for the AD tests. The accuracy test set and its exact metrics
live in ``matrices.py`` (also used by the benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: What a run-time error detected by the native code raises (bad indices, freed or
#: foreign handles, ...): jax reports it as ``JaxRuntimeError`` from its Python dispatch
#: path and as ``ValueError`` (INVALID_ARGUMENT) from its C++ fast path. Either way the
#: message must name the offending argument.
RUNTIME_ERRORS = (ValueError, jax.errors.JaxRuntimeError)

#: The one-time warning for a handle created inside jax.jit.
UNOWNED_WARNING = r"klujax: a (symbolic|numeric) handle created inside jax.jit"

EPS = float(np.finfo(np.float64).eps)
FLOAT_DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
DT_IDS = ["f64", "c128"]

# --------------------------------------------------------------------------- shape table

#: sizes used by the shape-table tests (test_shapes, test_dot)
N, L, R = 7, 3, 2

# (id, Ax batch (None = 1D Ax), b shape, expected result shape)
SHAPE_CASES = [
    ("ax1-b1", None, (N,), (N,)),
    ("ax1-b2", None, (N, R), (N, R)),
    ("ax1-b3", None, (L, N, R), (L, N, R)),
    ("ax2-b1", L, (N,), (L, N)),
    ("ax2-b2", L, (L, N), (L, N)),
    ("ax2-b3", L, (L, N, R), (L, N, R)),
    # broadcasting a batch of 1
    ("ax2[1]-b2", 1, (L, N), (L, N)),
    ("ax2-b2[1]", L, (1, N), (L, N)),
    ("ax2[1]-b3", 1, (L, N, R), (L, N, R)),
    ("ax2-b3[1]", L, (1, N, R), (L, N, R)),
    ("ax2[1]-b1", 1, (N,), (1, N)),
    ("ax1-b3[1]", None, (1, N, R), (1, N, R)),
]
DTYPES = [np.float64, np.complex128]


# --------------------------------------------------------------------------- systems


def random_pattern(
    n: int,
    *,
    density: float = 0.3,
    duplicates: int = 0,
    seed: int | np.random.Generator = 0,
    permute: bool = True,
    idx_dtype: Any = np.int32,
) -> tuple[np.ndarray, np.ndarray]:
    """A random COO pattern of an n x n matrix that contains a (permuted) diagonal.

    ``duplicates`` existing entries are repeated (so their values add up), and the
    entries are returned in random order. With ``permute`` the rows are permuted, so the
    "diagonal" is a random transversal and KLU really has to pivot / permute.
    """
    rng = np.random.default_rng(seed)
    mask = rng.random((n, n)) < density
    np.fill_diagonal(mask, True)
    Ai, Aj = np.nonzero(mask)
    if duplicates and len(Ai):
        extra = rng.integers(0, len(Ai), size=duplicates)
        Ai = np.concatenate([Ai, Ai[extra]])
        Aj = np.concatenate([Aj, Aj[extra]])
    order = rng.permutation(len(Ai))
    Ai, Aj = Ai[order], Aj[order]
    if permute:
        Ai = rng.permutation(n)[Ai]
    return Ai.astype(idx_dtype), Aj.astype(idx_dtype)


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        x = rng.uniform(-1, 1, shape) + 1j * rng.uniform(-1, 1, shape)
    elif np.issubdtype(dtype, np.integer):
        x = rng.integers(-3, 4, shape)
    else:
        x = rng.uniform(-1, 1, shape)
    return x.astype(dtype)


def random_values(
    Ai: np.ndarray,
    Aj: np.ndarray,
    n: int,
    *,
    batch: tuple[int, ...] = (),
    dtype: Any = np.float64,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Random values for (Ai, Aj) that make every batch member nonsingular.

    Every entry gets a random value of modulus <= sqrt(2) (or a small integer); then a
    perfect matching of the pattern (one entry per row, in distinct columns: the
    permuted diagonal) is found and its entries are shifted so that each dominates its
    row strictly. A row-permuted strictly diagonally dominant matrix is nonsingular.
    """
    rng = np.random.default_rng(seed)
    Ai = np.asarray(Ai, dtype=np.int64)
    Aj = np.asarray(Aj, dtype=np.int64)
    x = _random(rng, (*batch, len(Ai)), dtype)
    row_count = np.bincount(Ai, minlength=n)
    diag_row = _diagonal_rows(Ai, Aj, n)
    done = np.zeros(n, bool)
    for k, (i, j) in enumerate(zip(Ai, Aj)):
        if i == diag_row[j] and not done[j]:
            done[j] = True
            x[..., k] += (3 * row_count[i] + 2) if np.issubdtype(x.dtype, np.integer) else (
                1.5 * row_count[i] + 1)
    assert done.all(), "pattern has no transversal to make dominant"
    return x


def _diagonal_rows(Ai: np.ndarray, Aj: np.ndarray, n: int) -> np.ndarray:
    """A perfect matching column -> row of the pattern (the permuted diagonal)."""
    # Augmenting-path bipartite matching (tiny n only).
    cols_of_row: list[list[int]] = [[] for _ in range(n)]
    for i, j in zip(Ai, Aj):
        cols_of_row[int(i)].append(int(j))
    match_col = -np.ones(n, dtype=np.int64)  # column -> row

    def augment(i: int, seen: np.ndarray) -> bool:
        for j in cols_of_row[i]:
            if not seen[j]:
                seen[j] = True
                if match_col[j] < 0 or augment(int(match_col[j]), seen):
                    match_col[j] = i
                    return True
        return False

    for i in range(n):
        if not augment(i, np.zeros(n, bool)):
            raise ValueError("structurally singular pattern")
    return match_col


def make_system(
    n: int = 8,
    *,
    n_lhs: int | None = None,
    dtype: Any = np.float64,
    density: float = 0.3,
    duplicates: int = 0,
    seed: int = 0,
    permute: bool = True,
    idx_dtype: Any = np.int32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ai, Aj, Ax) of a random nonsingular sparse system; Ax is (n_nz,) or (n_lhs, n_nz)."""
    rng = np.random.default_rng(seed)
    Ai, Aj = random_pattern(n, density=density, duplicates=duplicates, seed=rng,
                            permute=permute, idx_dtype=idx_dtype)
    batch = () if n_lhs is None else (n_lhs,)
    Ax = random_values(Ai, Aj, n, batch=batch, dtype=dtype, seed=rng)
    return Ai, Aj, Ax


def random_array(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 1) -> np.ndarray:
    """A random array of ``shape`` (entries in [-1, 1], or small integers)."""
    return _random(np.random.default_rng(seed), tuple(shape), dtype)


# --------------------------------------------------------------------------- references


def dense(Ai: Any, Aj: Any, Ax: Any, n: int) -> np.ndarray:
    """Dense (..., n, n) matrix of a COO matrix; duplicates are summed; Ax may be batched."""
    Ai = np.asarray(Ai, dtype=np.int64)
    Aj = np.asarray(Aj, dtype=np.int64)
    Ax = np.asarray(Ax)
    out_dtype = np.result_type(Ax.dtype, np.float64)
    A = np.zeros((*Ax.shape[:-1], n, n), dtype=out_dtype)
    batch = int(np.prod(Ax.shape[:-1], dtype=np.int64))  # explicit: n_nz may be 0
    flat_A = A.reshape(batch, n, n)
    flat_x = Ax.reshape(batch, Ax.shape[-1])
    for m in range(flat_A.shape[0]):
        np.add.at(flat_A[m], (Ai, Aj), flat_x[m])
    return A


def dense_jnp(Ai: Any, Aj: Any, Ax: Any, n: int) -> Any:
    """jax.numpy version of :func:`dense` (differentiable and linear in Ax)."""
    Ax = jnp.asarray(Ax)
    A = jnp.zeros((*Ax.shape[:-1], n, n), dtype=Ax.dtype)
    return A.at[..., jnp.asarray(Ai), jnp.asarray(Aj)].add(Ax)


def _canon(Ax_ndim: int, b: Any, L_ax: int) -> tuple[Any, tuple[int, ...]]:
    """b as (lb, n, r) following the documented shape table, and the result shape."""
    if b.ndim == 1:
        b3 = b[None, :, None]
    elif b.ndim == 2:
        b3 = b[None] if Ax_ndim == 1 else b[:, :, None]
    elif b.ndim == 3:
        b3 = b
    else:  # pragma: no cover
        raise ValueError(b.shape)
    L = max(L_ax, b3.shape[0])
    if b.ndim == 3:
        out = (L, b3.shape[1], b3.shape[2])
    elif Ax_ndim == 1:
        out = tuple(b.shape)
    else:
        out = (L, b3.shape[1])
    return b3, out


def n_col_of(Ax: Any, b: Any) -> int:
    """n_col implied by the shapes of Ax and b (see the shape table)."""
    b = np.asarray(b) if not hasattr(b, "ndim") else b
    if b.ndim == 1:
        return b.shape[0]
    if b.ndim == 2:
        return b.shape[0] if np.ndim(Ax) == 1 else b.shape[1]
    return b.shape[1]


def reference_solve(Ai: Any, Aj: Any, Ax: Any, b: Any, n: int | None = None, *,
                    transpose: bool = False) -> np.ndarray:
    """Dense NumPy solution with the shape semantics of klujax.solve (complex128/float64).

    ``n`` defaults to the size implied by ``b``; ``Ax`` of ndim 1 (or a numeric handle
    of shape ``()``) vs 2 (handles ``(n_lhs,)``). ``transpose`` solves with the plain
    transpose ``A^T`` (no conjugation).
    """
    Ax = np.asarray(Ax)
    b = np.asarray(b)
    n = n_col_of(Ax, b) if n is None else n
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n).astype(np.complex128)
    if transpose:
        A = np.swapaxes(A, -1, -2)
    b3, out = _canon(Ax.ndim, b, A.shape[0])
    L = max(A.shape[0], b3.shape[0])
    A = np.broadcast_to(A, (L, n, n))
    b3 = np.broadcast_to(b3, (L, *b3.shape[1:])).astype(np.complex128)
    x = np.linalg.solve(A, b3).reshape(out)
    return x if np.iscomplexobj(Ax) or np.iscomplexobj(b) else x.real


def reference_dot(Ai: Any, Aj: Any, Ax: Any, x: Any) -> np.ndarray:
    """Dense NumPy A @ x with the shape semantics of klujax.dot."""
    Ax = np.asarray(Ax)
    x = np.asarray(x)
    n = n_col_of(Ax, x)
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n).astype(np.complex128)
    x3, out = _canon(Ax.ndim, x, A.shape[0])
    y = np.matmul(A, x3.astype(np.complex128))
    L = max(A.shape[0], x3.shape[0])
    y = np.broadcast_to(y, (L, *y.shape[1:])).reshape(out)
    return y if np.iscomplexobj(Ax) or np.iscomplexobj(x) else y.real


def _jnp_canon(Ai: Any, Aj: Any, Ax: Any, b: Any) -> tuple[Any, Any, tuple[int, ...]]:
    Ax = jnp.asarray(Ax)
    b = jnp.asarray(b)
    n = n_col_of(Ax, b)
    A = dense_jnp(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n)
    b3, out = _canon(Ax.ndim, b, A.shape[0])
    L = max(A.shape[0], b3.shape[0])
    dtype = jnp.result_type(A.dtype, b3.dtype, jnp.float32)
    A = jnp.broadcast_to(A, (L, n, n)).astype(dtype)
    b3 = jnp.broadcast_to(b3, (L, *b3.shape[1:])).astype(dtype)
    return A, b3, out


def solve_jnp(Ai: Any, Aj: Any, Ax: Any, b: Any) -> Any:
    """Differentiable dense reference for klujax.solve (same shape semantics)."""
    A, b3, out = _jnp_canon(Ai, Aj, Ax, b)
    return jnp.linalg.solve(A, b3).reshape(out)


def dot_jnp(Ai: Any, Aj: Any, Ax: Any, x: Any) -> Any:
    """Differentiable dense reference for klujax.dot (same shape semantics)."""
    A, x3, out = _jnp_canon(Ai, Aj, Ax, x)
    return jnp.matmul(A, x3).reshape(out)


# --------------------------------------------------------------------------- comparisons

TOLERANCES = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.complex128): 1e-10,
    np.dtype(np.float32): 2e-5,
    np.dtype(np.complex64): 2e-5,
}


def tol_for(dtype: Any) -> float:
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual: Any, expected: Any, *, dtype: Any = None, rtol: float | None = None,
                 atol: float | None = None) -> None:
    """Asserts equal shapes and closeness with a tolerance keyed by the result dtype.

    If ``dtype`` is given, also asserts that ``actual`` has exactly that dtype.
    """
    actual_np = np.asarray(actual)
    expected_np = np.asarray(expected)
    if dtype is not None:
        assert actual_np.dtype == np.dtype(dtype), f"dtype {actual_np.dtype} != {np.dtype(dtype)}"
    assert actual_np.shape == expected_np.shape, f"shape {actual_np.shape} != {expected_np.shape}"
    if np.iscomplexobj(expected_np):
        assert np.iscomplexobj(actual_np), f"expected a complex result, got {actual_np.dtype}"
    key = actual_np.dtype if actual_np.dtype in TOLERANCES else np.dtype(np.float64)
    tol = tol_for(key)
    np.testing.assert_allclose(actual_np, expected_np, rtol=tol if rtol is None else rtol,
                               atol=tol if atol is None else atol)


# --------------------------------------------------------------------------- split API


def make_pattern(n: int = N, *, density: float = 0.35, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random COO pattern containing a row-permuted diagonal, in random order, with
    one duplicated entry (duplicates must be summed)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n, n)) < density
    np.fill_diagonal(mask, True)
    Ai, Aj = np.nonzero(mask)
    if len(Ai):
        k = rng.integers(len(Ai))
        Ai, Aj = np.append(Ai, Ai[k]), np.append(Aj, Aj[k])
    order = rng.permutation(len(Ai))
    Ai, Aj = Ai[order], Aj[order]
    Ai = rng.permutation(n)[Ai]  # the "diagonal" becomes a random transversal
    return Ai.astype(np.int32), Aj.astype(np.int32)


def transversal(Ai: np.ndarray, Aj: np.ndarray, n: int) -> np.ndarray:
    """Positions k of one entry per column with distinct rows (a perfect matching)."""
    rows = _diagonal_rows(np.asarray(Ai), np.asarray(Aj), n)
    return np.array([np.flatnonzero((Ai == rows[j]) & (Aj == j))[0] for j in range(n)],
                    dtype=np.int64)


def make_values(Ai: np.ndarray, Aj: np.ndarray, n: int, *, batch: tuple[int, ...] = (),
                dtype: Any = np.float64, seed: int = 1) -> np.ndarray:
    """Random values on (Ai, Aj) making a well conditioned (dominant transversal) matrix."""
    x = uniform_values(np.random.default_rng(seed), (*batch, len(Ai)), dtype)
    x[..., transversal(Ai, Aj, n)] += 2.0 * n
    return x


def make_split_system(n: int = N, *, n_lhs: int | None = None, dtype: Any = np.float64,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ai, Aj, Ax) from :func:`make_pattern` / :func:`make_values`; Ax (n_nz,) or (n_lhs, n_nz)."""
    Ai, Aj = make_pattern(n, seed=seed)
    batch = () if n_lhs is None else (n_lhs,)
    return Ai, Aj, make_values(Ai, Aj, n, batch=batch, dtype=dtype, seed=seed + 100)


def rand(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 7) -> np.ndarray:
    """Uniform values in [-1, 1] (real and imaginary parts) of ``shape``."""
    return uniform_values(np.random.default_rng(seed), shape, dtype)


def live() -> dict[str, int]:
    """Counts of live native split-API objects: {'symbolic': s, 'numeric': m}."""
    from klujax import _klujax

    return dict(_klujax.live_handles())


def live_delta(before: dict[str, int]) -> dict[str, int]:
    now = live()
    return {k: now[k] - before[k] for k in now}


@contextlib.contextmanager
def quiet_unowned() -> Iterator[None]:
    """Ignore (only) the one-time 'handle created inside jax.jit' warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=UNOWNED_WARNING)
        yield


def free_all(*managers: Any) -> None:
    import klujax

    for m in managers:
        if isinstance(m, klujax.KLUHandleManager):
            m.close()


_VERSION_MASK = np.uint64(0xFFFF << 4)


def assert_same_objects(a: Any, b: Any) -> None:
    """Handle values naming the same native objects."""
    a = np.asarray(a, dtype=np.uint64) & ~_VERSION_MASK
    b = np.asarray(b, dtype=np.uint64) & ~_VERSION_MASK
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- hardening


def pattern(
    n: int,
    rng: np.random.Generator,
    *,
    density: float,
    transversal: bool = True,
    duplicates: int = 0,
    permute: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A random COO pattern of an ``n x n`` matrix, entries in random order.

    Returns ``(Ai, Aj, diag)`` where ``diag`` holds the positions of one entry per
    column forming a transversal (a row-permuted diagonal) when ``transversal``, else
    ``None`` (the pattern may then be structurally singular, or even empty).
    ``duplicates`` entries are repeated (their values must add up).
    """
    mask = rng.random((n, n)) < density
    perm = rng.permutation(n) if permute else np.arange(n)
    if transversal:
        mask[perm, np.arange(n)] = True
    Ai, Aj = np.nonzero(mask)
    if duplicates and len(Ai):
        extra = rng.integers(0, len(Ai), size=duplicates)
        Ai, Aj = np.concatenate([Ai, Ai[extra]]), np.concatenate([Aj, Aj[extra]])
    order = rng.permutation(len(Ai))
    Ai, Aj = Ai[order], Aj[order]
    diag = None
    if transversal:
        # first occurrence of each (perm[j], j) entry
        diag = np.empty(n, dtype=np.int64)
        for j in range(n):
            diag[j] = np.flatnonzero((Ai == perm[j]) & (Aj == j))[0]
    return Ai, Aj, diag


def uniform_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Uniform values in [-1, 1] (real and imaginary parts), as ``dtype``."""
    x = rng.uniform(-1, 1, shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.uniform(-1, 1, shape)
    return x.astype(dtype)


def make_dominant(Ax: np.ndarray, Ai: np.ndarray, diag: np.ndarray, n: int) -> np.ndarray:
    """Shifts the transversal entries so each dominates its row: nonsingular, cond small."""
    Ax = Ax.copy()
    counts = np.bincount(Ai, minlength=n)
    Ax[..., diag] += (2.0 * counts[Ai[diag]] + 1.0).astype(Ax.real.dtype)
    return Ax


def canon_b(b: np.ndarray, ax_ndim: int) -> np.ndarray:
    """b -> (lb, n, r) following klujax's documented shape table."""
    return _canon(ax_ndim, np.asarray(b), 1)[0]


def out_shape(ax_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The documented result shape of ``solve(Ai, Aj, Ax, b)``."""
    la = ax_shape[0] if len(ax_shape) == 2 else 1
    return _canon(len(ax_shape), np.empty(b_shape), la)[1]


def members(Ai: Any, Aj: Any, Ax: np.ndarray, b: np.ndarray, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per batch member ``(A (n,n), b (n,r))`` in complex128, following the shape rules."""
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n).astype(np.complex128)
    b3 = canon_b(np.asarray(b).astype(np.complex128), Ax.ndim)
    L = max(A.shape[0], b3.shape[0])
    for m in range(L):
        yield A[0 if A.shape[0] == 1 else m], b3[0 if b3.shape[0] == 1 else m]


def structural_rank(Ai: Any, Aj: Any, n: int) -> int:
    """Structural rank of the pattern (maximum matching), via SciPy."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import structural_rank as _sr

    if n == 0:
        return 0
    Ai = np.asarray(Ai).astype(np.int64)
    Aj = np.asarray(Aj).astype(np.int64)
    if len(Ai) == 0:
        return 0
    M = csr_matrix((np.ones(len(Ai)), (Ai, Aj)), shape=(n, n))
    M.sum_duplicates()
    return int(_sr(M))


#: Normwise backward error accepted for a solve: klujax guarantees 1e-14 (see
#: docs/accuracy.md) for cond <= 1e12; this allows for the rounding of the residual
#: that :func:`backward_error` computes in plain float64.
BACKWARD_TOL = 1e-13


def backward_error(A: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """Normwise (inf-norm) backward error of ``x`` for ``A x = b`` (any number of rhs)."""
    r = b - A @ x
    scale = np.abs(A).sum(axis=1).max(initial=0.0) * np.abs(x).max(initial=0.0) + np.abs(b).max(
        initial=0.0)
    return float(np.abs(r).max(initial=0.0) / scale) if scale > 0 else 0.0


def check_member(x: np.ndarray, A: np.ndarray, b: np.ndarray, *, structurally_singular: bool,
                 what: str = "") -> None:
    """Checks one batch member's solution ``x (n, r)`` of ``A x = b``.

    * structurally singular ``A``: every entry of ``x`` is NaN (documented);
    * otherwise, if ``A`` is numerically far from singular (``cond < 1e10``): ``x`` is
      finite, its normwise backward error is below :data:`BACKWARD_TOL` and its forward
      error vs a dense solve below ``n * cond * BACKWARD_TOL``. For worse ``cond`` the
      result is only required to be all-NaN (detected singular) or finite.
    """
    x = np.asarray(x).astype(np.complex128)
    if structurally_singular:
        assert np.all(np.isnan(x)), f"{what}: structurally singular member not all NaN: {x}"
        return
    cond = np.linalg.cond(A) if A.size else 1.0
    if not np.isfinite(cond) or cond > 1e10:
        assert np.all(np.isnan(x)) or np.all(np.isfinite(x)), f"{what}: cond={cond:.3g}, x={x}"
        return
    assert np.all(np.isfinite(x)), f"{what}: non-finite solution for cond={cond:.3g}: {x}"
    n = A.shape[0]
    backward = backward_error(A, x, b)
    assert backward <= BACKWARD_TOL, f"{what}: backward error {backward:.3g} (cond={cond:.3g})"
    x_ref = np.linalg.solve(A, b)
    denom = max(np.abs(x_ref).max(initial=0.0), 1e-300)
    forward = np.abs(x - x_ref).max(initial=0.0) / denom
    bound = n * cond * BACKWARD_TOL + 1e-13
    assert forward <= bound, f"{what}: forward error {forward:.3g} > {bound:.3g} (cond={cond:.3g})"


def check_solution(x: Any, Ai: Any, Aj: Any, Ax: np.ndarray, b: np.ndarray, n: int,
                   *, what: str = "") -> None:
    """Checks ``x = klujax.solve(Ai, Aj, Ax, b)`` (shapes per the documented table)."""
    x = np.asarray(x)
    assert x.shape == out_shape(Ax.shape, b.shape), (x.shape, Ax.shape, b.shape)
    x3 = canon_b(x, Ax.ndim)
    singular = structural_rank(Ai, Aj, n) < n
    for m, (A, bm) in enumerate(members(Ai, Aj, Ax, b, n)):
        check_member(x3[m], A, bm, structurally_singular=singular, what=f"{what} member {m}")


def result_dtype(*dtypes: Any, x64: bool = True) -> np.dtype:
    cplx = any(np.issubdtype(np.dtype(d), np.complexfloating) for d in dtypes)
    if x64:
        return np.dtype(np.complex128 if cplx else np.float64)
    return np.dtype(np.complex64 if cplx else np.float32)


# --------------------------------------------------------------------------- process


def rss_mib() -> float:
    """Current resident set size of this process (Linux), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_python(code: str, *, timeout: float = 180, **env_overrides: str | None) -> dict:
    """Runs ``code`` in a fresh interpreter; returns the JSON its last stdout line holds.

    ``JAX_*`` platform/x64 variables of this process are dropped first; keyword
    arguments set (or, with ``None``, remove) environment variables.
    """
    env = dict(os.environ)
    for key in ("JAX_ENABLE_X64", "JAX_PLATFORMS", "JAX_PLATFORM_NAME", "XLA_FLAGS",
                "KLUJAX_FORCE_HOST_CALLBACK"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"subprocess exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
        f"--- stderr\n{proc.stderr[-8000:]}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    assert lines, f"no JSON result\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])

