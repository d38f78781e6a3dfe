"""Helpers for the split-API tests (test_split.py, test_handles.py, test_leaks.py).

Self-contained (NumPy only for the references) so that these tests do not depend on
the exact contents of helpers.py.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

import jax
import numpy as np

import klujax
from klujax import _klujax

#: What a bad handle (freed, random, wrong kind, other pattern, ...) raises when the
#: native code detects it at run time. jax raises ``JaxRuntimeError`` from the Python
#: dispatch path but ``ValueError`` (INVALID_ARGUMENT) from its C++ fast path, so both
#: are accepted; either way the message must name the offending argument.
RUNTIME_ERRORS = (ValueError, jax.errors.JaxRuntimeError)

UNOWNED_WARNING = r"klujax: a (symbolic|numeric) handle created inside jax.jit"

N = 6  # default matrix size
L = 3  # default batch (n_lhs)
R = 2  # default number of right-hand sides

DTYPES = [np.float64, np.complex128]
DT_IDS = ["f64", "c128"]

TOL = 1e-10


# ----------------------------------------------------------------------------- systems


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


def make_values(Ai: np.ndarray, Aj: np.ndarray, n: int, *, batch: tuple[int, ...] = (),
                dtype: Any = np.float64, seed: int = 1) -> np.ndarray:
    """Random values on (Ai, Aj) making a well conditioned (dominant transversal) matrix."""
    rng = np.random.default_rng(seed)
    shape = (*batch, len(Ai))
    x = rng.uniform(-1, 1, shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.uniform(-1, 1, shape)
    x = x.astype(dtype)
    # make_pattern permuted the rows with a permutation p: entries (p[j], j) exist.
    # Find one entry per column that is a transversal (greedy works: we know one exists).
    transversal = _transversal(Ai, Aj, n)
    x[..., transversal] += 2.0 * n
    return x


def _transversal(Ai: np.ndarray, Aj: np.ndarray, n: int) -> np.ndarray:
    """Positions k of one entry (Ai[k], Aj[k]) per column with distinct rows (matching)."""
    cols_of_row: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for k, (i, j) in enumerate(zip(Ai.tolist(), Aj.tolist())):
        cols_of_row[i].append((j, k))
    match: dict[int, tuple[int, int]] = {}  # column -> (row, k)

    def augment(i: int, seen: set[int]) -> bool:
        for j, k in cols_of_row[i]:
            if j not in seen:
                seen.add(j)
                if j not in match or augment(match[j][0], seen):
                    match[j] = (i, k)
                    return True
        return False

    for i in range(n):
        assert augment(i, set()), "structurally singular pattern"
    return np.array(sorted(k for _, k in match.values()), dtype=np.int64)


def make_system(n: int = N, *, n_lhs: int | None = None, dtype: Any = np.float64,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Ai, Aj, Ax): Ax is (n_nz,) or (n_lhs, n_nz)."""
    Ai, Aj = make_pattern(n, seed=seed)
    batch = () if n_lhs is None else (n_lhs,)
    return Ai, Aj, make_values(Ai, Aj, n, batch=batch, dtype=dtype, seed=seed + 100)


def rand(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape)
    if np.issubdtype(np.dtype(dtype), np.complexfloating):
        x = x + 1j * rng.uniform(-1, 1, shape)
    return x.astype(dtype)


# -------------------------------------------------------------------------- references


def dense(Ai: Any, Aj: Any, Ax: Any, n: int) -> np.ndarray:
    """(..., n, n) dense matrices (duplicates summed)."""
    Ax = np.asarray(Ax)
    A = np.zeros((*Ax.shape[:-1], n, n), dtype=np.result_type(Ax.dtype, np.float64))
    flat, vals = A.reshape(-1, n, n), Ax.reshape(-1, Ax.shape[-1])
    for m in range(flat.shape[0]):
        np.add.at(flat[m], (np.asarray(Ai), np.asarray(Aj)), vals[m])
    return A


def ref_solve(Ai: Any, Aj: Any, Ax: Any, b: Any, n: int, *, transpose: bool = False) -> np.ndarray:
    """Dense ``np.linalg.solve`` following klujax.solve's shape table.

    ``Ax`` of ndim 1 (or a numeric handle of shape ``()``) vs ndim 2 (handles ``(n_lhs,)``).
    ``transpose`` solves with the plain transpose A^T (no conjugation).
    """
    Ax, b = np.asarray(Ax), np.asarray(b)
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n)
    if transpose:
        A = np.swapaxes(A, -1, -2)
    if b.ndim == 1:
        b3 = b[None, :, None]
    elif b.ndim == 2:
        b3 = b[None] if Ax.ndim == 1 else b[:, :, None]
    else:
        b3 = b
    lhs = max(A.shape[0], b3.shape[0])
    A = np.broadcast_to(A, (lhs, n, n)).astype(np.complex128)
    b3 = np.broadcast_to(b3, (lhs, *b3.shape[1:])).astype(np.complex128)
    x = np.linalg.solve(A, b3)
    if b.ndim == 3:
        out = x
    elif Ax.ndim == 1:
        out = x.reshape(b.shape)
    else:
        out = x[..., 0]
    if not (np.iscomplexobj(Ax) or np.iscomplexobj(b)):
        out = out.real
    return out


def assert_close(actual: Any, expected: Any, tol: float = TOL) -> None:
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    if np.iscomplexobj(e):
        assert np.iscomplexobj(a), f"expected a complex result, got {a.dtype}"
    np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


# ------------------------------------------------------------------------ bookkeeping


def live() -> dict[str, int]:
    """Counts of live native split-API objects: {'symbolic': s, 'numeric': m}."""
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


def rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_all(*managers: Any) -> None:
    for m in managers:
        if isinstance(m, klujax.KLUHandleManager):
            m.close()


_VERSION_MASK = np.uint64(0xFFFF << 4)


def assert_same_objects(a, b):
    """Handle values naming the same native objects (refactor bumps only the version)."""
    a = np.asarray(a, dtype=np.uint64) & ~_VERSION_MASK
    b = np.asarray(b, dtype=np.uint64) & ~_VERSION_MASK
    np.testing.assert_array_equal(a, b)
