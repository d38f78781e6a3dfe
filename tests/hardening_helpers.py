"""Self-contained helpers for the hardening tests (test_properties, test_adversarial,
test_concurrency, test_interop).

Only NumPy/SciPy (and jax.numpy for differentiable references) are used here, never
klujax, so that the references are independent of the library under test. Nothing here
depends on ``helpers.py`` either, so the hardening tests keep working while that file
changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: What a run-time error detected by the native code raises: jax reports it as
#: ``JaxRuntimeError`` from its Python dispatch path and as ``ValueError``
#: (INVALID_ARGUMENT) from its C++ fast path.
RUNTIME_ERRORS = (ValueError, jax.errors.JaxRuntimeError)

EPS = float(np.finfo(np.float64).eps)

FLOAT_DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


# ----------------------------------------------------------------------------- systems


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


def random_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
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


def dense(Ai: Any, Aj: Any, Ax: Any, n: int) -> np.ndarray:
    """Dense ``(..., n, n)`` complex128 matrices of a (batched) COO matrix; duplicates add."""
    Ai = np.asarray(Ai).astype(np.int64)
    Aj = np.asarray(Aj).astype(np.int64)
    Ax = np.asarray(Ax).astype(np.complex128)
    flat = Ax.reshape(int(np.prod(Ax.shape[:-1], dtype=np.int64)), Ax.shape[-1])
    A = np.zeros((flat.shape[0], n, n), np.complex128)
    for m in range(flat.shape[0]):
        np.add.at(A[m], (Ai, Aj), flat[m])
    return A.reshape(*Ax.shape[:-1], n, n)


def dense_jnp(Ai: Any, Aj: Any, Ax: Any, n: int) -> jax.Array:
    """Differentiable dense matrix (``.at[].add``, duplicates add); Ax is ``(n_nz,)``."""
    Ax = jnp.asarray(Ax)
    return jnp.zeros((n, n), Ax.dtype).at[jnp.asarray(Ai), jnp.asarray(Aj)].add(Ax)


def canon_b(b: np.ndarray, ax_ndim: int) -> np.ndarray:
    """b -> (lb, n, r) following klujax's documented shape table."""
    if b.ndim == 1:
        return b[None, :, None]
    if b.ndim == 2:
        return b[None] if ax_ndim == 1 else b[:, :, None]
    return b


def out_shape(ax_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The documented result shape of ``solve(Ai, Aj, Ax, b)``."""
    la = ax_shape[0] if len(ax_shape) == 2 else 1
    if len(b_shape) == 3:
        return (max(la, b_shape[0]), *b_shape[1:])
    if len(ax_shape) == 1:
        return tuple(b_shape)
    if len(b_shape) == 1:
        return (la, b_shape[0])
    return (max(la, b_shape[0]), b_shape[1])


def members(Ai: Any, Aj: Any, Ax: np.ndarray, b: np.ndarray, n: int):
    """Per batch member ``(A (n,n), b (n,r))`` in complex128, following the shape rules."""
    A = dense(Ai, Aj, Ax if Ax.ndim == 2 else Ax[None], n)
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


#: Normwise backward error accepted for a solve. KLU's default threshold partial pivoting
#: (``tol = 0.001``: a pivot is accepted if >= 0.001 x the column maximum) gives growth
#: that plain partial pivoting would not: fresh factorizations of well conditioned
#: (cond < 10) random 45 x 45 matrices reach backward errors of ~1e-10 with raw KLU too.
#: The bound is far above that and still far below what any wrong answer (a misplaced
#: entry, a wrong batch member, a dropped duplicate) produces: O(1).
BACKWARD_TOL = 1e-7


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


# ----------------------------------------------------------------------------- process


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
