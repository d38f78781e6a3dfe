"""Adversarial inputs: each case must give a clear exception or the documented NaN result,
and the process must survive it (a normal solve afterwards is still correct).

Covers: negative / too large / huge (2**40, via jax and via NumPy) indices, float and bool
indices or values, NaN/Inf in Ax and b, empty arrays (n_nz=0, n_col=0, n_lhs=0,
n_rhs=0), mismatched n_nz, a symbolic analysis whose n_col disagrees with b, structurally
and numerically singular systems (alone and inside a batch), bad handles (random uint64
ids, freed, wrong kind, other pattern, int64/float arrays), wrong ranks through vmap, and
a very large n_col with few nonzeros (memory must scale with nnz + n, never n^2).
"""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    RUNTIME_ERRORS,
    backward_error,
    dense,
    make_dominant,
    pattern,
    rss_mib,
    uniform_values,
)

import klujax
import klujax._compat

N = 5
HUGE = 2**40


# ----------------------------------------------------------------------------- helpers


def _system(n: int = N, *, seed: int = 0, batch: tuple[int, ...] = (), dtype=np.float64):
    """(Ai, Aj, Ax) int32 NumPy indices of a well conditioned system (permuted diagonal)."""
    rng = np.random.default_rng(seed)
    Ai, Aj, diag = pattern(n, rng, density=0.4)
    Ax = make_dominant(uniform_values(rng, (*batch, len(Ai)), dtype), Ai, diag, n)
    return Ai.astype(np.int32), Aj.astype(np.int32), Ax


def _ref(Ai, Aj, Ax, b, n: int) -> np.ndarray:
    """Dense reference for 1D Ax and b of shape (n,) or (n, r)."""
    return np.linalg.solve(dense(Ai, Aj, Ax, n), np.asarray(b).astype(np.complex128))


def _assert_close(x, expected) -> None:
    x = np.asarray(x)
    expected = np.asarray(expected)
    if not np.iscomplexobj(x):
        expected = expected.real
    np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-10)


def _still_works() -> None:
    """The process survived: a normal (batched, jitted) solve is still correct."""
    Ai, Aj, Ax = _system(N, seed=12345, batch=(2,))
    b = uniform_values(np.random.default_rng(1), (2, N), np.float64)
    for fn in (klujax.solve, jax.jit(klujax.solve)):
        x = np.asarray(fn(Ai, Aj, Ax, b))
        for m in range(2):
            _assert_close(x[m], _ref(Ai, Aj, Ax[m], b[m], N))


def _run(fn):
    out = fn()
    if isinstance(out, klujax.KLUHandleManager):
        out = out.handle
    return jax.block_until_ready(out)


@pytest.fixture
def system():
    Ai, Aj, Ax = _system()
    b = uniform_values(np.random.default_rng(7), (N,), np.float64)
    return Ai, Aj, Ax, b


def _with(Ai, Aj, name, value, pos=0, dtype=None):
    Ai = Ai.astype(dtype or Ai.dtype)
    Aj = Aj.astype(dtype or Aj.dtype)
    (Ai if name == "Ai" else Aj)[pos] = value
    return Ai, Aj


def _as(kind, Ai, Aj):
    return (jnp.asarray(Ai), jnp.asarray(Aj)) if kind in ("jax", "jit") else (Ai, Aj)


def _fn(op, kind):
    f = {"solve": klujax.solve, "dot": klujax.dot}[op]
    return jax.jit(f) if kind == "jit" else f


