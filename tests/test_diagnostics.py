"""rcond, condest, slogdet (values and gradients) and lu, against dense references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense, make_system
from jax.test_util import check_grads

import klujax

DTYPES = [np.float64, np.complex128]
N = 9
ALL_OPTIONS = [
    klujax.KLUOptions(),
    klujax.KLUOptions(ordering="colamd"),
    klujax.KLUOptions(ordering="natural", btf=False),
    klujax.KLUOptions(scale="none", tol=1.0),
    klujax.KLUOptions(scale="sum", tol=0.1),
]


def _ids(o: klujax.KLUOptions) -> str:
    return f"{o.ordering}-{o.scale}-tol{o.tol}-btf{int(o.btf)}"


@pytest.fixture(params=DTYPES, ids=["f64", "c128"])
def system(request):
    Ai, Aj, Ax = make_system(N, n_lhs=3, dtype=request.param, seed=3)
    return Ai, Aj, Ax


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_condest_and_rcond_against_dense(system, mode):
    Ai, Aj, Ax = system
    A = dense(Ai, Aj, Ax, N)
    wrap = (lambda f: f) if mode == "eager" else jax.jit
    ce = wrap(lambda Ax: klujax.condest(Ai, Aj, Ax, N))(Ax)
    rc = wrap(lambda Ax: klujax.rcond(Ai, Aj, Ax, N))(Ax)
    cond1 = np.linalg.cond(A, 1)
    assert ce.shape == rc.shape == (3,)
    assert ce.dtype == rc.dtype == np.float64
    # Hager/Higham: a lower bound of the 1-norm condition number, and a close one here.
    assert np.all(np.asarray(ce) <= cond1 * (1 + 1e-10))
    assert np.all(np.asarray(ce) >= cond1 / 3)
    assert np.all((np.asarray(rc) > 0) & (np.asarray(rc) <= 1))
    # rcond is the pivot ratio of KLU's factors: check it against lu's U.
    for m in range(3):
        U = np.asarray(klujax.lu(Ai, Aj, Ax[m], N).U.todense())
        d = np.abs(np.diag(U))
        np.testing.assert_allclose(rc[m], d.min() / d.max(), rtol=1e-12)
    # 1D Ax gives a scalar.
    assert klujax.condest(Ai, Aj, Ax[0], N).shape == ()


def test_singular_nan_and_ill_conditioned_are_told_apart():
    Ai, Aj, Ax = make_system(N, seed=4)
    A = dense(Ai, Aj, Ax, N)
    sing = Ax.copy()
    sing[Ai == Ai[0]] = 0.0  # a zero row: numerically singular
    nan = Ax.copy()
    nan[3] = np.nan
    # ill-conditioned: scale one column by 1e-9
    ill = Ax * np.where(Aj == Aj[0], 1e-9, 1.0)
    batch = np.stack([Ax, sing, nan, ill])
    rc = np.asarray(klujax.rcond(Ai, Aj, batch, N))
    ce = np.asarray(klujax.condest(Ai, Aj, batch, N))
    assert rc[1] == 0 and ce[1] == np.inf
    assert np.isnan(rc[2]) and np.isnan(ce[2])
    assert 0 < rc[3] < 1e-6 and np.isfinite(ce[3]) and ce[3] > 1e8
    assert ce[0] == pytest.approx(np.linalg.cond(A, 1), rel=0.7)
    # the solve of the singular member is NaN, the others are finite
    x = np.asarray(klujax.solve(Ai, Aj, batch, np.ones((4, N))))
    assert np.isnan(x[1]).all() and np.isfinite(x[[0, 3]]).all()


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=_ids)
def test_numeric_handle_diagnostics(system, options):
    Ai, Aj, Ax = system
    with klujax.analyze(Ai, Aj, N, options=options) as sym, \
            klujax.factor(Ai, Aj, Ax, sym, options=options) as num:
        np.testing.assert_allclose(klujax.condest(num), klujax.condest(Ai, Aj, Ax, N, options=options),
                                   rtol=1e-10)
        np.testing.assert_allclose(klujax.rcond(num), klujax.rcond(Ai, Aj, Ax, N, options=options),
                                   rtol=1e-10)
        assert klujax.rcond(num).shape == (3,)


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_slogdet_against_dense(system, mode):
    Ai, Aj, Ax = system
    if mode == "vmap":
        sign, logdet = jax.vmap(lambda a: klujax.slogdet(Ai, Aj, a, N))(Ax)
    else:
        wrap = (lambda f: f) if mode == "eager" else jax.jit
        sign, logdet = wrap(lambda a: klujax.slogdet(Ai, Aj, a, N))(Ax)
    ref_sign, ref_log = jnp.linalg.slogdet(dense(Ai, Aj, Ax, N))
    assert sign.dtype == Ax.dtype and logdet.dtype == np.float64
    np.testing.assert_allclose(sign, ref_sign, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logdet, ref_log, rtol=1e-12)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=_ids)
def test_slogdet_every_option(options):
    Ai, Aj, Ax = make_system(N, seed=9)
    sign, logdet = klujax.slogdet(Ai, Aj, Ax, N, options=options)
    ref = np.linalg.slogdet(dense(Ai, Aj, Ax, N))
    assert sign == pytest.approx(ref.sign)
    assert logdet == pytest.approx(ref.logabsdet, rel=1e-12)


def test_slogdet_singular():
    Ai, Aj, Ax = make_system(N, seed=5)
    Ax = Ax.copy()
    Ax[Aj == Aj[0]] = 0.0
    sign, logdet = klujax.slogdet(Ai, Aj, Ax, N)
    assert sign == 0 and logdet == -np.inf


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_slogdet_gradients(dtype):
    Ai, Aj, Ax = make_system(N, dtype=dtype, seed=6)
    Ax = jnp.asarray(Ax)
    for k in (0, 1):
        f = lambda a, k=k: klujax.slogdet(Ai, Aj, a, N)[k]  # noqa: E731
        if k == 0 and dtype == np.float64:
            continue  # the sign of a real matrix is piecewise constant
        check_grads(f, (Ax,), order=1, modes=("fwd", "rev"))
    # against the dense reference's gradient, under jit and vmap
    ref = jax.grad(lambda a: jnp.linalg.slogdet(dense_jnp(Ai, Aj, a))[1])(Ax)
    got = jax.jit(jax.grad(lambda a: klujax.slogdet(Ai, Aj, a, N)[1]))(Ax)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    batch = jnp.stack([Ax, 2 * Ax])
    got_b = jax.vmap(jax.grad(lambda a: klujax.slogdet(Ai, Aj, a, N)[1]))(batch)
    np.testing.assert_allclose(got_b[1], ref / 2, rtol=1e-10, atol=1e-12)


def test_slogdet_second_order_raises():
    Ai, Aj, Ax = make_system(N, seed=6)
    f = lambda a: klujax.slogdet(Ai, Aj, a, N)[1]  # noqa: E731
    with pytest.raises(NotImplementedError, match="first order"):
        jax.hessian(f)(jnp.asarray(Ax))
    with pytest.raises(NotImplementedError, match="not differentiable"):
        jax.grad(lambda a: klujax.condest(Ai, Aj, a, N))(jnp.asarray(Ax))


def dense_jnp(Ai, Aj, Ax):
    return jnp.zeros((N, N), Ax.dtype).at[Ai, Aj].add(Ax)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_lu_identity(dtype, options):
    Ai, Aj, Ax = make_system(12, dtype=dtype, seed=7, duplicates=3)
    A = dense(Ai, Aj, Ax, 12)
    f = klujax.lu(Ai, Aj, Ax, 12, options=options)
    L, U, F = (np.asarray(m.todense()) for m in (f.L, f.U, f.F))
    assert L.dtype == U.dtype == np.dtype(dtype)
    np.testing.assert_allclose((A / f.R[:, None])[f.P][:, f.Q], L @ U + F, atol=1e-12)
    np.testing.assert_allclose(np.diag(L), 1.0)
    assert np.abs(np.triu(L, 1)).max() == 0 and np.abs(np.tril(U, -1)).max() == 0
    assert sorted(f.P) == list(range(12)) and sorted(f.Q) == list(range(12))
    if options.scale == "none":
        np.testing.assert_array_equal(f.R, 1.0)
    if options.ordering == "natural" and not options.btf:
        np.testing.assert_array_equal(f.Q, np.arange(12))
    if not options.btf:
        assert list(f.blocks) == [0, 12] and np.abs(F).max() == 0


def test_lu_errors():
    Ai, Aj, Ax = make_system(N, n_lhs=2, seed=1)
    with pytest.raises(ValueError, match="one matrix"):
        klujax.lu(Ai, Aj, Ax, N)
    bad = Ax[0].copy()
    bad[Ai == Ai[0]] = 0
    with pytest.raises(ValueError, match="singular"):
        klujax.lu(Ai, Aj, bad, N)
    with pytest.raises(ValueError, match=r"Ai\[\d+\] = .* outside"):
        klujax.lu(Ai, Aj, Ax[0], N - 1)


def test_options_validation():
    for kw, field in [({"tol": 0.0}, "tol"), ({"tol": 2.0}, "tol"), ({"ordering": "metis"}, "ordering"),
                      ({"scale": "l2"}, "scale"), ({"btf": 1}, "btf"), ({"refine": -1}, "refine"),
                      ({"target": float("nan")}, "target"), ({"check": "yes"}, "check")]:
        with pytest.raises(ValueError, match=f"KLUOptions: {field}"):
            klujax.KLUOptions(**kw)
    Ai, Aj, Ax = make_system(N, seed=1)
    with pytest.raises(TypeError, match="options must be a klujax.KLUOptions"):
        klujax.solve(Ai, Aj, Ax, np.ones(N), options={"tol": 0.1})
    assert hash(klujax.KLUOptions()) == hash(klujax.KLUOptions())


@pytest.mark.parametrize("options", ALL_OPTIONS + [klujax.KLUOptions(check=False),
                                                   klujax.KLUOptions(refine=0)], ids=_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "c128"])
def test_every_option_solves_and_differentiates(dtype, options):
    Ai, Aj, Ax = make_system(N, n_lhs=2, dtype=dtype, seed=8)
    b = np.ones((2, N), dtype)
    A = dense(Ai, Aj, Ax, N)
    x = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=options))(Ax, b)
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-10, atol=1e-12)
    with klujax.analyze(Ai, Aj, N, options=options) as sym:
        x2 = klujax.solve_with_symbol(Ai, Aj, Ax, b, sym, options=options)
        np.testing.assert_allclose(x2, x, rtol=1e-10, atol=1e-12)
    check_grads(lambda a: klujax.solve(Ai, Aj, a, b, options=options), (jnp.asarray(Ax),), order=1,
                modes=("fwd", "rev"))
