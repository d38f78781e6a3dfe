"""Bad inputs raise clear errors naming the argument; singular systems give NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import assert_close, make_system, random_array, reference_solve

N = 5
RUNTIME_ERRORS = (ValueError, jax.errors.JaxRuntimeError)
OPS = {"solve": klujax.solve, "dot": klujax.dot}


@pytest.fixture
def system():
    Ai, Aj, Ax = make_system(N, seed=0)
    b = random_array((N,), seed=1)
    return Ai, Aj, Ax, b


def _assert_still_works():
    """The process survives errors: a normal solve afterwards is still correct."""
    Ai, Aj, Ax = make_system(N, n_lhs=2, seed=99)
    b = random_array((2, N), seed=98)
    assert_close(klujax.solve(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b))


def _with_bad(Ai, Aj, name, value, pos=0):
    Ai, Aj = Ai.copy(), Aj.copy()
    (Ai if name == "Ai" else Aj)[pos] = value
    return Ai, Aj


# --------------------------------------------------------------------- index values


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["numpy", "jax", "jit"])
def test_negative_index(op, name, kind, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = _with_bad(Ai, Aj, name, -1, pos=3)
    fn = OPS[op]
    if kind != "numpy":
        Ai, Aj = jnp.asarray(Ai), jnp.asarray(Aj)
    if kind == "jit":
        fn = jax.jit(fn)
    with pytest.raises(RUNTIME_ERRORS, match=name):
        jax.block_until_ready(fn(Ai, Aj, Ax, b))
    _assert_still_works()


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["numpy", "jax", "jit"])
@pytest.mark.parametrize("offset", [0, 7])
def test_index_too_large(op, name, kind, offset, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = _with_bad(Ai, Aj, name, N + offset, pos=len(Ai) - 1)
    fn = OPS[op]
    if kind != "numpy":
        Ai, Aj = jnp.asarray(Ai), jnp.asarray(Aj)
    if kind == "jit":
        fn = jax.jit(fn)
    with pytest.raises(RUNTIME_ERRORS, match=name):
        jax.block_until_ready(fn(Ai, Aj, Ax, b))
    _assert_still_works()


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("value", [2**32, 2**32 + 1, 2**31, -(2**32) + 2])
def test_huge_int64_numpy_index(op, name, value, system):
    """Values beyond int32 must not wrap around to a valid index: ValueError at once."""
    Ai, Aj, Ax, b = system
    Ai, Aj = _with_bad(Ai.astype(np.int64), Aj.astype(np.int64), name, value)
    with pytest.raises(ValueError, match=name):
        OPS[op](Ai, Aj, Ax, b)
    _assert_still_works()


@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["jax", "jit"])
def test_huge_int64_jax_index(name, kind, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = _with_bad(Ai.astype(np.int64), Aj.astype(np.int64), name, 2**32 + 1)
    Ai, Aj = jnp.asarray(Ai), jnp.asarray(Aj)
    assert Ai.dtype == jnp.int64
    fn = klujax.solve if kind == "jax" else jax.jit(klujax.solve)
    with pytest.raises(RUNTIME_ERRORS, match=name):
        jax.block_until_ready(fn(Ai, Aj, Ax, b))


@pytest.mark.x64_off
@pytest.mark.parametrize("name", ["Ai", "Aj"])
def test_huge_int64_numpy_index_x64_off(name, system):
    """With x64 off jax would silently narrow int64 to int32; the host check must catch it."""
    Ai, Aj, Ax, b = system
    Ai, Aj = _with_bad(Ai.astype(np.int64), Aj.astype(np.int64), name, 2**32 + 1)
    with pytest.raises(ValueError, match=name):
        klujax.solve(Ai, Aj, Ax.astype(np.float32), b.astype(np.float32))


def test_index_error_under_vmap(system):
    Ai, Aj, Ax, b = system
    Ai, _ = _with_bad(Ai, Aj, "Ai", N)
    with pytest.raises(RUNTIME_ERRORS, match="Ai"):
        jax.block_until_ready(
            jax.vmap(klujax.solve, (None, None, 0, None))(jnp.asarray(Ai), Aj,
                                                         np.stack([Ax, Ax]), b))


# --------------------------------------------------------------------- index dtypes/shapes


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_float_indices(op, name, kind, system):
    Ai, Aj, Ax, b = system
    if name == "Ai":
        Ai = Ai.astype(np.float64)
    else:
        Aj = Aj.astype(np.float64)
    if kind == "jax":
        Ai, Aj = jnp.asarray(Ai), jnp.asarray(Aj)
    with pytest.raises(TypeError, match=name):
        OPS[op](Ai, Aj, Ax, b)


@pytest.mark.parametrize("name", ["Ai", "Aj"])
def test_complex_and_bool_indices(name, system):
    Ai, Aj, Ax, b = system
    for bad in ((Ai if name == "Ai" else Aj).astype(np.complex128),
                (Ai if name == "Ai" else Aj) > 0):
        args = (bad, Aj) if name == "Ai" else (Ai, bad)
        with pytest.raises(TypeError, match=name):
            klujax.solve(*args, Ax, b)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
def test_2d_index(op, name, system):
    Ai, Aj, Ax, b = system
    if name == "Ai":
        Ai = np.stack([Ai, Ai])
    else:
        Aj = np.stack([Aj, Aj])
    with pytest.raises(ValueError, match=name):
        OPS[op](Ai, Aj, Ax, b)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("short", ["Ai", "Aj", "Ax"])
def test_mismatched_n_nz(op, short, system):
    Ai, Aj, Ax, b = system
    if short == "Ai":
        Ai = Ai[:-1]
    elif short == "Aj":
        Aj = Aj[:-1]
    else:
        Ax = Ax[:-1]
    with pytest.raises(ValueError, match="n_nz") as exc:
        OPS[op](Ai, Aj, Ax, b)
    assert short in str(exc.value)


# --------------------------------------------------------------------- values / rhs


@pytest.mark.parametrize("op", ["solve", "dot"])
def test_ax_3d(op, system):
    Ai, Aj, Ax, b = system
    with pytest.raises(ValueError, match="Ax"):
        OPS[op](Ai, Aj, Ax[None, None], b)


@pytest.mark.parametrize("op", ["solve", "dot"])
def test_ax_0d(op, system):
    Ai, Aj, Ax, b = system
    with pytest.raises((ValueError, TypeError), match="Ax"):
        OPS[op](Ai, Aj, Ax[0], b)


@pytest.mark.parametrize("op, name", [("solve", "b"), ("dot", "x")])
def test_rhs_4d(op, name, system):
    Ai, Aj, Ax, b = system
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        OPS[op](Ai, Aj, Ax, b.reshape(1, 1, N, 1))


@pytest.mark.parametrize("op, name", [("solve", "b"), ("dot", "x")])
def test_rhs_0d(op, name, system):
    Ai, Aj, Ax, b = system
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        OPS[op](Ai, Aj, Ax, b[0])


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("b_shape", [(2, N), (2, N, 1)])
def test_non_broadcastable_n_lhs(op, b_shape):
    Ai, Aj, Ax = make_system(N, n_lhs=3, seed=2)
    b = random_array(b_shape, seed=3)
    with pytest.raises(ValueError, match="n_lhs"):
        OPS[op](Ai, Aj, Ax, b)


def test_non_broadcastable_n_lhs_ax1d_b3d_ok():
    """1D Ax with any b batch is fine (no mismatch possible)."""
    Ai, Aj, Ax = make_system(N, seed=4)
    b = random_array((4, N, 2), seed=5)
    assert klujax.solve(Ai, Aj, Ax, b).shape == (4, N, 2)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ax", "b"])
def test_bool_values(op, name, system):
    Ai, Aj, Ax, b = system
    if name == "Ax":
        Ax = Ax > 0
    else:
        b = b > 0
    expected = name if (name == "Ax" or op == "solve") else "x"
    with pytest.raises(TypeError, match=rf"\b{expected}\b"):
        OPS[op](Ai, Aj, Ax, b)


@pytest.mark.parametrize("name", ["Ax", "b"])
def test_string_values(name, system):
    Ai, Aj, Ax, b = system
    args = [Ai, Aj, Ax, b]
    args[2 if name == "Ax" else 3] = np.array(["a"] * len(args[2 if name == "Ax" else 3]))
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        klujax.solve(*args)


def test_b_wrong_n_col(system):
    """b with more rows than the indices allow: the indices are in range, n_col is larger;
    the matrix has empty rows/cols -> structurally singular -> NaN, not a crash."""
    Ai, Aj, Ax, _ = system
    x = klujax.solve(Ai, Aj, Ax, np.ones(N + 2))
    assert x.shape == (N + 2,)
    assert np.all(np.isnan(np.asarray(x)))


def test_b_too_small_for_indices(system):
    Ai, Aj, Ax, _ = system
    with pytest.raises(RUNTIME_ERRORS, match="A[ij]"):
        jax.block_until_ready(klujax.solve(Ai, Aj, Ax, np.ones(N - 1)))
    _assert_still_works()


# --------------------------------------------------------------------- singular systems


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["f64", "c128"])
@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_singular_gives_nan(dtype, mode):
    # [[1, 2], [2, 4]]: numerically singular (exact zero pivot)
    Ai = np.array([0, 0, 1, 1])
    Aj = np.array([0, 1, 0, 1])
    Ax = np.array([1.0, 2.0, 2.0, 4.0], dtype=dtype)
    fn = klujax.solve if mode == "eager" else jax.jit(klujax.solve)
    x = np.asarray(fn(Ai, Aj, Ax, np.ones(2, dtype)))
    assert x.shape == (2,) and x.dtype == dtype
    assert np.all(np.isnan(x))
    _assert_still_works()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["f64", "c128"])
@pytest.mark.parametrize("b_shape", [(4, N), (4, N, 2), (N,)])
def test_singular_member_in_batch(dtype, b_shape):
    Ai, Aj, Ax = make_system(N, n_lhs=4, dtype=dtype, seed=6)
    Ax[2] = 0.0  # member 2 singular (all zeros)
    b = random_array(b_shape, dtype, seed=7)
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
    assert np.all(np.isnan(x[2]))
    ok = [0, 1, 3]
    b_ok = b if len(b_shape) == 1 else b[ok]
    assert_close(x[ok], reference_solve(Ai, Aj, Ax[ok], b_ok))


def test_singular_member_in_vmap():
    Ai, Aj, Ax = make_system(N, n_lhs=3, seed=8)
    Ax[1] = 0.0
    b = random_array((3, N), seed=9)
    x = np.asarray(jax.vmap(klujax.solve, (None, None, 0, 0))(Ai, Aj, Ax, b))
    assert np.all(np.isnan(x[1]))
    assert_close(x[[0, 2]], reference_solve(Ai, Aj, Ax[[0, 2]], b[[0, 2]]))


def test_singular_then_nonsingular_same_pattern():
    """A singular member must not poison later factorizations of the same pattern."""
    Ai, Aj, Ax = make_system(N, seed=10)
    b = random_array((N,), seed=11)
    for _ in range(2):
        assert np.all(np.isnan(np.asarray(klujax.solve(Ai, Aj, np.zeros_like(Ax), b))))
        assert_close(klujax.solve(Ai, Aj, Ax, b), reference_solve(Ai, Aj, Ax, b))


def test_structurally_singular_empty_column():
    Ai = np.array([0, 1, 2, 0])
    Aj = np.array([0, 0, 2, 2])  # column 1 is empty
    Ax = np.array([1.0, 2.0, 3.0, 4.0])
    x = np.asarray(klujax.solve(Ai, Aj, Ax, np.ones(3)))
    assert x.shape == (3,) and np.all(np.isnan(x))
    _assert_still_works()


def test_structurally_singular_empty_row_batched():
    Ai = np.array([0, 0, 2, 2])  # row 1 is empty
    Aj = np.array([0, 1, 1, 2])
    Ax = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    x = np.asarray(klujax.solve(Ai, Aj, Ax, np.ones((2, 3))))
    assert x.shape == (2, 3) and np.all(np.isnan(x))
    _assert_still_works()


@pytest.mark.parametrize("b_shape, out_shape", [((3,), (3,)), ((3, 2), (3, 2)),
                                                ((2, 3, 2), (2, 3, 2))])
def test_zero_nnz(b_shape, out_shape):
    e = np.zeros(0, np.int32)
    x = np.asarray(klujax.solve(e, e, np.zeros(0), np.ones(b_shape)))
    assert x.shape == out_shape and np.all(np.isnan(x))
    _assert_still_works()


def test_zero_nnz_batched_ax():
    e = np.zeros(0, np.int32)
    x = np.asarray(klujax.solve(e, e, np.zeros((2, 0)), np.ones((2, 3))))
    assert x.shape == (2, 3) and np.all(np.isnan(x))


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("b_shape, ax_shape", [((0,), (0,)), ((0, 2), (0,)), ((2, 0), (2, 0)),
                                               ((3, 0, 1), (0,))])
def test_zero_n_col(op, b_shape, ax_shape):
    e = np.zeros(0, np.int32)
    x = OPS[op](e, e, np.zeros(ax_shape), np.ones(b_shape))
    assert x.shape == b_shape
    _assert_still_works()


def test_zero_n_rhs_and_zero_n_lhs():
    Ai, Aj, Ax = make_system(N, seed=12)
    assert klujax.solve(Ai, Aj, Ax, np.ones((N, 0))).shape == (N, 0)
    assert klujax.solve(Ai, Aj, Ax, np.ones((0, N, 2))).shape == (0, N, 2)
    assert klujax.solve(Ai, Aj, np.zeros((0, len(Ai))), np.ones((0, N))).shape == (0, N)
    _assert_still_works()


def test_nan_and_inf_values_do_not_crash():
    Ai, Aj, Ax = make_system(N, n_lhs=3, seed=13)
    Ax[0, 0] = np.nan
    Ax[1, 0] = np.inf
    b = random_array((3, N), seed=14)
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
    assert x.shape == (3, N)
    assert not np.all(np.isfinite(x[0]))
    assert_close(x[2], reference_solve(Ai, Aj, Ax[2], b[2]))
    _assert_still_works()


def test_many_errors_in_a_row_process_survives(system):
    Ai, Aj, Ax, b = system
    bad_i, _ = _with_bad(Ai, Aj, "Ai", -5)
    for _ in range(20):
        with pytest.raises(RUNTIME_ERRORS):
            jax.block_until_ready(klujax.solve(jnp.asarray(bad_i), Aj, Ax, b))
    _assert_still_works()