# ============================================================================ index values


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["numpy", "jax", "jit"])
def test_negative_index(op, name, kind, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = _as(kind, *_with(Ai, Aj, name, -3, pos=2))
    with pytest.raises(RUNTIME_ERRORS, match=name):
        _run(lambda: _fn(op, kind)(Ai, Aj, Ax, b))
    _still_works()


@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["numpy", "jax", "jit"])
@pytest.mark.parametrize("value", [N, N + 1, 10**6, 2**31 - 1])
def test_index_at_or_above_n_col(name, kind, value, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = _as(kind, *_with(Ai, Aj, name, value, pos=len(Ai) - 1))
    with pytest.raises(RUNTIME_ERRORS, match=name):
        _run(lambda: _fn("solve", kind)(Ai, Aj, Ax, b))
    _still_works()


@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("kind", ["jax", "jit"])
@pytest.mark.parametrize("value", [HUGE, HUGE + 1, -HUGE, 2**31, 2**32 + 2])
def test_huge_int64_index_via_jnp(name, kind, value, system):
    """2**40 etc. as a jax int64 array: must not wrap to a valid index; run-time error."""
    Ai, Aj, Ax, b = system
    Ai, Aj = _as(kind, *_with(Ai, Aj, name, value, dtype=np.int64))
    assert Ai.dtype == jnp.int64
    with pytest.raises(RUNTIME_ERRORS, match=name):
        _run(lambda: _fn("solve", kind)(Ai, Aj, Ax, b))
    _still_works()


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("value", [HUGE, -HUGE, 2**31, 2**32 + 2])
def test_huge_int64_index_via_numpy(op, name, value, system):
    """NumPy int64 indices are range-checked on the host: ValueError at once."""
    Ai, Aj, Ax, b = system
    Ai, Aj = _with(Ai, Aj, name, value, dtype=np.int64)
    with pytest.raises(ValueError, match=name):
        _fn(op, "numpy")(Ai, Aj, Ax, b)
    _still_works()


@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_huge_unsigned_index(name, dtype, system):
    Ai, Aj, Ax, b = system
    value = np.iinfo(dtype).max
    Ai, Aj = _with(Ai, Aj, name, value, dtype=dtype)
    for args in ((Ai, Aj), (jnp.asarray(Ai), jnp.asarray(Aj))):
        with pytest.raises(RUNTIME_ERRORS, match=name):
            _run(lambda: klujax.solve(*args, Ax, b))
    _still_works()


@pytest.mark.x64_off
@pytest.mark.parametrize("name", ["Ai", "Aj"])
def test_huge_int64_numpy_index_x64_off(name, system):
    """With x64 off jax would narrow int64 -> int32 (2**40 -> 0, a valid index)."""
    Ai, Aj, Ax, b = system
    Ai, Aj = _with(Ai, Aj, name, HUGE, dtype=np.int64)
    with pytest.raises(ValueError, match=name):
        klujax.solve(Ai, Aj, Ax.astype(np.float32), b.astype(np.float32))
    with pytest.raises(ValueError, match=name):
        klujax.analyze(Ai, Aj, N)
    with klujax._compat.enable_x64(True):
        _still_works()


@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_huge_index_in_analyze(kind, system):
    Ai, Aj, _, _ = system
    Ai, Aj = _with(Ai, Aj, "Aj", HUGE, dtype=np.int64)
    Ai, Aj = _as(kind, Ai, Aj)
    with pytest.raises(RUNTIME_ERRORS, match="Aj"):
        _run(lambda: klujax.analyze(Ai, Aj, N))
    _still_works()


def test_index_error_in_one_vmapped_pattern(system):
    """vmap over indices: one member's bad index raises (naming Ai), no crash."""
    Ai, Aj, Ax, b = system
    bad_Ai, _ = _with(Ai, Aj, "Ai", N + 3)
    with pytest.raises(RUNTIME_ERRORS, match="Ai"):
        _run(lambda: jax.vmap(klujax.solve, (0, 0, None, None))(
            np.stack([Ai, bad_Ai]), np.stack([Aj, Aj]), Ax, b))
    _still_works()


def test_python_list_indices_work_or_raise_type_error(system):
    """Lists are not ArrayLike: a TypeError naming the argument or a correct result."""
    Ai, Aj, Ax, b = system
    try:
        x = klujax.solve(Ai.tolist(), Aj.tolist(), Ax, b)
    except TypeError as e:
        assert "Ai" in str(e) or "Aj" in str(e), str(e)
    else:
        _assert_close(x, _ref(Ai, Aj, Ax, b, N))
    _still_works()


# ============================================================================ dtypes


@pytest.mark.parametrize("name", ["Ai", "Aj"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.bool_, np.complex64])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_non_integer_index_dtype(name, dtype, kind, system):
    Ai, Aj, Ax, b = system
    Ai, Aj = (Ai.astype(dtype), Aj) if name == "Ai" else (Ai, Aj.astype(dtype))
    Ai, Aj = _as(kind, Ai, Aj)
    for call in (lambda: klujax.solve(Ai, Aj, Ax, b), lambda: klujax.dot(Ai, Aj, Ax, b),
                 lambda: klujax.analyze(Ai, Aj, N)):
        with pytest.raises(TypeError, match=name):
            call()
    _still_works()


@pytest.mark.parametrize("name", ["Ax", "b"])
@pytest.mark.parametrize("bad", ["bool", "str", "object"])
def test_non_numeric_value_dtype(name, bad, system):
    Ai, Aj, Ax, b = system
    arr = Ax if name == "Ax" else b
    arr = {"bool": arr > 0, "str": arr.astype(str), "object": arr.astype(object)}[bad]
    args = (Ai, Aj, arr, b) if name == "Ax" else (Ai, Aj, Ax, arr)
    with pytest.raises(TypeError) as info:
        klujax.solve(*args)
    if bad == "bool":  # klujax's own check: it names the argument
        assert name in str(info.value)
    _still_works()


def test_bool_values_in_split_api(system):
    Ai, Aj, Ax, b = system
    with klujax.analyze(Ai, Aj, N) as sym:
        with pytest.raises(TypeError, match="Ax"):
            klujax.factor(Ai, Aj, Ax > 0, sym)
        with pytest.raises(TypeError, match="Ax"):
            klujax.solve_with_symbol(Ai, Aj, Ax > 0, b, sym)
    _still_works()


@pytest.mark.parametrize("shape", [(), (1, len(_system()[0]))])
def test_index_wrong_rank(shape, system):
    Ai, Aj, Ax, b = system
    bad = np.zeros(shape, np.int32)
    with pytest.raises(ValueError, match="Ai"):
        klujax.solve(bad, Aj, Ax, b)
    _still_works()


# ============================================================================ NaN / Inf


@pytest.mark.parametrize("where", ["Ax", "b"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("use_jit", [False, True])
def test_nan_inf_propagate_to_that_member_only(where, value, use_jit):
    """A NaN/Inf in member 1's Ax or b gives a non-finite member 1 (no crash, no
    exception); members 0 and 2 are exact. Fresh pattern: no earlier cache state."""
    Ai, Aj, Ax = _system(N, seed=101, batch=(3,))
    b = uniform_values(np.random.default_rng(3), (3, N), np.float64)
    Ax_bad, b_bad = Ax.copy(), b.copy()
    if where == "Ax":
        Ax_bad[1, 0] = value
    else:
        b_bad[1, 2] = value
    try:
        fn = jax.jit(klujax.solve) if use_jit else klujax.solve
        x = np.asarray(fn(Ai, Aj, Ax_bad, b_bad))
        assert not np.all(np.isfinite(x[1])), x[1]
        for m in (0, 2):
            _assert_close(x[m], _ref(Ai, Aj, Ax[m], b[m], N))
    finally:
        klujax.clear_cache()  # do not leave NaN-factored objects for later tests
    _still_works()


def test_nan_in_ax_split_api_and_grad():
    Ai, Aj, Ax = _system(N, seed=102)
    b = np.ones(N)
    Ax_bad = Ax.copy()
    Ax_bad[0] = np.nan
    try:
        with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax_bad, sym) as num:
            x = np.asarray(klujax.solve_with_numeric(num, b, sym))
            assert not np.all(np.isfinite(x))
        g = jax.grad(lambda a: klujax.solve(Ai, Aj, a, b).sum())(Ax_bad)
        assert g.shape == Ax.shape and not np.all(np.isfinite(np.asarray(g)))
    finally:
        klujax.clear_cache()
    _still_works()


def test_overflowing_and_tiny_values_do_not_crash():
    Ai, Aj, Ax = _system(N, seed=103)
    b = np.ones(N)
    for scale in (1e300, 1e-300):
        x = np.asarray(klujax.solve(Ai, Aj, Ax * scale, b))  # well scaled: representable
        _assert_close(x * scale, _ref(Ai, Aj, Ax, b, N))
    with np.errstate(over="ignore"):
        big = Ax * 1e308  # some entries overflow to inf
    x = np.asarray(klujax.solve(Ai, Aj, big, b))
    assert x.shape == (N,)
    klujax.clear_cache()
    _still_works()


# -- the cache must not carry a bad factorization's state into later solves -----------


def test_singular_after_nan_solve_of_same_pattern_is_nan():
    """BUG: after one solve with a NaN on a 1x1 diagonal block, later *singular* matrices
    of the same pattern give +-inf (and finite garbage) instead of NaN.

    KLU's rcond of the NaN factorization is 0, which becomes the reference of the cached
    numeric object's pivot check ``rcond >= 1e-3 * ref_rcond``: with ref 0 every later
    refactorization passes, including singular ones (zero pivot -> division by zero).
    """
    Ai = Aj = np.arange(3, dtype=np.int32)
    b = np.ones(3)
    try:
        klujax.clear_cache()
        x = np.asarray(klujax.solve(Ai, Aj, np.array([1.0, 0.0, 3.0]), b))
        assert np.all(np.isnan(x)), f"fresh singular solve: {x}"
        klujax.solve(Ai, Aj, np.array([np.nan, 2.0, 3.0]), b)
        x = np.asarray(klujax.solve(Ai, Aj, np.array([1.0, 0.0, 3.0]), b))
        assert np.all(np.isnan(x)), f"singular solve after a NaN solve: {x}"
    finally:
        klujax.clear_cache()
        _still_works()


@pytest.mark.parametrize("use_jit", [False, True])
def test_nan_member_does_not_affect_singular_member_of_same_batch(use_jit):
    """BUG: inside ONE batched call, a member with a NaN makes a later singular member
    give [1, inf, 0.333] instead of all-NaN (documented: singular -> NaN for that member
    only, the other members are unaffected):

        klujax.solve(arange(3), arange(3), [[nan, 2, 3], [1, 0, 3]], ones(3))
    """
    Ai = Aj = np.arange(3, dtype=np.int32)
    Ax = np.array([[np.nan, 2.0, 3.0], [1.0, 0.0, 3.0]])
    try:
        klujax.clear_cache()
        fn = jax.jit(klujax.solve) if use_jit else klujax.solve
        x = np.asarray(fn(Ai, Aj, Ax, np.ones(3)))
        assert np.isnan(x[0, 0]) and np.allclose(x[0, 1:], [0.5, 1 / 3])
        assert np.all(np.isnan(x[1])), f"singular member 1 after a NaN member 0: {x[1]}"
    finally:
        klujax.clear_cache()
        _still_works()


def test_inf_member_does_not_affect_accuracy_of_later_member():
    """BUG: the same inside one batch: member 1 ([[1e-17, 1], [1, 1]] + a 1x1 block)
    comes out as [0, 1, 1] instead of [1, 1, 1] because member 0 had an Inf."""
    Ai = np.array([0, 0, 1, 1, 2], np.int32)
    Aj = np.array([0, 1, 0, 1, 2], np.int32)
    b = np.array([1.0, 2.0, 1.0])
    Ax = np.array([[1.0, 1.0, 1e-10, 1.0, np.inf], [1e-17, 1.0, 1.0, 1.0, 1.0]])
    try:
        klujax.clear_cache()
        x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
        _assert_close(x[1], _ref(Ai, Aj, Ax[1], b, 3).real)
    finally:
        klujax.clear_cache()
        _still_works()


def test_accuracy_after_inf_solve_of_same_pattern():
    """BUG: after one solve with an Inf in a 1x1 block, the same pattern's later solves
    silently reuse stale pivots: [[1e-17, 1], [1, 1]] (+ a 1x1 block) gives x[0] = 0
    instead of 1 (the fresh solve is exact)."""
    Ai = np.array([0, 0, 1, 1, 2], np.int32)
    Aj = np.array([0, 1, 0, 1, 2], np.int32)
    b = np.array([1.0, 2.0, 1.0])
    good = np.array([1e-17, 1.0, 1.0, 1.0, 1.0])
    expected = _ref(Ai, Aj, good, b, 3).real
    try:
        klujax.clear_cache()
        _assert_close(klujax.solve(Ai, Aj, good, b), expected)
        klujax.clear_cache()
        klujax.solve(Ai, Aj, np.array([1.0, 1.0, 1e-10, 1.0, np.inf]), b)
        _assert_close(klujax.solve(Ai, Aj, good, b), expected)
    finally:
        klujax.clear_cache()
        _still_works()


def test_split_refactor_after_inf_factor_is_accurate_and_singular_is_nan():
    """The same through the split API: a numeric object factored with Inf/NaN keeps
    ref_rcond = 0, so a later refactor (a) keeps bad stale pivots, (b) calls a singular
    matrix nonsingular. Documented: singular -> NaN until a nonsingular refactor."""
    Ai = np.array([0, 0, 1, 1, 2], np.int32)
    Aj = np.array([0, 1, 0, 1, 2], np.int32)
    b = np.array([1.0, 2.0, 1.0])
    good = np.array([1e-17, 1.0, 1.0, 1.0, 1.0])
    singular = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # 1x1 block (2, 2) is zero
    try:
        with klujax.analyze(Ai, Aj, 3) as sym:
            with klujax.factor(Ai, Aj, np.array([1.0, 1.0, 1e-10, 1.0, np.inf]), sym) as num:
                klujax.refactor(Ai, Aj, good, num, sym)
                x_good = np.asarray(klujax.solve_with_numeric(num, b, sym))
                klujax.refactor(Ai, Aj, singular, num, sym)
                x_sing = np.asarray(klujax.solve_with_numeric(num, b, sym))
        _assert_close(x_good, _ref(Ai, Aj, good, b, 3).real)
        assert np.all(np.isnan(x_sing)), f"singular refactor after an Inf factor: {x_sing}"
    finally:
        klujax.clear_cache()
        _still_works()


def test_stale_pivots_do_not_degrade_accuracy():
    """BUG (accuracy): a well conditioned matrix (cond ~ 5) solved right after another
    matrix of the same pattern gets a backward error of ~1e-6 (forward error ~3e-6)
    instead of the ~1e-12 a fresh factorization (and raw KLU) gives.

    The cached numeric object is refactored with the previous matrix's pivot order and
    the rcond-ratio check (1e-3) accepts it. src/driver.hpp states that "accuracy never
    drops below a fresh factorization's". Allowed here: 100x the fresh backward error.
    """
    rng = np.random.default_rng(265)
    n = int(rng.integers(1, 61))  # 45
    Ai, Aj, diag = pattern(n, rng, density=float(rng.uniform(0.0, 1.0)),
                           duplicates=int(rng.integers(0, 5)))
    first, _, second = (uniform_values(rng, (len(Ai),), np.float64) for _ in range(3))
    second = make_dominant(second, Ai, diag, n)
    b = uniform_values(rng, (n,), np.float64)
    A2 = dense(Ai, Aj, second, n).real
    assert np.linalg.cond(A2) < 10
    try:
        klujax.clear_cache()
        fresh = backward_error(A2, np.asarray(klujax.solve(Ai, Aj, second, b)), b)
        klujax.clear_cache()
        klujax.solve(Ai, Aj, first, b)  # same pattern, other values
        after = backward_error(A2, np.asarray(klujax.solve(Ai, Aj, second, b)), b)
        assert after <= 100 * fresh + 1e-14, (
            f"backward error {after:.3g} after another matrix of the pattern vs {fresh:.3g} "
            "fresh")
    finally:
        klujax.clear_cache()
        _still_works()


# ============================================================================ empty arrays


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("ax_shape,b_shape,out_shape", [
    ((0,), (N,), (N,)),
    ((0,), (N, 2), (N, 2)),
    ((0,), (3, N, 2), (3, N, 2)),
    ((2, 0), (N,), (2, N)),
    ((2, 0), (2, N), (2, N)),
    ((1, 0), (3, N, 1), (3, N, 1)),
])
def test_zero_nnz_is_singular_nan(ax_shape, b_shape, out_shape, use_jit):
    """n_nz = 0 with n_col > 0: an all-zero matrix, singular: NaN of the right shape."""
    Ai = Aj = np.zeros(0, np.int32)
    fn = jax.jit(klujax.solve) if use_jit else klujax.solve
    x = fn(Ai, Aj, np.zeros(ax_shape), np.ones(b_shape))
    assert x.shape == out_shape and x.dtype == np.float64
    assert np.all(np.isnan(np.asarray(x)))
    y = klujax.dot(Ai, Aj, np.zeros(ax_shape), np.ones(b_shape))
    assert y.shape == out_shape and np.all(np.asarray(y) == 0)
    _still_works()


@pytest.mark.parametrize("ax_shape,b_shape,out_shape", [
    ((0,), (0,), (0,)),
    ((0,), (0, 3), (0, 3)),
    ((0,), (2, 0, 3), (2, 0, 3)),
    ((2, 0), (0,), (2, 0)),
    ((2, 0), (2, 0), (2, 0)),
    ((2, 0), (2, 0, 1), (2, 0, 1)),
])
def test_zero_n_col(ax_shape, b_shape, out_shape):
    Ai = Aj = np.zeros(0, np.int32)
    for fn in (klujax.solve, jax.jit(klujax.solve), klujax.dot):
        x = fn(Ai, Aj, np.zeros(ax_shape), np.ones(b_shape))
        assert x.shape == out_shape and x.dtype == np.float64
    _still_works()


def test_zero_n_col_with_an_index_is_out_of_range():
    """BUG (minor): with n_col = 0 every index is out of range, yet
    ``solve([0], [0], [1.0], ones(0))`` returns an empty array without an error (XLA
    drops a custom call whose result has no elements, so the native range check never
    runs; ``analyze([0], [0], 0)`` does raise). Same for n_rhs = 0 or n_lhs = 0 with
    out-of-range indices."""
    with pytest.raises(RUNTIME_ERRORS, match="Ai|Aj"):
        _run(lambda: klujax.solve(np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(1),
                                  np.ones(0)))
    _still_works()


def test_zero_n_lhs_and_zero_n_rhs(system):
    Ai, Aj, Ax, b = system
    assert klujax.solve(Ai, Aj, np.ones((0, len(Ai))), np.ones((0, N))).shape == (0, N)
    assert klujax.solve(Ai, Aj, np.ones((0, len(Ai))), np.ones((0, N, 2))).shape == (0, N, 2)
    assert klujax.solve(Ai, Aj, Ax, np.ones((N, 0))).shape == (N, 0)
    assert klujax.solve(Ai, Aj, Ax, np.ones((3, N, 0))).shape == (3, N, 0)
    _still_works()


def test_zero_nnz_split_api():
    Ai = Aj = np.zeros(0, np.int32)
    with klujax.analyze(Ai, Aj, N) as sym:
        with klujax.factor(Ai, Aj, np.zeros((2, 0)), sym) as num:
            x = klujax.solve_with_numeric(num, np.ones((2, N)), sym)
            assert x.shape == (2, N) and np.all(np.isnan(np.asarray(x)))
        x = klujax.solve_with_symbol(Ai, Aj, np.zeros(0), np.ones(N), sym)
        assert np.all(np.isnan(np.asarray(x)))
    with klujax.analyze(Ai, Aj, 0) as sym0, klujax.factor(Ai, Aj, np.zeros(0), sym0) as num0:
        assert klujax.solve_with_numeric(num0, np.ones(0), sym0).shape == (0,)
    _still_works()


# ============================================================================ shapes


@pytest.mark.parametrize("case", ["short_Ai", "short_Aj", "short_Ax", "short_Ax_2d", "long_Ax"])
def test_mismatched_n_nz(case, system):
    Ai, Aj, Ax, b = system
    args = {
        "short_Ai": (Ai[:-1], Aj, Ax),
        "short_Aj": (Ai, Aj[:-1], Ax),
        "short_Ax": (Ai, Aj, Ax[:-1]),
        "short_Ax_2d": (Ai, Aj, np.stack([Ax[:-1]] * 2)),
        "long_Ax": (Ai, Aj, np.concatenate([Ax, Ax])),
    }[case]
    with pytest.raises(ValueError, match="n_nz"):
        klujax.solve(*args, b)
    with pytest.raises(ValueError, match="n_nz"):
        jax.jit(klujax.dot)(*args, b)
    with klujax.analyze(Ai, Aj, N) as sym:
        with pytest.raises(ValueError, match="n_nz|Ai|Aj|Ax"):
            klujax.factor(*args, sym)
        with pytest.raises((ValueError, *RUNTIME_ERRORS), match="n_nz|Ai|Aj|Ax"):
            _run(lambda: klujax.solve_with_symbol(*args, b, sym))
    _still_works()


@pytest.mark.parametrize("arg,shape", [("Ax", ()), ("Ax", (1, 1, 0)), ("b", ()),
                                       ("b", (1, 1, N, 1))])
def test_wrong_rank_values(arg, shape, system):
    Ai, Aj, Ax, b = system
    if arg == "Ax":
        Ax = np.ones(shape[:-1] + (len(Ai),)) if shape else np.float64(1.0)
    else:
        b = np.ones(shape)
    with pytest.raises(ValueError, match=arg):
        klujax.solve(Ai, Aj, Ax, b)
    _still_works()


def test_b_shorter_than_indices_need(system):
    """n_col comes from b: an index >= b's n_col is out of range (run time)."""
    Ai, Aj, Ax, b = system
    with pytest.raises(RUNTIME_ERRORS, match="Ai|Aj"):
        _run(lambda: klujax.solve(Ai, Aj, Ax, b[:-1]))
    _still_works()


def test_non_broadcasting_batches(system):
    Ai, Aj, Ax, b = system
    with pytest.raises(ValueError, match="n_lhs"):
        klujax.solve(Ai, Aj, np.stack([Ax] * 2), np.ones((3, N)))
    _still_works()


def test_non_contiguous_and_readonly_inputs(system):
    Ai, Aj, Ax, b = system
    rev = slice(None, None, -1)
    B = np.asfortranarray(np.stack([b, 2 * b], axis=1))
    Ax_ro = Ax[rev].copy()
    Ax_ro.setflags(write=False)
    x = klujax.solve(Ai[rev], Aj[rev], Ax_ro, B)
    _assert_close(x, _ref(Ai, Aj, Ax, B, N))
    _still_works()


# ============================================================================ split API n_col


@pytest.mark.parametrize("delta", [1, 3])
def test_analyze_n_col_disagrees_with_b(delta, system):
    Ai, Aj, Ax, b = system
    with klujax.analyze(Ai, Aj, N + delta) as sym:
        with pytest.raises(RUNTIME_ERRORS, match="n_col"):
            _run(lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="n_col"):
            _run(lambda: jax.jit(klujax.tsolve_with_symbol)(Ai, Aj, Ax, b, sym))
        with klujax.factor(Ai, Aj, Ax, sym) as num:
            with pytest.raises(RUNTIME_ERRORS, match="n_col"):
                _run(lambda: klujax.solve_with_numeric(num, b, sym))
            # the right n_col still works with the same handles (structurally singular)
            x = klujax.solve_with_numeric(num, np.ones(N + delta), sym)
            assert np.all(np.isnan(np.asarray(x)))
    _still_works()


def test_analyze_n_col_too_small_for_indices(system):
    Ai, Aj, _, _ = system
    with pytest.raises(RUNTIME_ERRORS, match="Ai|Aj"):
        _run(lambda: klujax.analyze(Ai, Aj, N - 1))
    _still_works()


@pytest.mark.parametrize("n_col,exc", [(-1, ValueError), (2**40, RUNTIME_ERRORS),
                                       ("five", (TypeError, ValueError)), (None, TypeError)])
def test_analyze_bad_n_col(n_col, exc, system):
    Ai, Aj, _, _ = system
    with pytest.raises(exc):
        _run(lambda: klujax.analyze(Ai, Aj, n_col))
    _still_works()


def test_analyze_non_integral_n_col_raises(system):
    """BUG (validation): analyze(Ai, Aj, 5.7) silently truncates n_col to 5 (int(5.7));
    the docstring requires a Python int and a TypeError exists for non-ints."""
    Ai, Aj, _, _ = system
    with pytest.raises(TypeError, match="n_col"):
        sym = klujax.analyze(Ai, Aj, N + 0.7)
        sym.close()
    _still_works()


def test_analyze_traced_n_col(system):
    Ai, Aj, _, _ = system
    with pytest.raises(TypeError, match="n_col"):
        jax.jit(lambda n: klujax.analyze(Ai, Aj, n).handle)(N)
    _still_works()


# ============================================================================ singular


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("case", ["empty_row", "empty_col", "no_transversal", "all_zero",
                                  "rank1_2x2", "cancelling_duplicates", "zero_diag_block",
                                  "zero_1x1"])
def test_singular_gives_nan(case, use_jit):
    Ai, Aj, Ax, n = {
        "empty_row": ([0, 1, 0], [0, 1, 2], [1.0, 2.0, 3.0], 3),
        "empty_col": ([0, 1, 2], [0, 1, 0], [1.0, 2.0, 3.0], 3),
        "no_transversal": ([0, 1, 2, 2], [0, 0, 1, 2], [1.0, 1.0, 1.0, 1.0], 3),
        "all_zero": ([0, 1, 1, 0], [0, 1, 0, 1], [0.0, 0.0, 0.0, 0.0], 2),
        "rank1_2x2": ([0, 0, 1, 1], [0, 1, 0, 1], [1.0, 2.0, 2.0, 4.0], 2),
        "cancelling_duplicates": ([0, 0, 1], [0, 0, 1], [1.5, -1.5, 2.0], 2),
        "zero_diag_block": ([0, 1, 2, 0], [0, 1, 2, 2], [1.0, 0.0, 3.0, 1.0], 3),
        "zero_1x1": ([0], [0], [0.0], 1),
    }[case]
    Ai, Aj, Ax = (np.array(v) for v in (Ai, Aj, Ax))
    Ai, Aj = Ai.astype(np.int32), Aj.astype(np.int32)
    fn = jax.jit(klujax.solve) if use_jit else klujax.solve
    klujax.clear_cache()  # no state from earlier tests (see the NaN/Inf bugs above)
    for dtype in (np.float64, np.complex128):
        x = np.asarray(fn(Ai, Aj, Ax.astype(dtype), np.ones(n)))
        assert np.all(np.isnan(x)), f"{case} {dtype}: {x}"
        with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, Ax.astype(dtype), sym) as num:
            x = np.asarray(klujax.solve_with_numeric(num, np.ones(n), sym))
            assert np.all(np.isnan(x)), f"{case} {dtype} split: {x}"
    _still_works()


@pytest.mark.parametrize("b_shape", [(N,), (4, N), (4, N, 2), (1, N, 3)])
@pytest.mark.parametrize("mode", ["eager", "jit", "vmap", "split"])
def test_zero_pivot_inside_a_batch(b_shape, mode):
    """Member 2 of 4 has an exactly zero diagonal entry (1x1 block): NaN for it only."""
    Ai = Aj = np.arange(N, dtype=np.int32)
    Ax = np.tile(np.arange(1.0, N + 1.0), (4, 1))
    Ax[2, 3] = 0.0
    b = uniform_values(np.random.default_rng(5), b_shape, np.float64)
    klujax.clear_cache()  # the bug above would otherwise depend on earlier tests
    if mode == "eager":
        x = klujax.solve(Ai, Aj, Ax, b)
    elif mode == "jit":
        x = jax.jit(klujax.solve)(Ai, Aj, Ax, b)
    elif mode == "vmap":
        in_b = 0 if len(b_shape) > 1 and b_shape[0] == 4 else None
        b_v = b if in_b is not None else b
        x = jax.vmap(klujax.solve, (None, None, 0, in_b))(Ai, Aj, Ax, b_v)
        if in_b is None and len(b_shape) == 3:
            x = x.reshape(4, *b_shape[1:])
    else:
        with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
            x = np.asarray(klujax.solve_with_numeric(num, b, sym))
    x = np.asarray(x)
    x = x.reshape(4, N, -1)
    b3 = b.reshape(-1, N, 1 if len(b_shape) < 3 else b_shape[-1]) if len(b_shape) != 1 else (
        b.reshape(1, N, 1))
    for m in range(4):
        if m == 2:
            assert np.all(np.isnan(x[m])), x[m]
        else:
            bm = b3[0 if b3.shape[0] == 1 else m]
            _assert_close(x[m], bm / Ax[m][:, None])
    _still_works()


def test_singular_grad_is_nan_not_crash():
    Ai, Aj = np.array([0, 0, 1, 1], np.int32), np.array([0, 1, 0, 1], np.int32)
    Ax = np.array([1.0, 2.0, 2.0, 4.0])
    g = jax.grad(lambda a, b: klujax.solve(Ai, Aj, a, b).sum(), argnums=(0, 1))(Ax, np.ones(2))
    assert all(np.all(np.isnan(np.asarray(t))) for t in g)
    _still_works()


# ============================================================================ handles


def _handle_calls(Ai, Aj, Ax, b, num, sym):
    """(label, call) of every entry point that takes numeric and/or symbolic handles."""
    return [
        ("numeric", lambda: klujax.solve_with_numeric(num, b, sym)),
        ("numeric", lambda: klujax.tsolve_with_numeric(num, b, sym)),
        ("numeric", lambda: klujax.refactor(Ai, Aj, Ax, num, sym)),
        ("numeric", lambda: jax.jit(klujax.solve_with_numeric)(num, b, sym)),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_random_uint64_handles(seed, system):
    Ai, Aj, Ax, b = system
    rng = np.random.default_rng(seed)
    ids = list(rng.integers(0, 2**64 - 1, size=3, dtype=np.uint64, endpoint=True)) + [
        np.uint64(0), np.uint64(2**64 - 1)]
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        for v in ids:
            h = jnp.asarray(np.uint64(v))
            for call in (lambda: klujax.solve_with_numeric(h, b, sym),
                         lambda: klujax.refactor(Ai, Aj, Ax, h, sym),
                         lambda: jax.jit(klujax.solve_with_numeric)(h, b, sym)):
                with pytest.raises(RUNTIME_ERRORS, match="numeric"):
                    _run(call)
            for call in (lambda: klujax.factor(Ai, Aj, Ax, h),
                         lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, h),
                         lambda: klujax.solve_with_numeric(num, b, h)):
                with pytest.raises(RUNTIME_ERRORS, match="symbolic"):
                    _run(call)
            assert int(klujax.free_numeric(h)) == 0  # freeing garbage is a no-op
            assert int(klujax.free_symbolic(h)) == 0
        _assert_close(klujax.solve_with_numeric(num, b, sym), _ref(Ai, Aj, Ax, b, N))
    _still_works()


def test_freed_handles_and_double_free(system):
    Ai, Aj, Ax, b = system
    sym = klujax.analyze(Ai, Aj, N)
    num = klujax.factor(Ai, Aj, Ax, sym)
    raw_num, raw_sym = num.handle, sym.handle
    num.close()
    with pytest.raises(ValueError, match="freed"):
        klujax.solve_with_numeric(num, b, sym)
    with pytest.raises(RUNTIME_ERRORS, match="numeric"):
        _run(lambda: klujax.solve_with_numeric(raw_num, b, sym))
    # double free: harmless, through the manager and the raw id
    num.close()
    klujax.free_numeric(num)
    assert int(klujax.free_numeric(raw_num)) == 0
    sym.close()
    with pytest.raises(ValueError, match="freed"):
        klujax.factor(Ai, Aj, Ax, sym)
    with pytest.raises(RUNTIME_ERRORS, match="symbolic"):
        _run(lambda: klujax.factor(Ai, Aj, Ax, raw_sym))
    sym.close()
    assert int(klujax.free_symbolic(raw_sym)) == 0
    assert int(klujax.free_symbolic(raw_sym)) == 0
    _still_works()


def test_wrong_kind_handles(system):
    Ai, Aj, Ax, b = system
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        with pytest.raises(TypeError, match="symbolic"):
            klujax.factor(Ai, Aj, Ax, num)
        with pytest.raises(TypeError, match="numeric"):
            klujax.solve_with_numeric(sym, b, sym)
        with pytest.raises(RUNTIME_ERRORS, match="numeric"):
            _run(lambda: klujax.solve_with_numeric(sym.handle, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic"):
            _run(lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, num.handle))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic"):
            _run(lambda: klujax.factor(Ai, Aj, Ax, num.handle))
        # freeing the wrong kind through a raw id does nothing
        assert int(klujax.free_symbolic(num.handle)) == 0
        assert int(klujax.free_numeric(sym.handle)) == 0
        _assert_close(klujax.solve_with_numeric(num, b, sym), _ref(Ai, Aj, Ax, b, N))
    _still_works()


def test_handles_from_another_pattern(system):
    Ai, Aj, Ax, b = system
    Bi, Bj, Bx = _system(N, seed=77)
    with klujax.analyze(Ai, Aj, N) as sym, klujax.analyze(Bi, Bj, N) as sym_b, \
            klujax.factor(Bi, Bj, Bx, sym_b) as num_b:
        with pytest.raises(RUNTIME_ERRORS, match="numeric|symbolic|pattern"):
            _run(lambda: klujax.solve_with_numeric(num_b, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="numeric|symbolic|pattern"):
            _run(lambda: klujax.refactor(Ai, Aj, Ax, num_b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="pattern|Ai|Aj"):
            _run(lambda: klujax.factor(Ai, Aj, Ax, sym_b))
        with pytest.raises(RUNTIME_ERRORS, match="pattern|Ai|Aj"):
            _run(lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym_b))
        _assert_close(klujax.solve_with_numeric(num_b, b, sym_b), _ref(Bi, Bj, Bx, b, N))
    _still_works()


@pytest.mark.parametrize("conv", ["int64_jnp", "int64_np", "float64", "int", "none", "str"])
def test_non_uint64_handle_arrays(conv, system):
    Ai, Aj, Ax, b = system
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        def bad(h):
            return {"int64_jnp": lambda: jnp.asarray(h).astype(jnp.int64),
                    "int64_np": lambda: np.asarray(h).astype(np.int64),
                    "float64": lambda: np.asarray(h).astype(np.float64),
                    "int": lambda: int(h), "none": lambda: None, "str": lambda: "h"}[conv]()
        with pytest.raises(TypeError, match="numeric"):
            klujax.solve_with_numeric(bad(num.handle), b, sym)
        with pytest.raises(TypeError, match="symbolic"):
            klujax.solve_with_numeric(num, b, bad(sym.handle))
        with pytest.raises(TypeError, match="symbolic"):
            klujax.factor(Ai, Aj, Ax, bad(sym.handle))
        with pytest.raises(TypeError, match="numeric"):
            klujax.refactor(Ai, Aj, Ax, bad(num.handle), sym)
        _assert_close(klujax.solve_with_numeric(num, b, sym), _ref(Ai, Aj, Ax, b, N))
    _still_works()


# ============================================================================ vmap ranks


def test_vmap_wrong_ranks(system):
    Ai, Aj, Ax, b = system
    nnz = len(Ai)
    solve = klujax.solve
    with pytest.raises(ValueError, match="Ax"):  # per-example Ax is 3D
        jax.vmap(solve, (None, None, 0, None))(Ai, Aj, np.ones((2, 2, 2, nnz)), b)
    with pytest.raises(ValueError, match="b"):  # per-example b is 4D
        jax.vmap(solve, (None, None, None, 0))(Ai, Aj, Ax, np.ones((2, 1, 1, N, 1)))
    with pytest.raises(ValueError, match="b"):  # per-example b is 0D
        jax.vmap(solve, (None, None, None, 0))(Ai, Aj, Ax, np.ones(2))
    with pytest.raises(ValueError, match="Ai"):  # per-example Ai is 2D
        jax.vmap(solve, (0, None, None, None))(np.stack([Ai[None]] * 2), Aj, Ax, b)
    with pytest.raises(ValueError):  # batch sizes disagree (jax's own check)
        jax.vmap(solve, (None, None, 0, 0))(Ai, Aj, np.stack([Ax] * 2), np.stack([b] * 3))
    _still_works()


def test_vmap_over_symbolic_handle_raises(system):
    Ai, Aj, Ax, b = system
    with klujax.analyze(Ai, Aj, N) as sym:
        hs = jnp.stack([sym.handle, sym.handle])
        with pytest.raises(ValueError, match="vmap|symbolic"):
            jax.vmap(lambda h: klujax.solve_with_symbol(Ai, Aj, Ax, b, h))(hs)
    _still_works()


# ============================================================================ large n_col


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return True
    except OSError:  # pragma: no cover
        return False


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


def test_huge_n_col_few_nonzeros_memory_scales_with_nnz_plus_n():
    """n_col = 2,000,000, 3 nonzeros: structurally singular -> NaN. Dense n^2 storage
    would be 32 TB; anything O(n) is a few tens of MB (b and x alone are 16 MB each)."""
    n = 2_000_000
    Ai = np.array([0, 5, n - 1], np.int32)
    Aj = np.array([0, 5, n - 1], np.int32)
    Ax = np.array([2.0, 3.0, 4.0])
    b = np.ones(n)
    _still_works()  # warm up compiles and the thread pool first
    gc.collect()
    exact_peak = _peak_rss_reset()
    r0 = rss_mib()
    x = np.asarray(jax.jit(klujax.solve)(Ai, Aj, Ax, b))
    assert x.shape == (n,) and np.all(np.isnan(x))
    y = np.asarray(klujax.dot(Ai, Aj, Ax, b))
    assert y[0] == 2.0 and y[5] == 3.0 and y[n - 1] == 4.0 and np.count_nonzero(y) == 3
    with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        x2 = np.asarray(klujax.solve_with_numeric(num, b, sym))
        assert np.all(np.isnan(x2))
    grown = (_peak_rss_mib() if exact_peak else rss_mib()) - r0
    assert grown < 500, f"peak RSS grew by {grown:.0f} MiB for n_col={n}, nnz=3"
    del x, x2, y
    klujax.clear_cache()
    _still_works()


def test_huge_n_col_nonsingular_diagonal_is_correct():
    """A 300,000 x 300,000 diagonal plus a few off-diagonal entries: correct, O(n)."""
    n = 300_000
    idx = np.arange(n, dtype=np.int32)
    Ai = np.concatenate([idx, np.array([0, n - 1], np.int32)])
    Aj = np.concatenate([idx, np.array([n - 1, 0], np.int32)])
    Ax = np.concatenate([np.full(n, 4.0), np.array([1.0, 1.0])])
    b = np.ones(n)
    gc.collect()
    exact_peak = _peak_rss_reset()
    r0 = rss_mib()
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
    grown = (_peak_rss_mib() if exact_peak else rss_mib()) - r0
    np.testing.assert_allclose(x[1:-1], 0.25, rtol=1e-14)
    np.testing.assert_allclose(x[[0, -1]], 0.2, rtol=1e-14)  # 4 x0 + x_{n-1} = 1
    assert grown < 500, f"peak RSS grew by {grown:.0f} MiB for n_col={n}"
    klujax.clear_cache()
    _still_works()
