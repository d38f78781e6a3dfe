"""Forward and reverse mode derivatives of solve and dot w.r.t. Ax and b."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import klujax
from helpers import assert_close, dot_jnp, make_system, random_array, solve_jnp

N, L, R = 5, 3, 2
DTYPES = [np.float64, np.complex128]
DT_IDS = ["f64", "c128"]

# (id, Ax batch, b shape)
AD_CASES = [
    ("single", None, (N,)),
    ("single-multi-rhs", None, (N, R)),
    ("batched", L, (L, N, R)),
    ("batched-b2", L, (L, N)),
    ("bcast-ax", 1, (L, N, R)),
    ("bcast-b", L, (N,)),
]


def _system(ax_batch, b_shape, dtype, seed=0, duplicates=2):
    Ai, Aj, Ax = make_system(N, n_lhs=ax_batch, dtype=dtype, seed=seed, duplicates=duplicates)
    b = random_array(b_shape, dtype, seed=seed + 50)
    return Ai, Aj, jnp.asarray(Ax), jnp.asarray(b)


OPS = {"solve": (klujax.solve, solve_jnp), "dot": (klujax.dot, dot_jnp)}


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", [(None, (N,)), (L, (L, N, R))],
                         ids=["single", "batched"])
def test_check_grads(op, dtype, ax_batch, b_shape):
    Ai, Aj, Ax, b = _system(ax_batch, b_shape, dtype)
    fn = OPS[op][0]
    # (the broadcasting cases are covered exactly by test_jacobians_vs_dense)
    f = jax.jit(lambda Ax, b: fn(Ai, Aj, Ax, b))
    check_grads(f, (Ax, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_check_grads_eager(op, dtype):
    Ai, Aj, Ax, b = _system(L, (L, N), dtype)
    fn = OPS[op][0]
    check_grads(lambda Ax, b: fn(Ai, Aj, Ax, b), (Ax, b), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", [c[1:] for c in AD_CASES],
                         ids=[c[0] for c in AD_CASES])
def test_jacobians_vs_dense(op, dtype, ax_batch, b_shape):
    Ai, Aj, Ax, b = _system(ax_batch, b_shape, dtype, seed=1)
    fn, ref = OPS[op]
    holo = dict(holomorphic=True) if np.issubdtype(dtype, np.complexfloating) else {}
    f = lambda Ax, b: fn(Ai, Aj, Ax, b)  # noqa: E731
    g = lambda Ax, b: ref(Ai, Aj, Ax, b)  # noqa: E731
    # one compilation for the reference and both modes (keeps the test fast)
    jacs = jax.jit(lambda Ax, b: (jax.jacfwd(g, argnums=(0, 1), **holo)(Ax, b),
                                  jax.jacfwd(f, argnums=(0, 1), **holo)(Ax, b),
                                  jax.jacrev(f, argnums=(0, 1), **holo)(Ax, b)))
    want, *gots = jacs(Ax, b)
    for got in gots:
        assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
        assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


def _split_loss(fn, Ai, Aj, complex_):
    """A real scalar loss of real parameters (real and imaginary parts for complex)."""

    def loss(p, q):
        Ax, b = (p[0] + 1j * p[1], q[0] + 1j * q[1]) if complex_ else (p, q)
        x = fn(Ai, Aj, Ax, b)
        w = jnp.arange(1, x.size + 1, dtype=jnp.float64).reshape(x.shape) / x.size
        return jnp.sum(w * jnp.abs(x) ** 2) + jnp.sum(jnp.real(x) * w) ** 3

    return loss


def _split(a, complex_):
    return jnp.stack([a.real, a.imag]) if complex_ else a


@pytest.mark.parametrize("op, dtype, ax_batch, b_shape", [
    ("solve", np.float64, None, (N,)),
    ("solve", np.complex128, None, (N,)),
    ("solve", np.float64, L, (L, N, R)),
    ("solve", np.complex128, L, (L, N, R)),
    ("dot", np.complex128, L, (L, N, R)),
], ids=["solve-f64-single", "solve-c128-single", "solve-f64-batched", "solve-c128-batched",
        "dot-c128-batched"])
def test_hessian_vs_dense(op, dtype, ax_batch, b_shape):
    cplx = np.issubdtype(dtype, np.complexfloating)
    Ai, Aj, Ax, b = _system(ax_batch, b_shape, dtype, seed=2)
    fn, ref = OPS[op]
    p, q = _split(Ax, cplx), _split(b, cplx)
    got, want = jax.jit(lambda p, q: (
        jax.hessian(_split_loss(fn, Ai, Aj, cplx), argnums=(0, 1))(p, q),
        jax.hessian(_split_loss(ref, Ai, Aj, cplx), argnums=(0, 1))(p, q)))(p, q)
    for r in range(2):
        for c in range(2):
            assert_close(got[r][c], want[r][c], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_grad_under_jit(op, dtype):
    cplx = np.issubdtype(dtype, np.complexfloating)
    Ai, Aj, Ax, b = _system(L, (L, N), dtype, seed=3)
    fn, ref = OPS[op]
    p, q = _split(Ax, cplx), _split(b, cplx)
    got = jax.jit(jax.grad(_split_loss(fn, Ai, Aj, cplx), argnums=(0, 1)))(p, q)
    want = jax.jit(jax.grad(_split_loss(ref, Ai, Aj, cplx), argnums=(0, 1)))(p, q)
    assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


def test_grad_complex_input_real_loss():
    """jax.grad of a real loss of complex inputs (conjugate convention) vs dense."""
    Ai, Aj, Ax, b = _system(None, (N,), np.complex128, seed=4)
    loss = lambda fn: lambda Ax, b: jnp.sum(jnp.abs(fn(Ai, Aj, Ax, b)) ** 2)  # noqa: E731
    got = jax.grad(loss(klujax.solve), argnums=(0, 1))(Ax, b)
    want = jax.jit(jax.grad(loss(solve_jnp), argnums=(0, 1)))(Ax, b)
    assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


def test_grad_with_traced_indices_under_jit():
    Ai, Aj, Ax, b = _system(None, (N,), np.float64, seed=5)

    @jax.jit
    def g(Ai, Aj, Ax, b):
        return jax.grad(lambda Ax, b: jnp.sum(klujax.solve(Ai, Aj, Ax, b) ** 2), (0, 1))(Ax, b)

    want = jax.jit(jax.grad(lambda Ax, b: jnp.sum(solve_jnp(Ai, Aj, Ax, b) ** 2), (0, 1)))(Ax, b)
    got = g(Ai, Aj, Ax, b)
    assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


def test_jvp_only_b_and_only_ax():
    Ai, Aj, Ax, b = _system(L, (L, N, R), np.float64, seed=6)
    dAx = jnp.asarray(random_array(Ax.shape, seed=7))
    db = jnp.asarray(random_array(b.shape, seed=8))
    f = lambda Ax, b: klujax.solve(Ai, Aj, Ax, b)  # noqa: E731
    g = lambda Ax, b: solve_jnp(Ai, Aj, Ax, b)  # noqa: E731
    jvp_ref = jax.jit(lambda p, t: jax.jvp(g, p, t)[1])
    for tangents in ((dAx, jnp.zeros_like(b)), (jnp.zeros_like(Ax), db), (dAx, db)):
        _, got = jax.jvp(f, (Ax, b), tangents)
        want = jvp_ref((Ax, b), tangents)
        assert_close(got, want, rtol=1e-9, atol=1e-9)
    # tangent w.r.t. one argument only, the other closed over
    _, got = jax.jvp(lambda b: f(Ax, b), (b,), (db,))
    assert_close(got, f(Ax, db))


def test_third_order():
    Ai, Aj, Ax, b = _system(None, (N,), np.float64, seed=9)
    f = lambda Ax: jnp.sum(klujax.solve(Ai, Aj, Ax, b))  # noqa: E731
    g = lambda Ax: jnp.sum(solve_jnp(Ai, Aj, Ax, b))  # noqa: E731
    got = jax.jit(jax.jacfwd(jax.jacrev(jax.grad(f))))(Ax)
    want = jax.jit(jax.jacfwd(jax.jacrev(jax.grad(g))))(Ax)
    assert_close(got, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("name", ["Ai", "Aj"])
def test_grad_wrt_float_indices_raises(op, name):
    Ai, Aj, Ax, b = _system(None, (N,), np.float64, seed=10)
    fn = OPS[op][0]

    def loss(idx):
        if name == "Ai":
            return jnp.sum(fn(idx, Aj, Ax, b))
        return jnp.sum(fn(Ai, idx, Ax, b))

    idx = jnp.asarray(Ai if name == "Ai" else Aj, dtype=jnp.float64)
    with pytest.raises(TypeError, match=name):
        jax.grad(loss)(idx)


def test_grad_wrt_integer_indices_raises():
    Ai, Aj, Ax, b = _system(None, (N,), np.float64, seed=11)
    with pytest.raises(TypeError):
        jax.grad(lambda Ai: jnp.sum(klujax.solve(Ai, Aj, Ax, b)))(jnp.asarray(Ai))
