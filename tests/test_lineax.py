"""klujax.lineax: SparseOperator and the KLU solver inside lineax (skipped without lineax).

Modelled on lineax's own solver tests (well-posed solves against ``jnp.linalg.solve``,
``jax.linear_transpose`` against a solve with ``operator.T``, vmap over the operator
and/or the vector, JVPs against the dense reference), with and without a precomputed
state, for float64 and complex128.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

lx = pytest.importorskip("lineax")
eqx = pytest.importorskip("equinox")

import klujax  # noqa: E402
import klujax.lineax as klx  # noqa: E402
from helpers import assert_close, dense, make_system, random_array  # noqa: E402

DTYPES = [np.float64, np.complex128]
N = 9


def _system(dtype, n=N, seed=0):
    Ai, Aj, Ax = make_system(n, dtype=dtype, density=0.3, duplicates=2, seed=seed)
    return Ai, Aj, Ax, dense(Ai, Aj, Ax, n)


def _solve(Ai, Aj, n, Ax, b, solver=None, **kw):
    op = klx.SparseOperator(Ai, Aj, Ax, n)
    return lx.linear_solve(op, b, solver=klx.KLU() if solver is None else solver, **kw).value


def _dense_solve(Ai, Aj, n, Ax, b):
    return jnp.linalg.solve(jnp.zeros((n, n), Ax.dtype).at[Ai, Aj].add(Ax), b)


def _counts():
    info = klujax.cache_info()
    return info["numeric_hits"], info["numeric_misses"]


#== the operator ==#

@pytest.mark.parametrize("dtype", DTYPES)
def test_operator_matches_dense(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    op = klx.SparseOperator(Ai, Aj, Ax, N)
    x = random_array((N,), dtype, seed=3)
    assert op.in_structure() == jax.ShapeDtypeStruct((N,), dtype)
    assert op.out_structure() == jax.ShapeDtypeStruct((N,), dtype)
    assert op.in_size() == op.out_size() == N
    assert_close(op.as_matrix(), M, dtype=dtype)
    assert_close(op.mv(jnp.asarray(x)), M @ x, dtype=dtype)
    assert_close(op.T.as_matrix(), M.T)
    assert_close(op.T.mv(jnp.asarray(x)), M.T @ x)
    assert_close(lx.conj(op).as_matrix(), M.conj())
    assert_close(lx.diagonal(op), np.diagonal(M))
    diag, lower, upper = lx.tridiagonal(op)
    assert_close(diag, np.diagonal(M))
    assert_close(lower, np.diagonal(M, -1))
    assert_close(upper, np.diagonal(M, 1))
    assert lx.linearise(op) is op and lx.materialise(op) is op
    # no tags: every structure query answers False (the conservative answer)
    for query in (lx.is_symmetric, lx.is_diagonal, lx.is_tridiagonal, lx.has_unit_diagonal,
                  lx.is_lower_triangular, lx.is_upper_triangular,
                  lx.is_positive_semidefinite, lx.is_negative_semidefinite):
        assert query(op) is False, query.__name__


def test_operator_tags():
    Ai, Aj, Ax, M = _system(np.float64)
    S = M + M.T
    Si, Sj = np.nonzero(S)
    sym = klx.SparseOperator(Si, Sj, S[Si, Sj], N, tags=lx.symmetric_tag)
    assert lx.is_symmetric(sym) and not lx.is_diagonal(sym)
    assert sym.T is sym
    psd = klx.SparseOperator(Si, Sj, S[Si, Sj], N, tags=[lx.positive_semidefinite_tag])
    assert lx.is_symmetric(psd) and lx.is_positive_semidefinite(psd)
    psd_c = klx.SparseOperator(Si, Sj, S[Si, Sj].astype(complex), N,
                               tags=lx.positive_semidefinite_tag)
    assert not lx.is_symmetric(psd_c)  # Hermitian, not symmetric
    d = np.arange(N)
    diag = klx.SparseOperator(d, d, np.arange(1.0, N + 1), N, tags=lx.diagonal_tag)
    assert lx.is_diagonal(diag) and lx.is_tridiagonal(diag) and lx.is_symmetric(diag)
    lo = klx.SparseOperator(Ai, Aj, Ax, N, tags=lx.lower_triangular_tag)
    assert lx.is_lower_triangular(lo) and lx.is_upper_triangular(lo.T)
    one = klx.SparseOperator([0], [0], [2.0], 1)
    assert lx.is_diagonal(one)


def test_operator_from_sparse_matrices():
    sparse = pytest.importorskip("jax.experimental.sparse")
    sp = pytest.importorskip("scipy.sparse")
    Ai, Aj, Ax, M = _system(np.float64)
    for A in (sparse.BCOO.fromdense(M, nse=len(Ax) + 5), sparse.BCSR.fromdense(M),
              sp.csr_matrix(M), sp.coo_array(M)):
        op = klx.SparseOperator(A)
        assert op.n == N
        assert_close(op.as_matrix(), M)
    op = klx.SparseOperator(Ai, Aj, np.arange(len(Ai)), N)  # integer values -> float
    assert jnp.issubdtype(op.Ax.dtype, jnp.floating)


def test_operator_errors():
    sparse = pytest.importorskip("jax.experimental.sparse")
    Ai, Aj, Ax, M = _system(np.float64)
    with pytest.raises(TypeError, match="missing argument n"):
        klx.SparseOperator(Ai, Aj, Ax)
    with pytest.raises(TypeError, match="not both"):
        klx.SparseOperator(sparse.BCOO.fromdense(M), Aj)
    with pytest.raises(ValueError, match="jax.vmap"):
        klx.SparseOperator(Ai, Aj, np.stack([Ax, Ax]), N)
    with pytest.raises(ValueError, match="disagree on n_nz"):
        klx.SparseOperator(Ai, Aj[:-1], Ax, N)
    with pytest.raises(TypeError, match="integer"):
        klx.SparseOperator(Ai.astype(float), Aj, Ax, N)


#== well-posed solves ==#

@pytest.mark.parametrize("use_state", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_well_posed(dtype, use_state):
    Ai, Aj, Ax, M = _system(dtype)
    op = klx.SparseOperator(Ai, Aj, Ax, N)
    true_x = random_array((N,), dtype, seed=5)
    b = jnp.asarray(M @ true_x)
    solver = klx.KLU()
    kw = {"state": solver.init(op, {})} if use_state else {}
    sol = lx.linear_solve(op, b, solver=solver, **kw)
    assert sol.result == lx.RESULTS.successful
    assert_close(sol.value, true_x, dtype=dtype)
    assert_close(sol.value, jnp.linalg.solve(jnp.asarray(M), b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    b = random_array((N,), dtype, seed=6)

    @eqx.filter_jit
    def solve(op, b):
        return lx.linear_solve(op, b, solver=klx.KLU()).value

    op = klx.SparseOperator(Ai, Aj, Ax, N)
    assert_close(solve(op, jnp.asarray(b)), np.linalg.solve(M, b), dtype=dtype)
    # the values as a traced argument, the indices closed over
    f = jax.jit(functools.partial(_solve, Ai, Aj, N))
    assert_close(f(jnp.asarray(Ax), jnp.asarray(b)), np.linalg.solve(M, b), dtype=dtype)


def test_jit_bcoo_traced_indices():
    sparse = pytest.importorskip("jax.experimental.sparse")
    Ai, Aj, Ax, M = _system(np.float64)
    A = sparse.BCOO.fromdense(M, nse=len(Ax) + 3)
    b = random_array((N,), seed=7)
    x = jax.jit(lambda A, b: lx.linear_solve(klx.SparseOperator(A), b, klx.KLU()).value)(A, b)
    assert_close(x, np.linalg.solve(M, b))


def test_tagged_operator():
    Ai, Aj, Ax, M = _system(np.float64)
    S = M + M.T
    Si, Sj = np.nonzero(S)
    op = lx.TaggedLinearOperator(klx.SparseOperator(Si, Sj, S[Si, Sj], N), lx.symmetric_tag)
    b = random_array((N,), seed=8)
    assert_close(lx.linear_solve(op, jnp.asarray(b), klx.KLU()).value, np.linalg.solve(S, b))


@pytest.mark.x64_off
def test_x64_off():
    Ai, Aj, Ax, M = _system(np.float64)
    b = random_array((N,), seed=9)
    x = _solve(Ai, Aj, N, jnp.asarray(Ax), jnp.asarray(b))
    assert x.dtype == jnp.float32
    assert_close(x, np.linalg.solve(M, b).astype(np.float32))


def test_singular():
    Ai, Aj, Ax, M = _system(np.float64)
    Ax0 = np.where(Aj == 2, 0.0, Ax)  # column 2 is zero
    b = jnp.asarray(random_array((N,), seed=10))
    sol = lx.linear_solve(klx.SparseOperator(Ai, Aj, Ax0, N), b, klx.KLU(), throw=False)
    assert sol.result == lx.RESULTS.singular
    with pytest.raises(Exception, match="singular"):
        lx.linear_solve(klx.SparseOperator(Ai, Aj, Ax0, N), b, klx.KLU()).value.block_until_ready()


#== transpose and conj ==#

@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    op = klx.SparseOperator(Ai, Aj, Ax, N)
    out_vec = jnp.asarray(random_array((N,), dtype, seed=11))
    in_vec = jnp.asarray(random_array((N,), dtype, seed=12))
    solver = klx.KLU()

    @eqx.filter_jit
    def solve_transpose(op, out_vec, in_vec):
        return jax.linear_transpose(lambda v: lx.linear_solve(op, v, solver).value, out_vec)(in_vec)

    (out,) = solve_transpose(op, out_vec, in_vec)
    true_out = lx.linear_solve(op.T, in_vec, solver).value
    assert_close(out, true_out, dtype=dtype)
    assert_close(out, np.linalg.solve(M.T, np.asarray(in_vec)))
    # the transposed state, straight from the solver
    state_t, _ = solver.transpose(solver.init(op, {}), {})
    x, result, _ = solver.compute(state_t, in_vec, {})
    assert result == lx.RESULTS.successful
    assert_close(x, np.linalg.solve(M.T, np.asarray(in_vec)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conj(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    op = klx.SparseOperator(Ai, Aj, Ax, N)
    b = jnp.asarray(random_array((N,), dtype, seed=13))
    solver = klx.KLU()
    state = solver.init(op, {})
    state_c, _ = solver.conj(state, {})
    assert_close(solver.compute(state_c, b, {})[0], np.linalg.solve(M.conj(), b), dtype=dtype)
    state_h, _ = solver.transpose(state_c, {})  # conjugate transpose
    assert_close(solver.compute(state_h, b, {})[0], np.linalg.solve(M.conj().T, b))
    state_cc, _ = solver.conj(state_c, {})
    assert_close(solver.compute(state_cc, b, {})[0], np.linalg.solve(M, b))
    # the same through lineax's own conj of the operator
    assert_close(lx.linear_solve(lx.conj(op), b, solver).value, np.linalg.solve(M.conj(), b))


#== vmap ==#

@pytest.mark.parametrize("use_state", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_vmap(dtype, use_state):
    Ai, Aj, _, _ = _system(dtype)
    B = 4
    Ax = make_system(N, n_lhs=B, dtype=dtype, duplicates=2, seed=0)[2]  # same pattern
    Ms = dense(Ai, Aj, Ax, N)
    bs = random_array((B, N), dtype, seed=14)
    solver = klx.KLU()

    def solve(Ax, b):
        op = klx.SparseOperator(Ai, Aj, Ax, N)
        state = solver.init(op, {}) if use_state else None
        kw = {"state": state} if use_state else {}
        return lx.linear_solve(op, b, solver, **kw).value

    ref = np.stack([np.linalg.solve(Ms[k], bs[k]) for k in range(B)])
    assert_close(jax.vmap(solve)(Ax, bs), ref, dtype=dtype)  # both batched
    ref_b = np.stack([np.linalg.solve(Ms[0], bs[k]) for k in range(B)])
    assert_close(jax.vmap(solve, (None, 0))(Ax[0], bs), ref_b)  # b only
    ref_a = np.stack([np.linalg.solve(Ms[k], bs[0]) for k in range(B)])
    assert_close(jax.vmap(solve, (0, None))(Ax, bs[0]), ref_a)  # operator values only
    assert_close(jax.jit(jax.vmap(solve))(Ax, bs), ref)


def test_vmap_over_operator():
    Ai, Aj, _, _ = _system(np.float64)
    B = 3
    Ax = make_system(N, n_lhs=B, duplicates=2, seed=0)[2]
    ops = jax.vmap(lambda a: klx.SparseOperator(Ai, Aj, a, N))(jnp.asarray(Ax))
    b = random_array((N,), seed=15)
    x = eqx.filter_vmap(lambda op: lx.linear_solve(op, jnp.asarray(b), klx.KLU()).value)(ops)
    Ms = dense(Ai, Aj, Ax, N)
    assert_close(x, np.stack([np.linalg.solve(M, b) for M in Ms]))


#== derivatives ==#

@pytest.mark.parametrize("dtype", DTYPES)
def test_grads(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    b = jnp.asarray(random_array((N,), dtype, seed=16))
    f = functools.partial(_solve, Ai, Aj, N)
    check_grads(f, (jnp.asarray(Ax), b), order=2, modes=("fwd", "rev"))
    # against the dense reference
    loss = lambda solve: lambda Ax, b: jnp.sum(jnp.abs(solve(Ai, Aj, N, Ax, b)) ** 2)
    g = jax.grad(loss(_solve), argnums=(0, 1))(jnp.asarray(Ax), b)
    g_ref = jax.grad(loss(_dense_solve), argnums=(0, 1))(jnp.asarray(Ax), b)
    assert_close(g[0], g_ref[0])
    assert_close(g[1], g_ref[1])
    t = (jnp.asarray(random_array(Ax.shape, dtype, seed=17)), jnp.ones_like(b))
    _, dx = jax.jvp(functools.partial(_solve, Ai, Aj, N), (jnp.asarray(Ax), b), t)
    _, dx_ref = jax.jvp(functools.partial(_dense_solve, Ai, Aj, N), (jnp.asarray(Ax), b), t)
    assert_close(dx, dx_ref)


def test_vmap_grad():
    Ai, Aj, Ax, M = _system(np.float64)
    bs = jnp.asarray(random_array((5, N), seed=18))
    loss = lambda solve: lambda Ax, b: jnp.sum(solve(Ai, Aj, N, Ax, b) ** 2)
    g = jax.jit(jax.vmap(jax.grad(loss(_solve)), (None, 0)))(jnp.asarray(Ax), bs)
    g_ref = jax.vmap(jax.grad(loss(_dense_solve)), (None, 0))(jnp.asarray(Ax), bs)
    assert_close(g, g_ref)


#== the factorization is reused ==#

def test_factorization_reused():
    Ai, Aj, Ax, M = _system(np.float64, seed=3)
    Ax = jnp.asarray(Ax)
    b1, b2 = (jnp.asarray(random_array((N,), seed=s)) for s in (19, 20))
    klujax.clear_cache()
    solver = klx.KLU()
    op = klx.SparseOperator(Ai, Aj, Ax, N)
    state = solver.init(op, {})
    h0, m0 = _counts()
    x1 = lx.linear_solve(op, b1, solver, state=state).value
    h1, m1 = _counts()
    assert (h1 - h0, m1 - m0) == (0, 1)  # the first compute factors
    x2 = lx.linear_solve(op, b2, solver, state=state).value
    state_t, _ = solver.transpose(state, {})
    x3 = solver.compute(state_t, b1, {})[0]
    state_c, _ = solver.conj(state, {})
    solver.compute(state_c, b1, {})[0].block_until_ready()
    h2, m2 = _counts()
    assert (h2 - h1, m2 - m1) == (3, 0)  # the others only solve
    assert_close(x1, np.linalg.solve(M, b1))
    assert_close(x2, np.linalg.solve(M, b2))
    assert_close(x3, np.linalg.solve(M.T, b1))
    # reverse mode: the forward solve factors (new values), the transposed one reuses it
    g = jax.jit(jax.grad(lambda a: _solve(Ai, Aj, N, a, b1).sum()))(Ax * 2)
    g.block_until_ready()
    h3, m3 = _counts()
    assert (h3 - h2, m3 - m2) == (1, 1)


#== general operators with a sparsity pattern ==#

def _tridiagonal(n, dtype=np.float64, seed=21):
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    Ai = np.concatenate([i, i[1:], i[:-1]])
    Aj = np.concatenate([i, i[:-1], i[1:]])
    Ax = np.concatenate([4 + rng.random(n), rng.random(n - 1), rng.random(n - 1)]).astype(dtype)
    return Ai, Aj, Ax, dense(Ai, Aj, Ax, n)


def test_pattern_colouring():
    Ai, Aj, _, _ = _tridiagonal(12)
    assert klx.KLU(pattern=(Ai, Aj)).pattern.n_colours == 3
    d = np.arange(12)
    assert klx.KLU(pattern=(d, d)).pattern.n_colours == 1
    twice = (np.concatenate([Ai, Ai]), np.concatenate([Aj, Aj]))  # duplicates count once
    assert klx.KLU(pattern=twice).pattern.n_colours == 3
    assert klx.KLU(pattern=twice).pattern.Ai.size == Ai.size
    assert klx.KLU(pattern=(Ai, Aj)) == klx.KLU(pattern=(Ai.copy(), Aj.copy()))  # static, hashable


@pytest.mark.parametrize("dtype", DTYPES)
def test_pattern_function_operator(dtype):
    Ai, Aj, Ax, M = _system(dtype)
    b = jnp.asarray(random_array((N,), dtype, seed=22))
    Mj = jnp.asarray(M)
    fop = lx.FunctionLinearOperator(lambda v: Mj @ v, jax.ShapeDtypeStruct((N,), dtype))
    for pattern in ((Ai, Aj), (np.nonzero(M)[0], np.nonzero(M)[1])):
        x = lx.linear_solve(fop, b, klx.KLU(pattern=pattern)).value
        assert_close(x, np.linalg.solve(M, b), dtype=dtype)
    # a superset of the pattern is fine
    full = np.nonzero(np.ones((N, N)))
    assert_close(lx.linear_solve(fop, b, klx.KLU(pattern=full)).value, np.linalg.solve(M, b))
    mop = lx.MatrixLinearOperator(Mj)
    assert_close(lx.linear_solve(mop, b, klx.KLU(pattern=(Ai, Aj))).value, np.linalg.solve(M, b))


def test_pattern_jacobian_operator_grad():
    """A nonlinear F(y, p) with a tridiagonal Jacobian: solve J(y, p) x = b, differentiate in p."""
    n = 10
    Ai, Aj, _, _ = _tridiagonal(n)
    y = jnp.linspace(0.1, 1.0, n)
    b = jnp.asarray(random_array((n,), seed=23))

    def F(y, p):
        left = jnp.roll(y, 1).at[0].set(0)  # y[i - 1], zero at the boundary
        right = jnp.roll(y, -1).at[-1].set(0)  # y[i + 1]
        return p * y**3 / 3 + 4 * y + 0.5 * (left - right)

    def solve(p, solver):
        op = lx.JacobianLinearOperator(lambda y, args: F(y, args), y, p)
        return lx.linear_solve(op, b, solver).value

    klu = klx.KLU(pattern=(Ai, Aj))
    for p in (0.5, 2.0):
        assert_close(solve(p, klu), solve(p, lx.LU()))
        assert_close(jax.grad(lambda p: solve(p, klu).sum())(p),
                     jax.grad(lambda p: solve(p, lx.LU()).sum())(p))


def test_solver_errors():
    Ai, Aj, Ax, M = _system(np.float64)
    b = jnp.zeros(N)
    with pytest.raises(TypeError, match="pattern"):
        lx.linear_solve(lx.MatrixLinearOperator(jnp.asarray(M)), b, klx.KLU())
    with pytest.raises(ValueError, match="square"):
        klx.KLU(pattern=(Ai, Aj)).init(lx.MatrixLinearOperator(jnp.ones((N, N + 1))), {})
    with pytest.raises(ValueError, match="outside"):
        klx.KLU(pattern=(Ai, Aj)).init(lx.MatrixLinearOperator(jnp.ones((3, 3))), {})
    with pytest.raises(TypeError, match="pattern must be"):
        klx.KLU(pattern=Ai)
    with pytest.raises(TypeError, match="KLUOptions"):
        klx.KLU(options={"tol": 0.1})
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda i: klx.KLU(pattern=(i, i)).pattern)(jnp.arange(3))


def test_options():
    Ai, Aj, Ax, M = _system(np.float64)
    b = random_array((N,), seed=24)
    solver = klx.KLU(options=klujax.KLUOptions(ordering="colamd", tol=0.5))
    assert_close(_solve(Ai, Aj, N, jnp.asarray(Ax), jnp.asarray(b), solver), np.linalg.solve(M, b))
