"""klujax.dot against dense A @ x for every row of the shape table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import (DTYPES, SHAPE_CASES, L, N, R, assert_close, dense, make_system,
                     random_array, reference_dot)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
@pytest.mark.parametrize("ax_batch, x_shape, out_shape",
                         [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_dot_shape_table(ax_batch, x_shape, out_shape, dtype, mode):
    Ai, Aj, Ax = make_system(N, n_lhs=ax_batch, dtype=dtype, seed=1, duplicates=3)
    x = random_array(x_shape, dtype, seed=2)
    fn = klujax.dot if mode == "eager" else jax.jit(klujax.dot)
    y = fn(jnp.asarray(Ai), jnp.asarray(Aj), jnp.asarray(Ax), jnp.asarray(x))
    assert y.shape == out_shape
    assert_close(y, reference_dot(Ai, Aj, Ax, x), dtype=dtype)


def test_dot_explicit():
    Ai = np.array([0, 1, 1, 2, 0])
    Aj = np.array([0, 0, 1, 2, 0])
    Ax = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # (0, 0) appears twice: 1 + 5
    x = np.array([1.0, 10.0, 100.0])
    assert_close(klujax.dot(Ai, Aj, Ax, x), np.array([6.0, 32.0, 400.0]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_dot_duplicates_summed(dtype):
    Ai, Aj, Ax = make_system(N, dtype=dtype, seed=3, duplicates=12)
    x = random_array((N, R), dtype, seed=4)
    assert len(set(zip(Ai.tolist(), Aj.tolist()))) < len(Ai)
    y = klujax.dot(Ai, Aj, Ax, x)
    assert_close(y, dense(Ai, Aj, Ax, N) @ x, dtype=dtype)


def test_dot_rectangular_pattern_not_full():
    """Empty rows/columns are fine for dot (no factorization needed)."""
    Ai = np.array([0, 0, 3])
    Aj = np.array([1, 3, 3])
    Ax = np.array([2.0, 3.0, 4.0])
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert_close(klujax.dot(Ai, Aj, Ax, x), np.array([16.0, 0.0, 0.0, 16.0]))


def test_dot_zero_nnz():
    e = np.zeros(0, np.int32)
    y = klujax.dot(e, e, np.zeros(0), np.ones(4))
    assert_close(y, np.zeros(4), dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_dot_vmap(dtype):
    B = 4
    Ai, Aj, Ax = make_system(N, n_lhs=B, dtype=dtype, seed=5, duplicates=2)
    x = random_array((B, N), dtype, seed=6)
    y = jax.vmap(klujax.dot, (None, None, 0, 0))(Ai, Aj, Ax, x)
    expected = np.stack([dense(Ai, Aj, Ax[k], N) @ x[k] for k in range(B)])
    assert_close(y, expected, dtype=dtype)


def test_dot_vmap_2d_x():
    B = 3
    Ai, Aj, Ax = make_system(N, n_lhs=B, seed=7)
    x = random_array((B, N, R), seed=8)
    y = jax.vmap(klujax.dot, (None, None, 0, 0))(Ai, Aj, Ax, x)
    expected = np.stack([dense(Ai, Aj, Ax[k], N) @ x[k] for k in range(B)])
    assert_close(y, expected)


def test_dot_solve_roundtrip():
    Ai, Aj, Ax = make_system(N, n_lhs=L, seed=9, duplicates=3)
    x = random_array((L, N, R), seed=10)
    b = klujax.dot(Ai, Aj, Ax, x)
    assert_close(klujax.solve(Ai, Aj, Ax, b), x)


@pytest.mark.parametrize("ax_dtype, x_dtype, out_dtype", [
    (np.float64, np.complex128, np.complex128),
    (np.int32, np.int32, np.float64),
    (np.float32, np.float64, np.float64),
])
def test_dot_mixed_dtypes(ax_dtype, x_dtype, out_dtype):
    Ai, Aj, Ax = make_system(N, dtype=ax_dtype, seed=11)
    x = random_array((N,), x_dtype, seed=12)
    assert_close(klujax.dot(Ai, Aj, Ax, x), reference_dot(Ai, Aj, Ax, x), dtype=out_dtype)
