"""Value-keyed reuse (issue 11.1): a repeated solve with unchanged values only solves, and
returns what a fresh factorization would."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import dense, make_system

import klujax

N = 30


def _hits() -> int:
    return klujax.cache_info()["numeric_hits"]


@pytest.mark.parametrize("batch", [None, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_repeated_values_hit_and_match_fresh(batch, dtype):
    Ai, Aj, Ax = make_system(N, n_lhs=batch, dtype=dtype, seed=11)
    rng = np.random.default_rng(0)
    bs = [rng.standard_normal((N,) if batch is None else (batch, N)).astype(dtype) for _ in range(4)]
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b))
    klujax.clear_cache()
    f(Ax, bs[0]).block_until_ready()
    f(Ax, bs[0]).block_until_ready()  # the values are kept from here on
    before = _hits()
    xs = [np.asarray(f(Ax, b)) for b in bs]
    assert _hits() - before == len(bs)  # no factorization: every call found its values
    A = dense(Ai, Aj, Ax, N)
    for b, x in zip(bs, xs):
        klujax.clear_cache()
        fresh = np.asarray(klujax.solve(Ai, Aj, Ax, b))
        np.testing.assert_allclose(x, fresh, rtol=1e-13, atol=1e-14)
        ref = np.linalg.solve(A, b[..., None])[..., 0]
        np.testing.assert_allclose(x, ref, rtol=1e-11, atol=1e-13)


def test_changed_values_or_options_miss():
    Ai, Aj, Ax = make_system(N, seed=12)
    b = np.ones(N)
    klujax.clear_cache()
    klujax.solve(Ai, Aj, Ax, b)
    klujax.solve(Ai, Aj, Ax, b)
    Ax2 = Ax.copy()
    Ax2[-1] += 1e-9  # one value, one ulp-scale change: must not be mistaken for Ax
    before = klujax.cache_info()
    x2 = klujax.solve(Ai, Aj, Ax2, b)
    after = klujax.cache_info()
    assert after["numeric_hits"] == before["numeric_hits"]
    np.testing.assert_allclose(x2, np.linalg.solve(dense(Ai, Aj, Ax2, N), b), rtol=1e-12)
    # same values in float32 are other values (their own key)
    x32 = klujax.solve(Ai, Aj, Ax.astype(np.float32), b)
    np.testing.assert_allclose(x32, np.linalg.solve(dense(Ai, Aj, Ax.astype(np.float32), N), b), rtol=1e-12)
    # other factor options: their own factorization
    before = klujax.cache_info()["numeric_hits"]
    klujax.solve(Ai, Aj, Ax, b, options=klujax.KLUOptions(tol=1.0))
    assert klujax.cache_info()["numeric_hits"] == before


def test_in_place_mutation_of_a_host_array_is_seen():
    Ai, Aj, Ax = make_system(N, seed=13)
    b = np.ones(N)
    Ax = Ax.copy()
    for k in range(3):
        x = klujax.solve(Ai, Aj, Ax, b)
        np.testing.assert_allclose(x, np.linalg.solve(dense(Ai, Aj, Ax, N), b), rtol=1e-12)
        Ax *= 1.5  # same buffer, new content


@pytest.mark.parametrize("method", ["klu", "umfpack"])
def test_hit_after_an_unchecked_call_is_still_checked(method):
    """A set made by a check=False call keeps no norms; a checked call that hits it
    computes them, and its solution meets the backward-error target."""
    if method not in klujax.methods():
        pytest.skip("klujax built without UMFPACK")
    Ai, Aj, Ax = make_system(30, n_lhs=3, seed=11)
    b = np.random.default_rng(12).standard_normal((3, 30))
    unchecked = klujax.KLUOptions(method=method, check=False)  # type: ignore[arg-type]
    checked = klujax.KLUOptions(method=method)  # type: ignore[arg-type]
    klujax.clear_cache()
    klujax.solve(Ai, Aj, 2 * Ax, b, options=unchecked).block_until_ready()  # learns sizes
    klujax.solve(Ai, Aj, Ax, b, options=unchecked).block_until_ready()
    hits = klujax.cache_info()["numeric_hits"]
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b, options=checked))
    assert klujax.cache_info()["numeric_hits"] == hits + 1  # same tol/scale: a hit
    A = dense(Ai, Aj, Ax, 30)
    for m in range(3):
        r = b[m] - A[m] @ x[m]
        berr = np.abs(r).max() / (np.abs(A[m]).sum(1).max() * np.abs(x[m]).max() + np.abs(b[m]).max())
        assert berr <= 1e-14
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12)


def test_most_recent_set_and_older_sets_both_hit():
    """Hits on the newest keyed set (compared without hashing) and on older ones (found
    by hash) return the fresh results."""
    Ai, Aj, Ax = make_system(20, n_lhs=2, seed=13)
    b = np.ones((2, 20))
    f = jax.jit(lambda a: klujax.solve(Ai, Aj, a, b))
    klujax.clear_cache()
    f(Ax * 0.5).block_until_ready()  # the cache learns the size of a factorization
    xs = [np.asarray(f(Ax * k)) for k in (1.0, 2.0)]  # the two most recent value sets
    before = klujax.cache_info()["numeric_hits"]
    again = [np.asarray(f(Ax * k)) for k in (2.0, 1.0)]  # the newest, then the older one
    assert klujax.cache_info()["numeric_hits"] == before + 2
    np.testing.assert_array_equal(xs[0], again[1])
    np.testing.assert_array_equal(xs[1], again[0])


@pytest.mark.parametrize("method", ["klu", "umfpack"])
def test_a_reused_matrix_outlives_a_stream_of_new_values(method):
    """A block of values found again twice (a matrix solved again and again) is not
    recycled by a stream of new values on the same pattern: the stream recycles its own
    sets around it (src/cache.cpp, recycle_set), the cache does not grow with the stream,
    and the kept matrix's next solve only solves, equal to the dense reference. A block
    found again only once (reverse mode's transposed solve) is not protected: a stream
    of gradients keeps recycling."""
    if method not in klujax.methods():
        pytest.skip("klujax built without UMFPACK")
    o = klujax.KLUOptions(method=method)  # type: ignore[arg-type]
    Ai, Aj, Ax = make_system(N, seed=14)
    rng = np.random.default_rng(1)
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=o))
    klujax.clear_cache()
    for _ in range(3):  # a first call, then found again twice
        f(Ax, rng.standard_normal(N)).block_until_ready()
    for k in range(12):  # a stream of new values
        f(Ax * (2.0 + k), rng.standard_normal(N)).block_until_ready()
    assert klujax.cache_info()["numeric_sets"] <= 3  # the kept block and the stream's two
    before = klujax.cache_info()["numeric_hits"]
    b = rng.standard_normal(N)
    x = np.asarray(f(Ax, b))
    assert klujax.cache_info()["numeric_hits"] == before + 1
    np.testing.assert_allclose(x, np.linalg.solve(dense(Ai, Aj, Ax, N), b), rtol=1e-11, atol=1e-13)

    g = jax.jit(jax.grad(lambda a, b: klujax.solve(Ai, Aj, a, b, options=o).sum()))
    klujax.clear_cache()
    for k in range(12):  # each forward set is found once, by its transposed solve
        g(Ax * (1.0 + k), b).block_until_ready()
    assert klujax.cache_info()["numeric_sets"] <= 2


def test_a_reused_matrix_outlives_byte_pressure():
    """Over the byte limit, sets whose values were found again twice go only after every
    other set (src/cache.cpp, enforce_limit_locked): batches of other patterns filling
    the cache evict each other, not the matrix that is solved again and again, whose
    next solve only solves and equals the dense reference. The limit still holds."""
    Ai, Aj, Ax = make_system(N, seed=15)
    rng = np.random.default_rng(2)
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b))
    big = [make_system(300, n_lhs=8, seed=20 + k) for k in range(6)]
    try:
        klujax.clear_cache()
        klujax.set_cache_limit(256)
        for _ in range(3):  # a first call, then found again twice
            f(Ax, rng.standard_normal(N)).block_until_ready()
        before = klujax.cache_info()["bytes"]
        Bi, Bj, Bx = big[0]
        klujax.solve(Bi, Bj, Bx, np.ones((8, 300))).block_until_ready()
        per = klujax.cache_info()["bytes"] - before  # one big pattern with its batch
        klujax.set_cache_limit(4.5 * per / 2**20)  # room for about four of them
        for Bi, Bj, Bx in big:
            klujax.solve(Bi, Bj, Bx, np.ones((8, 300))).block_until_ready()
        info = klujax.cache_info()
        assert info["bytes"] <= info["limit_bytes"]
        b = rng.standard_normal(N)
        x = np.asarray(f(Ax, b))
        assert klujax.cache_info()["numeric_hits"] == info["numeric_hits"] + 1
        np.testing.assert_allclose(x, np.linalg.solve(dense(Ai, Aj, Ax, N), b), rtol=1e-11, atol=1e-13)
    finally:
        klujax.set_cache_limit(256)
