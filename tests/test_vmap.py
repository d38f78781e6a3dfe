"""vmap of solve (and dot) in every arrangement, compared with a Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import assert_close, dense, make_system, random_array, reference_solve, solve_jnp

N, B, R = 6, 4, 2
DTYPES = [np.float64, np.complex128]
DT_IDS = ["f64", "c128"]


def _loop(fn, Ai, Aj, Ax, b, ax_axis, b_axis, out_axis=0):
    """Reference: a Python loop of unbatched calls, stacked along out_axis."""
    size = (Ax.shape[ax_axis] if ax_axis is not None else b.shape[b_axis])
    outs = []
    for k in range(size):
        ax_k = Ax if ax_axis is None else np.take(Ax, k, axis=ax_axis)
        b_k = b if b_axis is None else np.take(b, k, axis=b_axis)
        outs.append(np.asarray(fn(Ai, Aj, ax_k, b_k)))
    return np.stack(outs, axis=out_axis)


def _batched(a, axis, size=B):
    """Stack `size` perturbed copies of `a` along `axis` (a distinct value per member)."""
    scale = 1.0 + 0.1 * np.arange(size)
    stacked = np.stack([a * s for s in scale], axis=0)
    return np.moveaxis(stacked, 0, axis)


# inner (per-member) shapes: (id, Ax batch, b shape)
INNER = [
    ("ax1-b1", None, (N,)),
    ("ax1-b2", None, (N, R)),
    ("ax2-b2", 2, (2, N)),
    ("ax2-b3", 2, (2, N, R)),
]


@pytest.mark.parametrize("which", ["Ax", "b", "both"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("ax_batch, b_shape", [c[1:] for c in INNER], ids=[c[0] for c in INNER])
def test_vmap_in_axes(which, axis, ax_batch, b_shape):
    dtype = np.complex128 if axis == 1 else np.float64
    Ai, Aj, Ax = make_system(N, n_lhs=ax_batch, dtype=dtype, seed=1, duplicates=2)
    b = random_array(b_shape, dtype, seed=2)
    ax_axis = axis if which in ("Ax", "both") else None
    b_axis = axis if which in ("b", "both") else None
    # axis=1 needs an inner array of rank >= 1 (all have it); -1 is the last axis
    Ax_in = Ax if ax_axis is None else _batched(Ax, ax_axis % (Ax.ndim + 1))
    b_in = b if b_axis is None else _batched(b[..., ::-1] if b.ndim else b, b_axis % (b.ndim + 1))
    got = jax.vmap(klujax.solve, (None, None, ax_axis, b_axis))(Ai, Aj, Ax_in, b_in)
    want = _loop(reference_solve, Ai, Aj, Ax_in, b_in, ax_axis, b_axis)
    assert_close(got, want, dtype=dtype)


@pytest.mark.parametrize("out_axes", [0, 1, -1])
@pytest.mark.parametrize("which", ["Ax", "b", "both"])
def test_vmap_out_axes(out_axes, which):
    Ai, Aj, Ax = make_system(N, seed=3)
    b = random_array((N, R), seed=4)
    ax_axis = 0 if which in ("Ax", "both") else None
    b_axis = 0 if which in ("b", "both") else None
    Ax_in = Ax if ax_axis is None else _batched(Ax, 0)
    b_in = b if b_axis is None else _batched(b[::-1], 0)
    got = jax.vmap(klujax.solve, (None, None, ax_axis, b_axis), out_axes=out_axes)(
        Ai, Aj, Ax_in, b_in)
    want = _loop(reference_solve, Ai, Aj, Ax_in, b_in, ax_axis, b_axis,
                 out_axis=out_axes % 3)
    assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("inner", ["Ax", "b", "both"])
@pytest.mark.parametrize("outer", ["Ax", "b", "both"])
def test_nested_vmap(dtype, inner, outer):
    B1, B2 = 3, 2
    Ai, Aj, Ax = make_system(N, dtype=dtype, seed=5, duplicates=2)
    b = random_array((N,), dtype, seed=6)
    ax_in = [w in ("Ax", "both") for w in (outer, inner)]
    b_in = [w in ("b", "both") for w in (outer, inner)]
    # build the data with leading dims for each level that maps it
    Ax_d, b_d = Ax, b
    for mapped, size in reversed(list(zip(ax_in, (B1, B2)))):
        if mapped:
            Ax_d = _batched(Ax_d, 0, size)
    for mapped, size in reversed(list(zip(b_in, (B1, B2)))):
        if mapped:
            b_d = _batched(b_d[::-1], 0, size)
    f_in = jax.vmap(klujax.solve, (None, None, 0 if ax_in[1] else None, 0 if b_in[1] else None))
    f = jax.vmap(f_in, (None, None, 0 if ax_in[0] else None, 0 if b_in[0] else None))
    got = f(Ai, Aj, Ax_d, b_d)
    want = np.empty((B1, B2, N), dtype=dtype)
    for i in range(B1):
        for j in range(B2):
            a = Ax_d
            a = a[i] if ax_in[0] else a
            a = a[j] if ax_in[1] else a
            c = b_d
            c = c[i] if b_in[0] else c
            c = c[j] if b_in[1] else c
            want[i, j] = reference_solve(Ai, Aj, a, c)
    assert_close(got, want, dtype=dtype)


def test_jit_of_vmap():
    Ai, Aj, Ax = make_system(N, n_lhs=B, seed=7)
    b = random_array((B, N, R), seed=8)
    f = jax.jit(jax.vmap(klujax.solve, (None, None, 0, 0)))
    assert_close(f(Ai, Aj, Ax, b), _loop(reference_solve, Ai, Aj, Ax, b, 0, 0))
    g = jax.jit(jax.vmap(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), (0, None)))
    assert_close(g(Ax, b[0]), _loop(reference_solve, Ai, Aj, Ax, b[0], 0, None))


def test_vmap_of_dot():
    Ai, Aj, Ax = make_system(N, n_lhs=B, seed=9, duplicates=3)
    x = random_array((N, B), seed=10)
    got = jax.vmap(klujax.dot, (None, None, 0, 1), out_axes=1)(Ai, Aj, Ax, x)
    want = np.stack([dense(Ai, Aj, Ax[k], N) @ x[:, k] for k in range(B)], axis=1)
    assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_vmap_of_grad(dtype):
    Ai, Aj, Ax = make_system(N, n_lhs=B, dtype=dtype, seed=11)
    b = random_array((B, N), dtype, seed=12)

    def loss(fn):
        return lambda Ax, b: jnp.sum(jnp.abs(fn(Ai, Aj, Ax, b)) ** 2)

    got = jax.vmap(jax.grad(loss(klujax.solve), argnums=(0, 1)))(Ax, b)
    ref = jax.jit(jax.grad(loss(solve_jnp), argnums=(0, 1)))
    for k in range(B):
        want = ref(Ax[k], b[k])
        assert_close(got[0][k], want[0], rtol=1e-9, atol=1e-9)
        assert_close(got[1][k], want[1], rtol=1e-9, atol=1e-9)


def test_vmap_of_grad_b_only():
    """Only b batched: the batching rule folds it into right-hand sides."""
    Ai, Aj, Ax = make_system(N, seed=13)
    b = random_array((B, N), seed=14)
    loss = lambda fn: lambda Ax, b: jnp.sum(fn(Ai, Aj, Ax, b) ** 3)  # noqa: E731
    got = jax.vmap(jax.grad(loss(klujax.solve), argnums=(0, 1)), (None, 0))(Ax, b)
    ref = jax.jit(jax.grad(loss(solve_jnp), argnums=(0, 1)))
    for k in range(B):
        want = ref(Ax, b[k])
        assert_close(got[0][k], want[0], rtol=1e-9, atol=1e-9)
        assert_close(got[1][k], want[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_vmap_of_grad_with_unbatched_cotangent(dtype):
    """A loss linear in x: under vmap over b the cotangent is unbatched and only the primal
    x that the transposed solve waits for is batched. Chained solves (reuse of the
    forward factorization), values and gradients against the dense reference."""
    Ai, Aj, Ax = make_system(N, dtype=dtype, seed=17)
    b = random_array((B, N), dtype, seed=18)
    w = random_array((N,), dtype, seed=19)

    def loss(fn):
        return lambda Ax, b: jnp.real(jnp.sum(w * fn(Ai, Aj, Ax, fn(Ai, Aj, Ax, b))))

    for transform in (lambda f: f, jax.jit):
        got = transform(jax.vmap(jax.value_and_grad(loss(klujax.solve), argnums=(0, 1)), (None, 0)))(Ax, b)
        ref = jax.jit(jax.value_and_grad(loss(solve_jnp), argnums=(0, 1)))
        for k in range(B):
            val, (gA, gb) = ref(Ax, b[k])
            assert_close(got[0][k], val, rtol=1e-9, atol=1e-9)
            assert_close(got[1][0][k], gA, rtol=1e-9, atol=1e-9)
            assert_close(got[1][1][k], gb, rtol=1e-9, atol=1e-9)


def test_vmap_over_a_dependency_only():
    """Only refactor's ordering operand is batched: one refactorization, unbatched."""
    Ai, Aj, Ax = make_system(N, seed=20)
    b = random_array((N,), seed=21)
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        def step(d):
            klujax.refactor(Ai, Aj, 2 * Ax, num, sym, dependency=d)
            return d

        jax.block_until_ready(jax.vmap(step)(jnp.ones((3, 2))))
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, 2 * Ax, b),
                     rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("in_axes", [(0, 0), (0, None), (None, 0)])
