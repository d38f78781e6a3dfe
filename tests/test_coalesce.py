"""klujax.coalesce: duplicates summed, entries sorted by (row, col)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import assert_close, make_system, random_array, reference_solve


def coalesce_ref(Ai, Aj, Ax):
    """NumPy reference: dict accumulation, then sort by (row, col)."""
    Ax = np.asarray(Ax)
    acc: dict[tuple[int, int], np.ndarray] = {}
    for k, (i, j) in enumerate(zip(np.asarray(Ai).tolist(), np.asarray(Aj).tolist())):
        acc[(i, j)] = acc.get((i, j), 0) + Ax[..., k]
    keys = sorted(acc)
    ri = np.array([k[0] for k in keys], dtype=np.int64)
    rj = np.array([k[1] for k in keys], dtype=np.int64)
    rx = np.stack([np.asarray(acc[k]) for k in keys], axis=-1) if keys else Ax[..., :0]
    return ri, rj, rx


def test_coalesce_explicit():
    Ai = np.array([2, 0, 1, 0, 2])
    Aj = np.array([1, 0, 1, 0, 0])
    Ax = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ri, rj, rx = klujax.coalesce(Ai, Aj, Ax)
    np.testing.assert_array_equal(ri, [0, 1, 2, 2])
    np.testing.assert_array_equal(rj, [0, 1, 0, 1])
    assert_close(rx, [6.0, 3.0, 5.0, 1.0])


@pytest.mark.parametrize("n_lhs", [None, 3], ids=["1d", "batched"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["f64", "c128"])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64], ids=["i32", "i64"])
def test_coalesce_vs_numpy(n_lhs, dtype, idx_dtype):
    Ai, Aj, Ax = make_system(9, n_lhs=n_lhs, dtype=dtype, seed=1, duplicates=15,
                             idx_dtype=idx_dtype)
    ri, rj, rx = klujax.coalesce(Ai, Aj, Ax)
    ei, ej, ex = coalesce_ref(Ai, Aj, Ax)
    np.testing.assert_array_equal(np.asarray(ri), ei)
    np.testing.assert_array_equal(np.asarray(rj), ej)
    assert ri.dtype == idx_dtype and rj.dtype == idx_dtype
    assert_close(rx, ex, dtype=dtype)
    assert rx.shape == ((len(ei),) if n_lhs is None else (n_lhs, len(ei)))


def test_coalesce_no_duplicates_only_sorts():
    Ai, Aj, Ax = make_system(8, seed=2)
    ri, rj, rx = klujax.coalesce(Ai, Aj, Ax)
    assert ri.shape == Ai.shape
    order = np.lexsort((Aj, Ai))
    np.testing.assert_array_equal(ri, Ai[order])
    np.testing.assert_array_equal(rj, Aj[order])
    assert_close(rx, Ax[order])


def test_coalesce_empty():
    e = np.zeros(0, np.int32)
    ri, rj, rx = klujax.coalesce(e, e, np.zeros(0))
    assert ri.shape == rj.shape == rx.shape == (0,)


@pytest.mark.parametrize("idx_kind", ["numpy", "jax"])
def test_coalesce_jit_closed_over_indices(idx_kind):
    """Documented: size is only needed when Ai/Aj are traced, not when closed over."""
    Ai, Aj, Ax = make_system(8, n_lhs=2, seed=3, duplicates=10)
    ci, cj = (Ai, Aj) if idx_kind == "numpy" else (jnp.asarray(Ai), jnp.asarray(Aj))
    f = jax.jit(lambda Ax: klujax.coalesce(ci, cj, Ax))
    ri, rj, rx = f(Ax)
    ei, ej, ex = coalesce_ref(Ai, Aj, Ax)
    np.testing.assert_array_equal(ri, ei)
    np.testing.assert_array_equal(rj, ej)
    assert_close(rx, ex)


@pytest.mark.parametrize("extra", [0, 5])
def test_coalesce_jit_traced_indices_with_size(extra):
    Ai, Aj, Ax = make_system(8, seed=4, duplicates=10)
    ei, ej, ex = coalesce_ref(Ai, Aj, Ax)
    size = len(ei) + extra
    f = jax.jit(lambda Ai, Aj, Ax: klujax.coalesce(Ai, Aj, Ax, size=size))
    ri, rj, rx = f(Ai, Aj, Ax)
    assert ri.shape == rj.shape == rx.shape == (size,)
    np.testing.assert_array_equal(ri[: len(ei)], ei)
    np.testing.assert_array_equal(rj[: len(ei)], ej)
    assert_close(rx[: len(ei)], ex)
    # padding is the no-op entry (0, 0, 0)
    np.testing.assert_array_equal(ri[len(ei):], 0)
    np.testing.assert_array_equal(rj[len(ei):], 0)
    np.testing.assert_array_equal(rx[len(ei):], 0.0)
    # the padded matrix is the same matrix: solves agree
    b = random_array((8,), seed=5)
    assert_close(klujax.solve(ri, rj, rx, b), reference_solve(Ai, Aj, Ax, b))


def test_coalesce_traced_without_size_raises():
    Ai, Aj, Ax = make_system(6, seed=6, duplicates=3)
    f = jax.jit(lambda Ai, Aj, Ax: klujax.coalesce(Ai, Aj, Ax))
    with pytest.raises(ValueError, match="size"):
        f(Ai, Aj, Ax)


def test_coalesce_size_too_small_drops_largest():
    Ai = np.array([0, 1, 2, 0])
    Aj = np.array([0, 1, 2, 0])
    Ax = np.array([1.0, 2.0, 3.0, 4.0])
    ri, rj, rx = klujax.coalesce(Ai, Aj, Ax, size=2)
    np.testing.assert_array_equal(ri, [0, 1])
    np.testing.assert_array_equal(rj, [0, 1])
    assert_close(rx, [5.0, 2.0])


@pytest.mark.parametrize("n_lhs", [None, 2], ids=["1d", "batched"])
def test_coalesce_differentiable(n_lhs):
    Ai, Aj, Ax = make_system(6, n_lhs=n_lhs, seed=7, duplicates=6)
    ei, ej, _ = coalesce_ref(Ai, Aj, Ax)
    # d(out[u]) / d(Ax[k]) = 1 if entry k lands in slot u
    keys = {(i, j): u for u, (i, j) in enumerate(zip(ei.tolist(), ej.tolist()))}
    M = np.zeros((len(ei), len(Ai)))
    for k, (i, j) in enumerate(zip(Ai.tolist(), Aj.tolist())):
        M[keys[(i, j)], k] = 1.0
    f = lambda Ax: klujax.coalesce(Ai, Aj, Ax)[2]  # noqa: E731
    jac = jax.jit(jax.jacfwd(f))(Ax)
    jac_r = jax.jacrev(f)(Ax)
    if n_lhs is None:
        expected = M
    else:
        expected = np.einsum("ab,uk->aubk", np.eye(n_lhs), M)
    assert_close(jac, expected)
    assert_close(jac_r, expected)
    w = random_array(jac.shape[: 1 if n_lhs is None else 2], seed=8)
    g = jax.jit(jax.grad(lambda Ax: jnp.sum(f(Ax) * w)))(Ax)
    assert_close(g, w @ M)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["f64", "c128"])
def test_solve_on_coalesced_equals_raw(dtype):
    Ai, Aj, Ax = make_system(10, n_lhs=3, dtype=dtype, seed=9, duplicates=20)
    b = random_array((3, 10, 2), dtype, seed=10)
    ci, cj, cx = klujax.coalesce(Ai, Aj, Ax)
    x_raw = klujax.solve(Ai, Aj, Ax, b)
    x_coal = klujax.solve(ci, cj, cx, b)
    assert_close(x_coal, x_raw)
    assert_close(x_raw, reference_solve(Ai, Aj, Ax, b))
    assert_close(klujax.dot(ci, cj, cx, b), klujax.dot(Ai, Aj, Ax, b))


@pytest.mark.x64_off
def test_coalesce_x64_off_numpy_int64_indices():
    """Default NumPy integer (int64) indices with x64 off: correct, and no warning
    (the suite turns warnings into errors)."""
    Ai = np.array([2, 0, 1, 0])
    Aj = np.array([1, 0, 1, 0])
    Ax = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    ri, rj, rx = klujax.coalesce(Ai, Aj, Ax)
    np.testing.assert_array_equal(ri, [0, 1, 2])
    np.testing.assert_array_equal(rj, [0, 1, 1])
    assert_close(rx, np.array([6.0, 3.0, 1.0], np.float32), dtype=np.float32)
