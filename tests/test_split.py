"""The split API (analyze / factor / refactor / solve_with_* / free_*) against dense
``np.linalg.solve``: every function, float64 and complex128, single and batched, eager
and under ``jit``, under ``vmap``, and its derivatives."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    DT_IDS,
    DTYPES,
    UNOWNED_WARNING,
    L,
    N,
    R,
    assert_close,
    assert_same_objects,
    dense,
    live,
    live_delta,
    make_split_system,
    make_values,
    quiet_unowned,
    rand,
    reference_solve,
)
from jax.test_util import check_grads

import klujax
import klujax._handles

# (id, batch of Ax / numeric handles (None: 1D Ax, handle shape ()), shape of b)
SHAPES = [
    ("ax1-b1", None, (N,)),
    ("ax1-b2", None, (N, R)),
    ("ax1-b3", None, (L, N, R)),
    ("ax2-b1", L, (N,)),
    ("ax2-b2", L, (L, N)),
    ("ax2-b3", L, (L, N, R)),
    ("ax2bcast-b3", 1, (L, N, R)),
    ("ax2-b3bcast", L, (1, N, R)),
]
SHAPE_IDS = [s[0] for s in SHAPES]
SHAPE_ARGS = [s[1:] for s in SHAPES]


@pytest.fixture
def sym_system():
    """Builds (Ai, Aj, Ax, sym) on demand and frees every symbolic handle afterwards."""
    made = []

    def build(ax_batch=None, dtype=np.float64, seed=0):
        Ai, Aj, Ax = make_split_system(N, n_lhs=ax_batch, dtype=dtype, seed=seed)
        sym = klujax.analyze(Ai, Aj, N)
        made.append(sym)
        return Ai, Aj, Ax, sym

    yield build
    for s in made:
        s.close()


def _maybe_jit(fn, mode):
    return jax.jit(fn) if mode == "jit" else fn


# ============================================================================ analyze


def test_analyze_returns_symbolic_manager():
    Ai, Aj, _ = make_split_system(N)
    with klujax.analyze(Ai, Aj, N) as sym:
        assert isinstance(sym, klujax.KLUHandleManager)
        assert sym.kind == "symbolic"
        assert sym.dtype is None
        assert sym.owned and not sym.closed
        assert sym.handle.shape == () and sym.handle.dtype == jnp.uint64


def test_analyze_accepts_int64_and_jax_indices():
    Ai, Aj, Ax = make_split_system(N)
    b = rand((N,))
    with klujax.analyze(Ai.astype(np.int64), jnp.asarray(Aj), N) as sym:
        x = klujax.solve_with_symbol(jnp.asarray(Ai), Aj.astype(np.int64), Ax, b, sym)
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N))


def test_analyze_same_pattern_own_ids_shared_analysis():
    Ai, Aj, _ = make_split_system(N, seed=3)
    before = live()
    s1 = klujax.analyze(Ai, Aj, N)
    s2 = klujax.analyze(Ai, Aj, N)
    assert int(s1.handle) != int(s2.handle)
    assert live_delta(before)["symbolic"] == 2
    Ax = make_values(Ai, Aj, N)
    b = rand((N,))
    num = klujax.factor(Ai, Aj, Ax, s1)
    s1.close()
    assert live_delta(before)["symbolic"] == 1  # s2 is untouched
    # a numeric factored through s1 works with s2: both share one analysis
    assert_close(klujax.solve_with_numeric(num, b, s2), reference_solve(Ai, Aj, Ax, b, N))
    num.close()
    assert_close(klujax.solve_with_symbol(Ai, Aj, Ax, b, s2), reference_solve(Ai, Aj, Ax, b, N))
    s2.close()
    assert live_delta(before)["symbolic"] == 0


def test_analyze_n_col_must_be_static():
    Ai, Aj, _ = make_split_system(N)
    with pytest.raises(TypeError, match="n_col"):
        jax.jit(lambda n: klujax.analyze(Ai, Aj, n))(N)
    with pytest.raises(ValueError, match="n_col"):
        klujax.analyze(Ai, Aj, -1)


def test_analyze_bad_indices():
    Ai, Aj, _ = make_split_system(N)
    with pytest.raises(ValueError, match="Ai"):
        klujax.analyze(Ai, Aj[:-1], N)
    with pytest.raises(TypeError, match="Ai"):
        klujax.analyze(Ai.astype(np.float64), Aj, N)
    bad = Ai.copy()
    bad[0] = N  # out of range
    with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match="Ai"):
        klujax.analyze(bad, Aj, N)


# ============================================================================ factor


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch", [None, 1, L], ids=["1d", "2d-1", "2d-L"])
def test_factor_handle_shape_and_metadata(sym_system, ax_batch, dtype):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        assert num.kind == "numeric"
        assert num.dtype == np.dtype(dtype)
        assert num.owned and not num.closed
        assert num.handle.dtype == jnp.uint64
        assert num.handle.shape == (() if ax_batch is None else (ax_batch,))
        ids = np.atleast_1d(np.asarray(num.handle))
        assert len(set(ids.tolist())) == ids.size  # one distinct object per member
        assert live_delta(before)["numeric"] == ids.size
    assert live_delta(before)["numeric"] == 0


def test_factor_twice_gives_distinct_objects(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    with klujax.factor(Ai, Aj, Ax, sym) as n1, klujax.factor(Ai, Aj, 2 * Ax, sym) as n2:
        assert int(n1.handle) != int(n2.handle)
        b = rand((N,))
        assert_close(klujax.solve_with_numeric(n1, b, sym), reference_solve(Ai, Aj, Ax, b, N))
        assert_close(klujax.solve_with_numeric(n2, b, sym), reference_solve(Ai, Aj, 2 * Ax, b, N))


def test_factor_int_values_promote_to_float64(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    Axi = np.round(Ax).astype(np.int32)
    with klujax.factor(Ai, Aj, Axi, sym) as num:
        assert num.dtype == np.float64
        b = rand((N,))
        assert_close(klujax.solve_with_numeric(num, b, sym),
                     reference_solve(Ai, Aj, Axi.astype(np.float64), b, N))


# ============================================================================ solves vs dense


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", SHAPE_ARGS, ids=SHAPE_IDS)
def test_solve_with_symbol(sym_system, ax_batch, b_shape, dtype, transpose, mode):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    b = rand(b_shape, dtype)
    fn = klujax.tsolve_with_symbol if transpose else klujax.solve_with_symbol
    x = _maybe_jit(lambda Ax, b: fn(Ai, Aj, Ax, b, sym), mode)(Ax, b)
    assert x.dtype == np.dtype(dtype)
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N, transpose=transpose))


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", SHAPE_ARGS, ids=SHAPE_IDS)
def test_solve_with_numeric(sym_system, ax_batch, b_shape, dtype, transpose, mode):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    b = rand(b_shape, dtype)
    fn = klujax.tsolve_with_numeric if transpose else klujax.solve_with_numeric
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        x = _maybe_jit(lambda num, b: fn(num, b, sym), mode)(num, b)
        assert x.dtype == np.dtype(dtype)
        assert_close(x, reference_solve(Ai, Aj, Ax, b, N, transpose=transpose))
        # solving again with the same factorization gives the same answer
        assert_close(_maybe_jit(lambda num, b: fn(num, b, sym), mode)(num, b), x)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", SHAPE_ARGS, ids=SHAPE_IDS)
def test_refactor_and_solve(sym_system, ax_batch, b_shape, dtype, mode):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    Ax2 = make_values(Ai, Aj, N, batch=np.shape(Ax)[:-1], dtype=dtype, seed=55)
    b = rand(b_shape, dtype)
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        f = _maybe_jit(lambda Ax2, b, num: klujax.refactor_and_solve(Ai, Aj, Ax2, b, num, sym)[0], mode)
        x = f(Ax2, b, num)
        assert_close(x, reference_solve(Ai, Aj, Ax2, b, N))
        # the refactorization happened in place: the handle now holds Ax2's factors
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax2, b, N))
        assert_close(klujax.tsolve_with_numeric(num, b, sym),
                     reference_solve(Ai, Aj, Ax2, b, N, transpose=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch", [None, L], ids=["1d", "2d"])
def test_refactor_eager_returns_same_manager(sym_system, ax_batch, dtype):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    Ax2 = make_values(Ai, Aj, N, batch=np.shape(Ax)[:-1], dtype=dtype, seed=9)
    b = rand((N,), dtype)
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        ids = np.asarray(num.handle).copy()
        out = klujax.refactor(Ai, Aj, Ax2, num, sym)
        assert out is num
        assert out.owned and not out.closed
        assert_same_objects(np.asarray(out.handle), ids)
        assert live_delta(before)["numeric"] == ids.size  # no new objects
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax2, b, N))
    assert live_delta(before)["numeric"] == 0


def test_refactor_raw_handle_returns_borrowed_manager(sym_system):
    Ai, Aj, Ax, sym = sym_system(L)
    b = rand((L, N))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        out = klujax.refactor(Ai, Aj, 3 * Ax, num.handle, sym)
        assert isinstance(out, klujax.KLUHandleManager)
        assert out.kind == "numeric" and not out.owned
        assert_same_objects(np.asarray(out.handle), np.asarray(num.handle))
        assert_close(klujax.solve_with_numeric(out, b, sym), reference_solve(Ai, Aj, 3 * Ax, b, N))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_refactor_single_member_for_all(sym_system, dtype):
    """A 1D Ax refactors every member of a batched numeric handle."""
    Ai, Aj, Ax, sym = sym_system(L, dtype)
    new = make_values(Ai, Aj, N, dtype=dtype, seed=77)
    b = rand((L, N), dtype)
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        klujax.refactor(Ai, Aj, new, num, sym)
        assert_close(klujax.solve_with_numeric(num, b, sym),
                     reference_solve(Ai, Aj, np.broadcast_to(new, Ax.shape), b, N))


def test_refactor_redoes_pivoting_when_pivots_degrade():
    """Refactor with values whose old pivots are (near) zero must still be exact."""
    n = 3
    Ai, Aj = (a.ravel().astype(np.int32) for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    A1 = 10 * np.eye(n) + 0.1  # pivots on the diagonal
    A2 = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])  # zero diagonal: needs new pivots
    A3 = A2 + 1e-300 * np.eye(n)  # tiny diagonal: refactor "works" but is garbage
    b = np.array([1.0, 2, 3])
    with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, A1.ravel(), sym) as num:
        for A in (A2, A3, A1):
            klujax.refactor(Ai, Aj, A.ravel(), num, sym)
            assert_close(klujax.solve_with_numeric(num, b, sym), np.linalg.solve(A, b))
            assert_close(klujax.refactor_and_solve(Ai, Aj, A.ravel(), b, num, sym)[0],
                         np.linalg.solve(A, b))


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
def test_real_numeric_with_complex_b(sym_system, transpose, mode):
    """A real factorization solves a complex right-hand side (real and imag parts)."""
    Ai, Aj, Ax, sym = sym_system(L, np.float64)
    b = rand((L, N, R), np.complex128)
    fn = klujax.tsolve_with_numeric if transpose else klujax.solve_with_numeric
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        x = _maybe_jit(lambda num, b: fn(num, b, sym), mode)(num, b)
        assert x.dtype == np.complex128
        assert_close(x, reference_solve(Ai, Aj, Ax, b, N, transpose=transpose))


@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
def test_solve_with_symbol_real_Ax_complex_b(sym_system, transpose):
    Ai, Aj, Ax, sym = sym_system(L, np.float64)
    b = rand((L, N), np.complex128)
    fn = klujax.tsolve_with_symbol if transpose else klujax.solve_with_symbol
    x = fn(Ai, Aj, Ax, b, sym)
    assert x.dtype == np.complex128
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N, transpose=transpose))


def test_tsolve_is_plain_transpose_not_conjugate(sym_system):
    Ai, Aj, Ax, sym = sym_system(None, np.complex128)
    b = rand((N,), np.complex128)
    A = dense(Ai, Aj, Ax, N)
    x = klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym)
    assert_close(x, np.linalg.solve(A.T, b))
    assert not np.allclose(np.asarray(x), np.linalg.solve(A.conj().T, b))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        assert_close(klujax.tsolve_with_numeric(num, b, sym), np.linalg.solve(A.T, b))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_singular_member_gives_nan(sym_system, dtype):
    Ai, Aj, Ax, sym = sym_system(L, dtype)
    Ax = Ax.copy()
    Ax[1] = 0  # member 1 is singular
    b = rand((L, N), dtype)
    good = [0, 2]

    def check(x):
        x = np.asarray(x)
        assert np.isnan(x[1]).all()
        assert_close(x[good], reference_solve(Ai, Aj, Ax[good], b[good], N))

    check(klujax.solve_with_symbol(Ai, Aj, Ax, b, sym))
    xt = np.asarray(klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym))
    assert np.isnan(xt[1]).all()
    assert_close(xt[good], reference_solve(Ai, Aj, Ax[good], b[good], N, transpose=True))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        check(klujax.solve_with_numeric(num, b, sym))
        xt = np.asarray(klujax.tsolve_with_numeric(num, b, sym))
        assert np.isnan(xt[1]).all()
        assert_close(xt[good], reference_solve(Ai, Aj, Ax[good], b[good], N, transpose=True))
        # refactoring the singular member with good values recovers it
        Ax_ok = make_values(Ai, Aj, N, batch=(L,), dtype=dtype, seed=5)
        klujax.refactor(Ai, Aj, Ax_ok, num, sym)
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax_ok, b, N))
        # and a good member made singular by refactor gives NaN
        Ax_bad = Ax_ok.copy()
        Ax_bad[2] = 0
        x = np.asarray(klujax.refactor_and_solve(Ai, Aj, Ax_bad, b, num, sym)[0])
        assert np.isnan(x[2]).all() and np.isfinite(x[:2]).all()


@pytest.mark.parametrize("ax_shape", [(0,), (2, 0)], ids=["1d", "2d"])
def test_empty_system(ax_shape):
    """n_col = 0 (no entries): every split function works and returns empty results."""
    e = np.zeros(0, np.int32)
    Ax = np.zeros(ax_shape)
    b = np.zeros((0,)) if len(ax_shape) == 1 else np.zeros((2, 0))
    before = live()
    with klujax.analyze(e, e, 0) as sym:
        assert klujax.solve_with_symbol(e, e, Ax, b, sym).shape == b.shape
        with klujax.factor(e, e, Ax, sym) as num:
            assert num.handle.shape == ax_shape[:-1]
            assert klujax.solve_with_numeric(num, b, sym).shape == b.shape
            assert klujax.tsolve_with_numeric(num, b, sym).shape == b.shape
            assert klujax.refactor_and_solve(e, e, Ax, b, num, sym)[0].shape == b.shape
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}


def test_duplicates_are_summed(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    # make_pattern has one duplicated entry: check the dense reference really sums it
    assert len(set(zip(Ai.tolist(), Aj.tolist()))) == len(Ai) - 1
    b = rand((N,))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))


# ============================================================================ jit


def test_jit_factor_refactor_solve_uses_new_values(sym_system):
    """Regression: inside jit, factor -> refactor -> solve must solve with the NEW values
    (a predecessor dropped the refactor under jit)."""
    Ai, Aj, Ax, sym = sym_system(L)
    Ax2 = make_values(Ai, Aj, N, batch=(L,), seed=31)
    b = rand((L, N))

    @jax.jit
    def f(Ax, Ax2, b):
        num = klujax.factor(Ai, Aj, Ax, sym)
        num = klujax.refactor(Ai, Aj, Ax2, num, sym)
        x = klujax.solve_with_numeric(num, b, sym)
        xt = klujax.tsolve_with_numeric(num, b, sym)
        freed = klujax.free_numeric(num, dependency=(x, xt))
        return x, xt, freed

    before = live()
    with quiet_unowned():
        x, xt, freed = f(Ax, Ax2, b)
    assert_close(x, reference_solve(Ai, Aj, Ax2, b, N))
    assert_close(xt, reference_solve(Ai, Aj, Ax2, b, N, transpose=True))
    assert not np.allclose(np.asarray(x), reference_solve(Ai, Aj, Ax, b, N))
    assert int(freed) == L
    assert live_delta(before)["numeric"] == 0
    # and again with other values: the compiled function really refactors every call
    x, _, _ = f(Ax2, Ax, b)
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
    assert live_delta(before)["numeric"] == 0


def test_jit_refactor_and_solve_uses_new_values(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))

    @jax.jit
    def f(Ax, Ax2, b):
        num = klujax.factor(Ai, Aj, Ax, sym)
        x = klujax.refactor_and_solve(Ai, Aj, Ax2, b, num, sym)[0]
        return x, klujax.free_numeric(num, dependency=x)

    with quiet_unowned():
        for scale in (2.0, 5.0):
            x, freed = f(Ax, scale * Ax, b)
            assert_close(x, reference_solve(Ai, Aj, scale * Ax, b, N))
            assert int(freed) == 1


def test_jit_refactor_of_outer_manager(sym_system):
    """refactor inside jit of a manager passed in as an argument updates it in place."""
    Ai, Aj, Ax, sym = sym_system(L)
    Ax2 = make_values(Ai, Aj, N, batch=(L,), seed=8)
    b = rand((L, N, R))

    @jax.jit
    def f(num, Ax2, b):
        num2 = klujax.refactor(Ai, Aj, Ax2, num, sym)
        assert isinstance(num2, klujax.KLUHandleManager) and not num2.owned
        return klujax.solve_with_numeric(num2, b, sym), num2

    with klujax.factor(Ai, Aj, Ax, sym) as num:
        x, num2 = f(num, Ax2, b)
        assert_close(x, reference_solve(Ai, Aj, Ax2, b, N))
        # the manager returned from jit is borrowed and refers to the same objects
        assert isinstance(num2, klujax.KLUHandleManager) and not num2.owned
        assert_same_objects(np.asarray(num2.handle), np.asarray(num.handle))
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax2, b, N))
        num2.close()  # borrowed: a no-op
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax2, b, N))


def test_jit_solve_before_refactor_sees_old_values(sym_system):
    """Inside jit only data dependencies order operations: a solve that must see the old
    factorization orders the refactor after it with dependency=."""
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))

    @jax.jit
    def f(num, Ax2, b):
        x_old = klujax.solve_with_numeric(num, b, sym)
        num = klujax.refactor(Ai, Aj, Ax2, num, sym, dependency=x_old)
        x_new = klujax.solve_with_numeric(num, b, sym)
        return x_old, x_new

    with klujax.factor(Ai, Aj, Ax, sym) as num:
        x_old, x_new = f(num, 2 * Ax, b)
        assert_close(x_new, reference_solve(Ai, Aj, 2 * Ax, b, N))
        assert_close(x_old, reference_solve(Ai, Aj, Ax, b, N))


def test_refactor_updates_every_value_of_the_handle(sym_system):
    """Handles are references: a refactor is seen through any copy of the handle value."""
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        old = num.handle
        klujax.refactor(Ai, Aj, 2 * Ax, num, sym)
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, 2 * Ax, b, N))
        assert_close(klujax.solve_with_numeric(old, b, sym), reference_solve(Ai, Aj, 2 * Ax, b, N))


def test_jit_symbolic_closed_over_as_constant(sym_system):
    Ai, Aj, Ax, sym = sym_system(L)
    b = rand((L, N))
    f = jax.jit(lambda Ax, b: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym))
    g = jax.jit(lambda Ax, b: klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym))
    for scale in (1.0, -3.0):
        assert_close(f(scale * Ax, b), reference_solve(Ai, Aj, scale * Ax, b, N))
        assert_close(g(scale * Ax, b), reference_solve(Ai, Aj, scale * Ax, b, N, transpose=True))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        # both handles closed over
        h = jax.jit(lambda b: klujax.solve_with_numeric(num, b, sym))
        assert_close(h(b), reference_solve(Ai, Aj, Ax, b, N))
        # eager refactor between calls is seen by the compiled function (handles are references)
        klujax.refactor(Ai, Aj, 2 * Ax, num, sym)
        assert_close(h(b), reference_solve(Ai, Aj, 2 * Ax, b, N))
        klujax.refactor_and_solve(Ai, Aj, 3 * Ax, b, num, sym)[0]
        assert_close(h(b), reference_solve(Ai, Aj, 3 * Ax, b, N))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch", [None, L], ids=["1d", "2d"])
def test_jit_numeric_handles_as_traced_uint64(sym_system, ax_batch, dtype):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    b = rand((L, N, R), dtype)
    Ax2 = make_values(Ai, Aj, N, batch=np.shape(Ax)[:-1], dtype=dtype, seed=4)

    @jax.jit
    def solve(h, s, b):
        assert isinstance(h, jax.core.Tracer) and h.dtype == jnp.uint64
        return klujax.solve_with_numeric(h, b, s), klujax.tsolve_with_numeric(h, b, s)

    @jax.jit
    def refac(h, s, Ax2, b):
        return klujax.refactor_and_solve(Ai, Aj, Ax2, b, h, s)[0]

    with klujax.factor(Ai, Aj, Ax, sym) as num:
        x, xt = solve(num.handle, sym.handle, b)
        assert x.dtype == np.dtype(dtype)
        assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
        assert_close(xt, reference_solve(Ai, Aj, Ax, b, N, transpose=True))
        with quiet_unowned():
            x = refac(num.handle, sym.handle, Ax2, b)
        assert_close(x, reference_solve(Ai, Aj, Ax2, b, N))
        x, _ = solve(num.handle, sym.handle, b)
        assert_close(x, reference_solve(Ai, Aj, Ax2, b, N))


def test_jit_managers_as_arguments(sym_system):
    Ai, Aj, Ax, sym = sym_system(L, np.complex128)
    b = rand((L, N), np.complex128)
    f = jax.jit(lambda num, sym, b: klujax.solve_with_numeric(num, b, sym))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        assert_close(f(num, sym, b), reference_solve(Ai, Aj, Ax, b, N))


@pytest.mark.parametrize("ax_batch", [None, L], ids=["1d", "2d"])
def test_free_numeric_traced_handle_in_jit(sym_system, ax_batch):
    """free_numeric of a handle passed into jit, ordered after the solve by `dependency`:
    the solve must see a live handle and the object must be freed afterwards."""
    Ai, Aj, Ax, sym = sym_system(ax_batch)
    b = rand((N,))

    @jax.jit
    def solve_and_free(h, b):
        x = klujax.solve_with_numeric(h, b, sym)
        return x, klujax.free_numeric(h, dependency=x)

    num = klujax.factor(Ai, Aj, Ax, sym)
    count = np.asarray(num.handle).size
    before = live()
    x, freed = solve_and_free(num.handle, b)
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
    assert int(freed) == count
    assert live_delta(before)["numeric"] == -count
    num.close()  # freeing again (through the finalizer) is harmless
    assert live_delta(before)["numeric"] == -count


def test_free_numeric_of_manager_in_jit_marks_it_closed(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))

    @jax.jit
    def f(num, b):
        x = klujax.solve_with_numeric(num, b, sym)
        freed = klujax.free_numeric(num, dependency=x)
        assert num.closed
        with pytest.raises(ValueError, match="numeric was already freed"):
            klujax.solve_with_numeric(num, b, sym)
        return x, freed

    with klujax.factor(Ai, Aj, Ax, sym) as num:
        before = live()
        x, freed = f(num, b)
        assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
        assert int(freed) == 1
        assert live_delta(before)["numeric"] == -1


def test_free_symbolic_in_jit_after_dependency():
    Ai, Aj, Ax = make_split_system(N, seed=12)
    b = rand((N,))
    before = live()

    @jax.jit
    def f(Ax, b):
        sym = klujax.analyze(Ai, Aj, N)
        num = klujax.factor(Ai, Aj, Ax, sym)
        x = klujax.solve_with_numeric(num, b, sym)
        f1 = klujax.free_numeric(num, dependency=x)
        f2 = klujax.free_symbolic(sym, dependency=(x, f1))
        return x, f1, f2

    with quiet_unowned():
        for scale in (1.0, 2.0, 3.0):
            x, f1, f2 = f(scale * Ax, b)
            assert_close(x, reference_solve(Ai, Aj, scale * Ax, b, N))
            assert (int(f1), int(f2)) == (1, 1)
            assert live_delta(before) == {"symbolic": 0, "numeric": 0}


def test_two_identical_factors_in_jit_are_not_merged(sym_system):
    Ai, Aj, Ax, sym = sym_system()

    @jax.jit
    def f(Ax):
        return klujax.factor(Ai, Aj, Ax, sym).handle, klujax.factor(Ai, Aj, Ax, sym).handle

    before = live()
    with quiet_unowned():
        h1, h2 = f(Ax)
    assert int(h1) != int(h2)
    assert live_delta(before)["numeric"] == 2
    assert int(klujax.free_numeric(jnp.stack([h1, h2]))) == 2
    assert live_delta(before)["numeric"] == 0


def test_unowned_warning_issued_once(sym_system, monkeypatch):
    Ai, Aj, Ax, sym = sym_system()
    monkeypatch.setattr(klujax._handles, "_warned", False)
    with pytest.warns(UserWarning, match=UNOWNED_WARNING) as record:
        h1 = jax.jit(lambda Ax: klujax.factor(Ai, Aj, Ax, sym).handle)(Ax)
    assert len([w for w in record if "inside jax.jit" in str(w.message)]) == 1
    assert "free_numeric" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        h2 = jax.jit(lambda Ax: klujax.factor(Ai, Aj, Ax, sym).handle)(2 * Ax)
        h3 = jax.jit(lambda: klujax.analyze(Ai, Aj, N).handle)()
    klujax.free_numeric(jnp.stack([h1, h2]))
    klujax.free_symbolic(h3)


def test_manager_built_inside_jit_is_not_owned(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    seen = {}

    @jax.jit
    def f(Ax):
        num = klujax.factor(Ai, Aj, Ax, sym)
        seen["owned"] = num.owned
        seen["dtype"] = num.dtype
        return num

    with quiet_unowned():
        num = f(Ax)
    assert seen == {"owned": False, "dtype": np.dtype(np.float64)}
    assert isinstance(num, klujax.KLUHandleManager) and not num.owned
    assert num.dtype == np.float64
    b = rand((N,))
    assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))
    assert int(klujax.free_numeric(num)) == 1


# ============================================================================ vmap


@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("over", ["Ax", "b", "both", "Ax-axis1"])
def test_vmap_solve_with_symbol(sym_system, over, dtype, transpose):
    B = 4
    Ai, Aj, Ax0, sym = sym_system(None, dtype)
    Axs = make_values(Ai, Aj, N, batch=(B,), dtype=dtype, seed=21)
    bs = rand((B, N, R), dtype)
    fn = klujax.tsolve_with_symbol if transpose else klujax.solve_with_symbol
    f = lambda Ax, b: fn(Ai, Aj, Ax, b, sym)  # noqa: E731
    if over == "Ax":
        x = jax.vmap(f, (0, None))(Axs, bs[0])
        ref = [reference_solve(Ai, Aj, Axs[k], bs[0], N, transpose=transpose) for k in range(B)]
    elif over == "b":
        x = jax.vmap(f, (None, 0))(Ax0, bs)
        ref = [reference_solve(Ai, Aj, Ax0, bs[k], N, transpose=transpose) for k in range(B)]
    elif over == "both":
        x = jax.jit(jax.vmap(f))(Axs, bs)
        ref = [reference_solve(Ai, Aj, Axs[k], bs[k], N, transpose=transpose) for k in range(B)]
    else:
        x = jax.vmap(f, (1, 2), out_axes=1)(Axs.T, np.moveaxis(bs, 0, 2))
        x = jnp.moveaxis(x, 1, 0)
        ref = [reference_solve(Ai, Aj, Axs[k], bs[k], N, transpose=transpose) for k in range(B)]
    assert_close(x, np.stack(ref))


@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("over", ["numeric", "b", "both", "both-batched-members"])
def test_vmap_solve_with_numeric(sym_system, over, dtype, transpose):
    B = 4
    Ai, Aj, _, sym = sym_system(None, dtype)
    fn = klujax.tsolve_with_numeric if transpose else klujax.solve_with_numeric
    f = lambda num, b: fn(num, b, sym)  # noqa: E731
    if over == "both-batched-members":
        Axs = make_values(Ai, Aj, N, batch=(B, L), dtype=dtype, seed=22)
        bs = rand((B, L, N), dtype)
        with klujax.factor(Ai, Aj, Axs.reshape(B * L, -1), sym) as num:
            h = num.handle.reshape(B, L)
            x = jax.vmap(f)(h, bs)
        ref = [reference_solve(Ai, Aj, Axs[k], bs[k], N, transpose=transpose) for k in range(B)]
        assert_close(x, np.stack(ref))
        return
    Axs = make_values(Ai, Aj, N, batch=(B,), dtype=dtype, seed=22)
    bs = rand((B, N), dtype)
    with klujax.factor(Ai, Aj, Axs, sym) as num:  # handle (B,)
        if over == "numeric":
            x = jax.vmap(f, (0, None))(num, bs[0])  # vmap over the manager (a pytree)
            ref = [reference_solve(Ai, Aj, Axs[k], bs[0], N, transpose=transpose) for k in range(B)]
        elif over == "b":
            with klujax.factor(Ai, Aj, Axs[0], sym) as one:
                x = jax.vmap(f, (None, 0))(one, bs)
            ref = [reference_solve(Ai, Aj, Axs[0], bs[k], N, transpose=transpose) for k in range(B)]
        else:
            x = jax.jit(jax.vmap(f))(num.handle, bs)
            ref = [reference_solve(Ai, Aj, Axs[k], bs[k], N, transpose=transpose) for k in range(B)]
    assert_close(x, np.stack(ref))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_vmap_factor_and_refactor(sym_system, dtype):
    B = 4
    Ai, Aj, _, sym = sym_system(None, dtype)
    Axs = make_values(Ai, Aj, N, batch=(B,), dtype=dtype, seed=23)
    Axs2 = make_values(Ai, Aj, N, batch=(B,), dtype=dtype, seed=24)
    b = rand((N,), dtype)
    before = live()
    with quiet_unowned():
        h = jax.vmap(lambda Ax: klujax.factor(Ai, Aj, Ax, sym).handle)(Axs)
    assert h.shape == (B,) and h.dtype == jnp.uint64
    assert live_delta(before)["numeric"] == B
    x = klujax.solve_with_numeric(h, b, sym)
    assert_close(x, reference_solve(Ai, Aj, Axs, b, N))
    with quiet_unowned():
        h2 = jax.vmap(lambda h, Ax: klujax.refactor(Ai, Aj, Ax, h, sym).handle)(h, Axs2)
        assert_same_objects(np.asarray(h2), np.asarray(h))
        # a single Ax broadcast to every handle
        xs = jax.vmap(lambda h: klujax.refactor_and_solve(Ai, Aj, Axs2[0], b, h, sym)[0])(h2)
    assert_close(xs, reference_solve(Ai, Aj, np.broadcast_to(Axs2[0], Axs2.shape), b, N))
    with pytest.raises(ValueError, match="numeric handles"):
        jax.vmap(lambda Ax: klujax.refactor(Ai, Aj, Ax, h[0], sym).handle)(Axs2)
    assert int(jax.jit(lambda h: klujax.free_numeric(h))(h2)) == B
    assert live_delta(before)["numeric"] == 0


def test_vmap_free_numeric(sym_system):
    Ai, Aj, Ax, sym = sym_system(L)
    num = klujax.factor(Ai, Aj, Ax, sym)
    before = live()
    jax.vmap(lambda h: klujax.free_numeric(h))(num.handle)
    assert live_delta(before)["numeric"] == -L


def test_vmap_over_symbolic_raises(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))
    syms = jnp.stack([sym.handle, sym.handle])
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        calls = {
            "solve_with_symbol": lambda s: klujax.solve_with_symbol(Ai, Aj, Ax, b, s),
            "tsolve_with_symbol": lambda s: klujax.tsolve_with_symbol(Ai, Aj, Ax, b, s),
            "solve_with_numeric": lambda s: klujax.solve_with_numeric(num, b, s),
            "tsolve_with_numeric": lambda s: klujax.tsolve_with_numeric(num, b, s),
            "factor": lambda s: klujax.factor(Ai, Aj, Ax, s).handle,
            "refactor": lambda s: klujax.refactor(Ai, Aj, Ax, num, s).handle,
        }
        for name, call in calls.items():
            with quiet_unowned(), pytest.raises(ValueError, match="symbolic handle"):
                jax.vmap(call)(syms)


def test_vmap_over_indices_raises(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))
    with pytest.raises(ValueError, match="Ai"):
        jax.vmap(lambda Ai: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym))(np.stack([Ai, Ai]))


# ============================================================================ derivatives


@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", [(None, (N,)), (L, (L, N, R))], ids=["single", "batched"])
def test_check_grads_solve_with_symbol(sym_system, ax_batch, b_shape, dtype, transpose):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    b = rand(b_shape, dtype)
    fn = klujax.tsolve_with_symbol if transpose else klujax.solve_with_symbol
    check_grads(lambda Ax, b: fn(Ai, Aj, Ax, b, sym), (jnp.asarray(Ax), jnp.asarray(b)),
                order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", [(None, (N, R)), (L, (L, N))], ids=["single", "batched"])
def test_check_grads_solve_with_numeric(sym_system, ax_batch, b_shape, dtype, transpose):
    Ai, Aj, Ax, sym = sym_system(ax_batch, dtype)
    b = rand(b_shape, dtype)
    fn = klujax.tsolve_with_numeric if transpose else klujax.solve_with_numeric
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        check_grads(lambda b: fn(num, b, sym), (jnp.asarray(b),), order=2, modes=("fwd", "rev"))


def _dense_solve_jnp(Ai, Aj, Ax, b, transpose=False):
    """Differentiable dense reference for Ax (L, n_nz) and b (L, N)."""
    A = jnp.zeros((Ax.shape[0], N, N), Ax.dtype).at[:, Ai, Aj].add(Ax)
    if transpose:
        A = jnp.swapaxes(A, -1, -2)
    return jnp.linalg.solve(A, b[..., None])[..., 0]


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("transpose", [False, True], ids=["solve", "tsolve"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_grads_match_dense_reference(sym_system, dtype, transpose, mode):
    Ai, Aj, Ax, sym = sym_system(L, dtype)
    b = jnp.asarray(rand((L, N), dtype))
    Ax = jnp.asarray(Ax)
    sws = klujax.tsolve_with_symbol if transpose else klujax.solve_with_symbol
    swn = klujax.tsolve_with_numeric if transpose else klujax.solve_with_numeric

    def loss(solve):
        return lambda Ax, b: jnp.sum(jnp.abs(solve(Ax, b)) ** 2 + jnp.real(solve(Ax, b)))

    ref_gAx, ref_gb = jax.grad(loss(lambda Ax, b: _dense_solve_jnp(Ai, Aj, Ax, b, transpose)),
                               argnums=(0, 1))(Ax, b)
    gAx, gb = _maybe_jit(jax.grad(loss(lambda Ax, b: sws(Ai, Aj, Ax, b, sym)), argnums=(0, 1)),
                         mode)(Ax, b)
    assert_close(gAx, ref_gAx, rtol=1e-9, atol=1e-9)
    assert_close(gb, ref_gb, rtol=1e-9, atol=1e-9)
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        gb2 = _maybe_jit(jax.grad(loss(lambda _, b: swn(num, b, sym)), argnums=1), mode)(Ax, b)
        assert_close(gb2, ref_gb, rtol=1e-9, atol=1e-9)
        if not transpose:  # refactor_and_solve is differentiable w.r.t. b
            rs = lambda Ax, b: klujax.refactor_and_solve(Ai, Aj, Ax, b, num, sym)[0]  # noqa: E731
            gb3 = _maybe_jit(jax.grad(loss(rs), argnums=1), mode)(Ax, b)
            assert_close(gb3, ref_gb, rtol=1e-9, atol=1e-9)


def test_jvp_solve_with_symbol_matches_dense(sym_system):
    Ai, Aj, Ax, sym = sym_system(L, np.complex128)
    b = jnp.asarray(rand((L, N), np.complex128))
    Ax = jnp.asarray(Ax)
    dAx = jnp.asarray(rand(Ax.shape, np.complex128, seed=3))
    db = jnp.asarray(rand(b.shape, np.complex128, seed=4))
    x, dx = jax.jvp(lambda Ax, b: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym), (Ax, b), (dAx, db))
    xr, dxr = jax.jvp(lambda Ax, b: _dense_solve_jnp(Ai, Aj, Ax, b), (Ax, b), (dAx, db))
    assert_close(x, xr)
    assert_close(dx, dxr, rtol=1e-9, atol=1e-9)


def test_vmap_of_grad_solve_with_symbol(sym_system):
    B = 3
    Ai, Aj, _, sym = sym_system()
    Axs = jnp.asarray(make_values(Ai, Aj, N, batch=(B,), seed=41))
    b = jnp.asarray(rand((N,)))
    g = jax.vmap(jax.grad(lambda Ax: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym).sum()))(Axs)
    gr = jax.vmap(jax.grad(lambda Ax: _dense_solve_jnp(Ai, Aj, Ax[None], b[None])[0].sum()))(Axs)
    assert_close(g, gr, rtol=1e-9, atol=1e-9)


def test_grad_refactor_and_solve_wrt_Ax_raises(sym_system):
    Ai, Aj, Ax, sym = sym_system()
    b = rand((N,))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        f = lambda Ax: klujax.refactor_and_solve(Ai, Aj, Ax, b, num, sym)[0].sum()  # noqa: E731
        for d in (jax.grad(f), jax.jit(jax.grad(f))):
            with pytest.raises(NotImplementedError, match=r"refactor is not differentiable w\.r\.t\. Ax"):
                d(jnp.asarray(Ax))
        with pytest.raises(NotImplementedError, match="solve_with_symbol"):
            jax.jvp(f, (jnp.asarray(Ax),), (jnp.ones_like(Ax),))


def test_grad_factor_wrt_Ax_raises(sym_system):
    Ai, Aj, Ax, sym = sym_system(L)
    b = rand((L, N))

    def f(Ax):
        num = klujax.factor(Ai, Aj, Ax, sym)
        return klujax.solve_with_numeric(num, b, sym).sum()

    with quiet_unowned():
        for d in (jax.grad(f), jax.jacfwd(f)):
            with pytest.raises(NotImplementedError, match=r"factor is not differentiable w\.r\.t\. Ax"):
                d(jnp.asarray(Ax))


def test_solve_with_numeric_is_not_differentiable_wrt_handle_but_ok_for_b(sym_system):
    """Differentiating w.r.t. b with the handle as a (closed-over) integer input works,
    and stop_gradient / integer handles never carry tangents."""
    Ai, Aj, Ax, sym = sym_system()
    b = jnp.asarray(rand((N,)))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        g = jax.grad(lambda b, h: klujax.solve_with_numeric(h, b, sym).sum())(b, num.handle)
        A = dense(Ai, Aj, Ax, N)
        assert_close(g, np.linalg.solve(A.T, np.ones(N)))