def test_grad_of_vmap_sum(in_axes):
    Ai, Aj, Ax = make_system(N, seed=15)
    b = random_array((N, R), seed=16)
    Ax_in = _batched(Ax, 0) if in_axes[0] == 0 else Ax
    b_in = _batched(b, 0) if in_axes[1] == 0 else b

    def loss(fn):
        def inner(Ax, b):
            return jnp.sum(jnp.sin(fn(Ai, Aj, Ax, b)))
        return lambda Ax, b: jnp.sum(jax.vmap(inner, in_axes)(Ax, b))

    got = jax.grad(loss(klujax.solve), argnums=(0, 1))(Ax_in, b_in)
    want = jax.jit(jax.grad(loss(solve_jnp), argnums=(0, 1)))(Ax_in, b_in)
    assert_close(got[0], want[0], rtol=1e-9, atol=1e-9)
    assert_close(got[1], want[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("batched", ["indices+Ax+b", "indices+Ax", "indices-only"])
@pytest.mark.parametrize("op", ["solve", "dot"])
def test_vmap_over_indices(batched, op):
    """Each batch member has its own sparsity pattern (same n_nz)."""
    systems = []
    for k in range(B):
        Ai, Aj, Ax = make_system(N, seed=100 + k, density=0.35)
        systems.append((Ai, Aj, Ax))
    # equal n_nz: pad short patterns with duplicates of their first entries carrying
    # zero values (the matrix is unchanged).
    n_nz = max(len(s[0]) for s in systems)
    Ais, Ajs, Axs = [], [], []
    for Ai, Aj, Ax in systems:
        pad = n_nz - len(Ai)
        Ais.append(np.concatenate([Ai, Ai[:pad]]))
        Ajs.append(np.concatenate([Aj, Aj[:pad]]))
        Axs.append(np.concatenate([Ax, np.zeros(pad)]))
    Ai_b, Aj_b, Ax_b = np.stack(Ais), np.stack(Ajs), np.stack(Axs)
    assert len({(tuple(a), tuple(c)) for a, c in zip(Ai_b, Aj_b)}) == B
    fn = klujax.solve if op == "solve" else klujax.dot
    ref = reference_solve if op == "solve" else (lambda Ai, Aj, Ax, b: dense(Ai, Aj, Ax, N) @ b)
    b = random_array((B, N), seed=17)
    if batched == "indices+Ax+b":
        got = jax.vmap(fn)(Ai_b, Aj_b, Ax_b, b)
        want = [ref(Ai_b[k], Aj_b[k], Ax_b[k], b[k]) for k in range(B)]
    elif batched == "indices+Ax":
        got = jax.vmap(fn, (0, 0, 0, None))(Ai_b, Aj_b, Ax_b, b[0])
        want = [ref(Ai_b[k], Aj_b[k], Ax_b[k], b[0]) for k in range(B)]
    else:
        # one shared Ax for every pattern: small values on the patterns plus an explicit
        # diagonal of 100 appended to each, so every member is diagonally dominant.
        Ai_d = np.concatenate([Ai_b, np.tile(np.arange(N), (B, 1))], axis=1)
        Aj_d = np.concatenate([Aj_b, np.tile(np.arange(N), (B, 1))], axis=1)
        Ax_d = np.concatenate([random_array((n_nz,), seed=18), np.full(N, 100.0)])
        got = jax.vmap(fn, (0, 0, None, 0))(Ai_d, Aj_d, Ax_d, b)
        want = [ref(Ai_d[k], Aj_d[k], Ax_d, b[k]) for k in range(B)]
    assert_close(got, np.stack(want))


def test_vmap_over_indices_axis1_and_jit():
    """Batched indices given along axis 1, under jit."""
    Ai, Aj, Ax = make_system(N, seed=20)
    perms = [np.random.default_rng(k).permutation(N) for k in range(B)]
    Aj_b = np.stack([p[Aj] for p in perms], axis=1)  # (n_nz, B): column-permuted patterns
    Ai_b = np.stack([Ai] * B, axis=1)
    b = random_array((N,), seed=21)
    got = jax.jit(jax.vmap(klujax.solve, (1, 1, None, None)))(Ai_b, Aj_b, Ax, b)
    want = np.stack([reference_solve(Ai, p[Aj], Ax, b) for p in perms])
    assert_close(got, want)


def test_vmap_over_indices_grad():
    Ai, Aj, Ax = make_system(N, seed=22)
    perms = [np.random.default_rng(10 + k).permutation(N) for k in range(B)]
    Aj_b = np.stack([p[Aj] for p in perms])
    Ax_b = _batched(Ax, 0)
    b = random_array((N,), seed=23)

    def loss(fn):
        return lambda Ax: jnp.sum(jax.vmap(lambda aj, ax: fn(Ai, aj, ax, b))(Aj_b, Ax) ** 2)

    assert_close(jax.grad(loss(klujax.solve))(Ax_b), jax.jit(jax.grad(loss(solve_jnp)))(Ax_b),
                 rtol=1e-9, atol=1e-9)


def test_vmap_over_values_with_no_entries():
    """n_nz = 0 under vmap (found by the property tests): NaN results, not a crash."""
    e = np.zeros(0, np.int32)
    for in_axes in (0, 1):
        Ax = np.zeros((3, 1, 0)) if in_axes == 0 else np.zeros((1, 3, 0))
        x = jax.vmap(lambda a: klujax.solve(e, e, a, np.ones((1, 5))), in_axes=in_axes)(Ax)
        assert x.shape == (3, 1, 5) and np.isnan(np.asarray(x)).all()
