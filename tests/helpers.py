"""Builders of random sparse systems and dense references for the klujax tests.

Everything here is NumPy (independent of the library), except the ``*_jnp`` functions
which build the same dense references with jax.numpy so they can be differentiated and
transposed as references for the AD tests.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

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
    flat_A = A.reshape(-1, n, n)
    flat_x = Ax.reshape(-1, Ax.shape[-1])
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


def reference_solve(Ai: Any, Aj: Any, Ax: Any, b: Any) -> np.ndarray:
    """Dense NumPy solution with the shape semantics of klujax.solve (complex128/float64)."""
    Ax = np.asarray(Ax)
    b = np.asarray(b)
    n = n_col_of(Ax, b)
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n).astype(np.complex128)
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
    key = actual_np.dtype if actual_np.dtype in TOLERANCES else np.dtype(np.float64)
    tol = tol_for(key)
    np.testing.assert_allclose(actual_np, expected_np, rtol=tol if rtol is None else rtol,
                               atol=tol if atol is None else atol)
