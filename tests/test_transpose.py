"""jax.linear_transpose of solve (w.r.t. b) and dot (w.r.t. x and w.r.t. Ax).

The transpose is the plain transpose A^T (not the conjugate transpose) also for complex.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import assert_close, dense, dot_jnp, make_system, random_array

N, L, R = 6, 3, 2
DTYPES = [np.float64, np.complex128]
DT_IDS = ["f64", "c128"]

# (id, Ax batch, b shape)
CASES = [
    ("ax1-b1", None, (N,)),
    ("ax1-b2", None, (N, R)),
    ("ax1-b3", None, (L, N, R)),
    ("ax2-b1", L, (N,)),
    ("ax2-b2", L, (L, N)),
    ("ax2-b3", L, (L, N, R)),
    ("ax2[1]-b3", 1, (L, N, R)),
    ("ax2-b3[1]", L, (1, N, R)),
]


def _system(ax_batch, b_shape, dtype, seed):
    Ai, Aj, Ax = make_system(N, n_lhs=ax_batch, dtype=dtype, seed=seed, duplicates=3)
    b = random_array(b_shape, dtype, seed=seed + 1)
    return Ai, Aj, Ax, b


def _out_shape(ax_batch, b_shape):
    if len(b_shape) == 3:
        return (max(b_shape[0], ax_batch or 1), N, R)
    if ax_batch is None:
        return b_shape
    return (ax_batch, N)


def _to3(a, ax_ndim):
    """(l, n, r) view of an Ax-shaped-result / b-shaped array, per the shape table."""
    a = np.asarray(a)
    if a.ndim == 1:
        return a[None, :, None]
    if a.ndim == 2:
        return a[None] if ax_ndim == 1 else a[:, :, None]
    return a


def _expected_transpose(A3, ct3, b_shape, ax_ndim, op):
    """sum over broadcast members of op(A_l^T) ct_l, reduced to b's shape."""
    L_ = max(A3.shape[0], ct3.shape[0])
    A3 = np.broadcast_to(A3, (L_, N, N))
    At = np.swapaxes(A3, -1, -2)  # plain transpose, no conjugate
    out = np.linalg.solve(At, ct3) if op == "solve" else At @ ct3
    lb = _to3(np.zeros(b_shape), ax_ndim).shape[0]
    if lb == 1 and L_ != 1:
        out = out.sum(axis=0, keepdims=True)
    if len(b_shape) == 1:
        return out[0, :, 0]
    if len(b_shape) == 2:
        return out[0] if ax_ndim == 1 else out[:, :, 0]
    return out


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, b_shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_transpose_wrt_rhs(op, dtype, ax_batch, b_shape):
    Ai, Aj, Ax, b = _system(ax_batch, b_shape, dtype, seed=1)
    fn = klujax.solve if op == "solve" else klujax.dot
    f = lambda b: fn(Ai, Aj, Ax, b)  # noqa: E731
    ct = random_array(_out_shape(ax_batch, b_shape), dtype, seed=2)
    (got,) = jax.linear_transpose(f, jnp.asarray(b))(jnp.asarray(ct))
    ax_ndim = 1 if ax_batch is None else 2
    A3 = dense(Ai, Aj, Ax if ax_ndim == 2 else Ax[None], N)
    want = _expected_transpose(A3, _to3(ct, ax_ndim), b_shape, ax_ndim, op)
    assert_close(got, want, dtype=dtype)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_transpose_is_not_conjugate(op, dtype):
    """<f(b), ct> == <b, f^T(ct)> with the bilinear (not sesquilinear) pairing."""
    Ai, Aj, Ax, b = _system(None, (N,), dtype, seed=3)
    fn = klujax.solve if op == "solve" else klujax.dot
    f = lambda b: fn(Ai, Aj, Ax, b)  # noqa: E731
    ct = random_array((N,), dtype, seed=4)
    (ft_ct,) = jax.linear_transpose(f, jnp.asarray(b))(jnp.asarray(ct))
    lhs = np.sum(np.asarray(f(b)) * ct)
    rhs = np.sum(b * np.asarray(ft_ct))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("ax_batch, x_shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_dot_transpose_wrt_ax(dtype, ax_batch, x_shape):
    Ai, Aj, Ax, x = _system(ax_batch, x_shape, dtype, seed=5)
    f = lambda Ax: klujax.dot(Ai, Aj, Ax, x)  # noqa: E731
    g = lambda Ax: dot_jnp(Ai, Aj, Ax, x)  # noqa: E731
    ct = jnp.asarray(random_array(_out_shape(ax_batch, x_shape), dtype, seed=6))
    (got,) = jax.linear_transpose(f, jnp.asarray(Ax))(ct)
    (want,) = jax.linear_transpose(g, jnp.asarray(Ax))(ct)
    assert_close(got, want, dtype=dtype)


def test_dot_transpose_wrt_ax_explicit():
    """ct_Ax[k] = sum_r ct[Ai[k], r] * x[Aj[k], r], duplicates each get their own term."""
    Ai, Aj, Ax, x = _system(None, (N, R), np.complex128, seed=7)
    ct = random_array((N, R), np.complex128, seed=8)
    (got,) = jax.linear_transpose(lambda Ax: klujax.dot(Ai, Aj, Ax, x), jnp.asarray(Ax))(ct)
    assert_close(got, (ct[Ai] * x[Aj]).sum(axis=-1))


def test_transpose_under_jit():
    Ai, Aj, Ax, b = _system(L, (L, N), np.float64, seed=9)
    f = lambda b: klujax.solve(Ai, Aj, Ax, b)  # noqa: E731
    ct = random_array((L, N), seed=10)
    got = jax.jit(lambda ct: jax.linear_transpose(f, jnp.asarray(b))(ct)[0])(ct)
    A = dense(Ai, Aj, Ax, N)
    want = np.linalg.solve(np.swapaxes(A, -1, -2), ct[..., None])[..., 0]
    assert_close(got, want)


def test_solve_transpose_wrt_ax_raises():
    """solve is not linear in Ax: transposing w.r.t. Ax must fail loudly."""
    Ai, Aj, Ax, b = _system(None, (N,), np.float64, seed=11)
    with pytest.raises(Exception):  # noqa: B017  (jax may raise before the rule is hit)
        jax.linear_transpose(lambda Ax: klujax.solve(Ai, Aj, Ax, b), jnp.asarray(Ax))(
            jnp.asarray(b))
