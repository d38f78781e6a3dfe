"""Sparse-matrix inputs (BCOO, BCSR, scipy.sparse, lists) against the COO path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import dense, make_system
from jax.experimental import sparse
from jax.test_util import check_grads

import klujax

N, L = 7, 3
DTYPES = [np.float64, np.complex128]


def _system(dtype, batch=None, seed=0):
    Ai, Aj, Ax = make_system(N, n_lhs=batch, dtype=dtype, seed=seed)
    return Ai, Aj, Ax, dense(Ai, Aj, Ax, N)


def bcoo(M, batch=False, nse=None):
    return sparse.BCOO.fromdense(M, n_batch=1 if batch else 0, nse=nse)


def bcsr(M, batch=False):
    return sparse.BCSR.fromdense(M, n_batch=1 if batch else 0)


FORMATS = {
    "bcoo": lambda M: bcoo(M),
    "bcoo-padded": lambda M: bcoo(M, nse=int((M != 0).sum()) + 5),
    "bcsr": lambda M: bcsr(M),
    "scipy-coo": lambda M: sp.coo_matrix(M),
    "scipy-csr": lambda M: sp.csr_matrix(M),
    "scipy-csc_array": lambda M: sp.csc_array(M),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=list(FORMATS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_solve_dot_match_coo(fmt, dtype):
    Ai, Aj, Ax, M = _system(dtype)
    A = FORMATS[fmt](M)
    b = np.arange(1.0, N + 1).astype(dtype)
    ref = klujax.solve(Ai, Aj, Ax, b)
    np.testing.assert_allclose(klujax.solve(A, b), ref, rtol=1e-12)
    np.testing.assert_allclose(klujax.solve(A, b[:, None] * [1, 2]), np.linalg.solve(M, b[:, None] * [1, 2]),
                               rtol=1e-12)
    np.testing.assert_allclose(klujax.dot(A, ref), b, rtol=1e-12)
    np.testing.assert_allclose(klujax.slogdet(A)[1], np.linalg.slogdet(M)[1], rtol=1e-12)
    np.testing.assert_allclose(klujax.condest(A), klujax.condest(Ai, Aj, Ax, N), rtol=1e-12)
    with klujax.analyze(A) as sym, klujax.factor(A, sym) as num:
        np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym), ref, rtol=1e-12)
        np.testing.assert_allclose(klujax.solve_with_symbol(A, b, sym), ref, rtol=1e-12)
        np.testing.assert_allclose(klujax.tsolve_with_symbol(A, b, sym), np.linalg.solve(M.T, b),
                                   rtol=1e-12)
        klujax.refactor(FORMATS[fmt](2 * M), num, sym)
        np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym), ref / 2, rtol=1e-12)
        x, _ = klujax.refactor_and_solve(FORMATS[fmt](4 * M), b, num, sym)
        np.testing.assert_allclose(x, ref / 4, rtol=1e-12)


@pytest.mark.parametrize("kind", ["bcoo", "bcsr"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_jax_formats_under_jit_vmap_and_grad(kind, dtype):
    Ai, Aj, Ax, M = _system(dtype)
    make = bcoo if kind == "bcoo" else bcsr
    A = make(M)
    b = jnp.arange(1.0, N + 1).astype(dtype)
    ref = np.linalg.solve(M, b)
    np.testing.assert_allclose(jax.jit(klujax.solve)(A, b), ref, rtol=1e-12)

    # gradients flow to A.data; compare with the dense reference's
    def loss(data):
        A2 = sparse.BCOO((data, A.indices), shape=A.shape) if kind == "bcoo" else \
            sparse.BCSR((data, A.indices, A.indptr), shape=A.shape)
        return jnp.abs(klujax.solve(A2, b)).sum()

    g = jax.grad(loss)(A.data)
    dense_g = jax.grad(lambda Md: jnp.abs(jnp.linalg.solve(Md, b)).sum())(jnp.asarray(M))
    if kind == "bcoo":
        rows, cols = A.indices[:, 0], A.indices[:, 1]
    else:
        rows = np.repeat(np.arange(N), np.diff(A.indptr))
        cols = A.indices
    np.testing.assert_allclose(g, dense_g[rows, cols], rtol=1e-10, atol=1e-12)
    check_grads(loss, (A.data,), order=1, modes=("fwd", "rev"))
    # vmap over the values of a shared pattern
    datas = jnp.stack([A.data, 2 * A.data])
    xs = jax.vmap(lambda d: klujax.solve(sparse.BCOO((d, A.indices), shape=A.shape) if kind == "bcoo"
                                         else sparse.BCSR((d, A.indices, A.indptr), shape=A.shape), b))(datas)
    np.testing.assert_allclose(xs, np.stack([ref, ref / 2]), rtol=1e-12)


@pytest.mark.parametrize("kind", ["bcoo", "bcsr"])
def test_batched_sparse_matrix(kind):
    Ai, Aj, Ax, M = _system(np.float64, batch=L, seed=2)
    A = (bcoo if kind == "bcoo" else bcsr)(M, batch=True)
    b = np.ones((L, N))
    np.testing.assert_allclose(klujax.solve(A, b), np.linalg.solve(M, b[..., None])[..., 0], rtol=1e-12)
    np.testing.assert_allclose(jax.jit(klujax.solve)(A, b), klujax.solve(Ai, Aj, Ax, b), rtol=1e-12)
    sign, logdet = klujax.slogdet(A)
    assert logdet.shape == (L,)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(M)[1], rtol=1e-12)


def test_batched_bcoo_with_different_patterns_gives_nan():
    """klujax needs one pattern for a batch: members that differ give NaN, also in jit."""
    idx_same = np.array([[[0, 0], [1, 1], [2, 2]]] * 2)
    idx_diff = idx_same.copy()
    idx_diff[1, 2] = [2, 0]  # member 1: (2, 0) instead of (2, 2): singular pattern anyway
    idx_diff[1, 1] = [1, 1]
    data = np.array([[1.0, 2, 3], [4, 5, 6]])
    ok = sparse.BCOO((data, idx_same), shape=(2, 3, 3))
    np.testing.assert_allclose(jax.jit(klujax.solve)(ok, np.ones((2, 3))), 1 / data, rtol=1e-14)
    bad = sparse.BCOO((data, idx_diff), shape=(2, 3, 3))
    for f in (klujax.solve, jax.jit(klujax.solve)):
        assert np.isnan(np.asarray(f(bad, np.ones((2, 3))))).all()


def test_padded_bcoo_entries_are_ignored_not_errors():
    M = np.array([[2.0, 0, 1], [0, 3, 0], [1, 0, 4]])
    A = sparse.BCOO.fromdense(M, nse=9)  # 4 padding entries at index (3, 3)
    assert int(A.indices.max()) == 3
    np.testing.assert_allclose(klujax.solve(A, np.ones(3)), np.linalg.solve(M, np.ones(3)), rtol=1e-14)
    g = jax.grad(lambda d: klujax.solve(sparse.BCOO((d, A.indices), shape=A.shape), np.ones(3)).sum())(A.data)
    assert np.all(np.asarray(g)[5:] == 0) and np.all(np.isfinite(g))


def test_lists_and_small_floats_outside_jit():
    Ai, Aj, Ax, M = _system(np.float64)
    b = np.arange(1.0, N + 1)
    ref = np.linalg.solve(M, b)
    np.testing.assert_allclose(klujax.solve(list(Ai), list(Aj), list(Ax), list(b)), ref, rtol=1e-12)
    np.testing.assert_allclose(klujax.dot(tuple(Ai), tuple(Aj), tuple(Ax), tuple(ref)), b, rtol=1e-12)
    for dt in (jnp.bfloat16, jnp.float16):
        x = klujax.solve(Ai, Aj, jnp.asarray(Ax, dt), jnp.asarray(b, dt))
        assert x.dtype == np.float64
        M_small = dense(Ai, Aj, np.asarray(jnp.asarray(Ax, dt), np.float64), N)
        np.testing.assert_allclose(x, np.linalg.solve(M_small, np.asarray(jnp.asarray(b, dt), np.float64)),
                                   rtol=1e-12)


def test_bad_sparse_inputs():
    M = np.eye(3)
    with pytest.raises(ValueError, match="square"):
        klujax.solve(sp.csr_matrix(np.ones((3, 4))), np.ones(3))
    with pytest.raises(ValueError, match="square"):
        klujax.solve(sparse.BCOO.fromdense(np.ones((3, 4))), np.ones(3))
    with pytest.raises(ValueError, match="n_dense"):
        klujax.solve(sparse.BCOO.fromdense(np.ones((3, 3)), n_dense=1), np.ones(3))
    with pytest.raises(ValueError, match=r"A is 3 x 3 but b has shape \(4,\)"):
        klujax.solve(sp.csr_matrix(M), np.ones(4))
    with pytest.raises(TypeError, match="either a sparse matrix A or"):
        klujax.solve(sp.csr_matrix(M), np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="missing argument b"):
        klujax.solve(sp.csr_matrix(M))
    with pytest.raises(TypeError, match="missing argument Ax"):
        klujax.solve(np.arange(3), np.arange(3))
