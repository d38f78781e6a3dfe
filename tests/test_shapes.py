"""klujax.solve against a dense reference for every row of the shape table.

| Ax.ndim | b.ndim | Ax            | b                     | result                |
| 1       | 1      | (n_nz,)       | (n_col,)              | (n_col,)              |
| 1       | 2      | (n_nz,)       | (n_col, n_rhs)        | (n_col, n_rhs)        |
| 1       | 3      | (n_nz,)       | (n_lhs, n_col, n_rhs) | (n_lhs, n_col, n_rhs) |
| 2       | 1      | (n_lhs, n_nz) | (n_col,)              | (n_lhs, n_col)        |
| 2       | 2      | (n_lhs, n_nz) | (n_lhs, n_col)        | (n_lhs, n_col)        |
| 2       | 3      | (n_lhs, n_nz) | (n_lhs, n_col, n_rhs) | (n_lhs, n_col, n_rhs) |

plus broadcasting of a batch of 1 in either Ax or b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import (DTYPES, SHAPE_CASES, L, N, R, assert_close, dense, make_system,
                     random_array, reference_solve)



def _case(ax_batch, b_shape, dtype, seed=0, **kw):
    Ai, Aj, Ax = make_system(N, n_lhs=ax_batch, dtype=dtype, seed=seed, **kw)
    b = random_array(b_shape, dtype, seed=seed + 100)
    return Ai, Aj, Ax, b


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
@pytest.mark.parametrize("ax_batch, b_shape, out_shape",
                         [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_solve_shape_table(ax_batch, b_shape, out_shape, dtype, mode):
    Ai, Aj, Ax, b = _case(ax_batch, b_shape, dtype)
    fn = klujax.solve if mode == "eager" else jax.jit(klujax.solve)
    x = fn(jnp.asarray(Ai), jnp.asarray(Aj), jnp.asarray(Ax), jnp.asarray(b))
    assert x.shape == out_shape
    assert_close(x, reference_solve(Ai, Aj, Ax, b), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
@pytest.mark.parametrize("ax_batch, b_shape, out_shape",
                         [c[1:] for c in SHAPE_CASES[:6]], ids=[c[0] for c in SHAPE_CASES[:6]])
def test_eager_and_jit_agree(ax_batch, b_shape, out_shape, dtype):
    Ai, Aj, Ax, b = _case(ax_batch, b_shape, dtype, seed=3, duplicates=4)
    x_eager = klujax.solve(Ai, Aj, Ax, b)
    x_jit = jax.jit(klujax.solve)(Ai, Aj, Ax, b)
    np.testing.assert_allclose(np.asarray(x_eager), np.asarray(x_jit), rtol=1e-13, atol=1e-13)
    assert x_eager.dtype == x_jit.dtype == dtype
    assert x_eager.shape == out_shape


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_solve_residual(dtype):
    """A x == b with the dense matrix (independent of np.linalg.solve)."""
    Ai, Aj, Ax, b = _case(None, (N,), dtype, seed=5, duplicates=3)
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
    assert_close(dense(Ai, Aj, Ax, N) @ x, b)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_sizes(n):
    Ai, Aj, Ax = make_system(n, seed=n)
    b = random_array((n,), seed=n)
    assert_close(klujax.solve(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b), dtype=np.float64)


def test_duplicates_are_summed():
    Ai, Aj, Ax = make_system(N, n_lhs=2, seed=7, duplicates=10)
    assert len(set(zip(Ai.tolist(), Aj.tolist()))) < len(Ai)
    b = random_array((2, N), seed=8)
    assert_close(klujax.solve(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b))


def test_unpermuted_diagonal_and_explicit_matrix():
    # [[4, 1, 0], [1, 3, 0], [0, 0, 2]] with the (0, 0) entry split into two duplicates
    Ai = np.array([0, 0, 1, 1, 2, 0])
    Aj = np.array([0, 1, 0, 1, 2, 0])
    Ax = np.array([3.0, 1.0, 1.0, 3.0, 2.0, 1.0])
    b = np.array([1.0, 2.0, 3.0])
    A = np.array([[4.0, 1, 0], [1, 3, 0], [0, 0, 2]])
    assert_close(klujax.solve(Ai, Aj, Ax, b), np.linalg.solve(A, b))


@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64, np.uint32, np.int16],
                         ids=["int32", "int64", "uint32", "int16"])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_index_dtypes(idx_dtype, kind):
    Ai, Aj, Ax, b = _case(L, (L, N, R), np.float64, seed=11, idx_dtype=idx_dtype)
    if kind == "jax":
        Ai, Aj = jnp.asarray(Ai), jnp.asarray(Aj)
        assert Ai.dtype == idx_dtype
    x = klujax.solve(Ai, Aj, Ax, b)
    assert_close(x, reference_solve(np.asarray(Ai), np.asarray(Aj), Ax, b), dtype=np.float64)


@pytest.mark.parametrize("idx_kind", ["numpy", "jax"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_indices_closed_over_in_jit(idx_kind, dtype):
    Ai, Aj, Ax, b = _case(L, (L, N), dtype, seed=12, duplicates=2)
    if idx_kind == "jax":
        Ai_c, Aj_c = jnp.asarray(Ai), jnp.asarray(Aj)
    else:
        Ai_c, Aj_c = Ai, Aj
    f = jax.jit(lambda Ax, b: klujax.solve(Ai_c, Aj_c, Ax, b))
    expected = reference_solve(Ai, Aj, Ax, b)
    assert_close(f(Ax, b), expected, dtype=dtype)
    # second call with new values: same trace, new numbers
    Ax2 = Ax * 2.0
    assert_close(f(Ax2, b), expected / 2.0, dtype=dtype)


def test_traced_indices_in_jit():
    Ai, Aj, Ax, b = _case(None, (N,), np.float64, seed=13)
    f = jax.jit(klujax.solve)
    assert_close(f(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b))
    # a different pattern with the same n_nz (columns permuted) reuses the compiled code
    Aj2 = np.random.default_rng(0).permutation(N)[Aj].astype(Aj.dtype)
    assert_close(f(Ai, Aj2, Ax, b), reference_solve(Ai, Aj2, Ax, b))
    # and the first pattern still gives its own answer afterwards (pattern cache)
    assert_close(f(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b))


def test_numpy_inputs():
    Ai, Aj, Ax, b = _case(L, (L, N, R), np.float64, seed=15)
    for arr in (Ai, Aj, Ax, b):
        assert isinstance(arr, np.ndarray)
    x = klujax.solve(Ai, Aj, Ax, b)
    assert isinstance(x, jax.Array)
    assert_close(x, reference_solve(Ai, Aj, Ax, b), dtype=np.float64)


@pytest.mark.parametrize("ax_dtype, b_dtype, out_dtype", [
    (np.float64, np.complex128, np.complex128),
    (np.complex128, np.float64, np.complex128),
    (np.float32, np.float64, np.float64),
    (np.float32, np.float32, np.float64),
    (np.complex64, np.float32, np.complex128),
    (np.float64, np.complex64, np.complex128),
    (np.int32, np.float64, np.float64),
    (np.int64, np.int64, np.float64),
    (np.int32, np.complex128, np.complex128),
])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_mixed_dtypes(ax_dtype, b_dtype, out_dtype, kind):
    Ai, Aj, Ax = make_system(N, n_lhs=2, dtype=ax_dtype, seed=17)
    b = random_array((2, N), b_dtype, seed=18)
    if kind == "jax":
        Ax, b = jnp.asarray(Ax), jnp.asarray(b)
        assert Ax.dtype == ax_dtype and b.dtype == b_dtype
    x = klujax.solve(Ai, Aj, Ax, b)
    # the reference uses the (exactly representable or rounded) input values in double
    expected = reference_solve(Ai, Aj, np.asarray(Ax), np.asarray(b))
    assert_close(x, expected, dtype=out_dtype)


def test_integer_system_exact():
    Ai = np.array([0, 1, 2, 0])
    Aj = np.array([0, 1, 2, 2])
    Ax = np.array([2, 4, 5, 1])  # [[2, 0, 1], [0, 4, 0], [0, 0, 5]]
    b = np.array([1, 2, 10])
    x = klujax.solve(Ai, Aj, Ax, b)
    assert x.dtype == np.float64
    assert_close(x, np.array([-0.5, 0.5, 2.0]))


def test_jit_dtype_variants_do_not_collide():
    """The same jitted function with float and complex inputs gives the right dtypes."""
    Ai, Aj, Ax, b = _case(None, (N,), np.float64, seed=19)
    f = jax.jit(klujax.solve)
    xr = f(Ai, Aj, Ax, b)
    xc = f(Ai, Aj, Ax.astype(np.complex128) * (1 + 1j), b)
    assert xr.dtype == np.float64 and xc.dtype == np.complex128
    assert_close(xr, reference_solve(Ai, Aj, Ax, b))
    assert_close(xc, reference_solve(Ai, Aj, Ax * (1 + 1j), b))
