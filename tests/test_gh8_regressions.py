"""Regression tests for the reports of issue 8 (points 3-6); points 1-2 are in test_accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense, make_system

import klujax

N = 8


@pytest.fixture
def restore_cache_limit():
    yield
    klujax.set_cache_limit(256)


@pytest.mark.parametrize("op", ["dot", "solve"])
@pytest.mark.parametrize("bad", [N, N + 5, -1])
def test_gh8_3_out_of_range_index_never_gives_a_finite_gradient(op, bad):
    """jit(grad) of a loss of dot/solve with a bad index: an error or NaN, never a number."""
    Ai, Aj, Ax = make_system(N, seed=2)
    Ai = Ai.copy()
    Ai[3] = bad
    x = np.ones(N)
    fn = klujax.dot if op == "dot" else klujax.solve

    def loss(Ax, Ai):
        return fn(Ai, Aj, Ax, x).sum()

    try:
        g = jax.jit(jax.grad(loss))(jnp.asarray(Ax), jnp.asarray(Ai))
    except (ValueError, jax.errors.JaxRuntimeError) as e:
        assert "Ai" in str(e)
    else:
        assert np.isnan(np.asarray(g)).any(), f"finite gradient {g} for an invalid index"


def test_gh8_4_numeric_handle_works_with_any_symbolic_of_its_pattern(restore_cache_limit):
    Ai, Aj, Ax = make_system(N, seed=3)
    b = np.arange(1.0, N + 1)
    ref = np.linalg.solve(dense(Ai, Aj, Ax, N), b)
    for limit in (0, 256):
        klujax.set_cache_limit(limit)
        klujax.clear_cache()
        sym = klujax.analyze(Ai, Aj, N)
        num = klujax.factor(Ai, Aj, Ax, sym)
        sym.close()
        klujax.clear_cache()
        with klujax.analyze(Ai, Aj, N) as sym2:
            np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym2), ref, rtol=1e-12)
            np.testing.assert_allclose(klujax.tsolve_with_numeric(num, b, sym2),
                                       np.linalg.solve(dense(Ai, Aj, Ax, N).T, b), rtol=1e-12)
            klujax.refactor(Ai, Aj, 2 * Ax, num, sym2)
            np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym2), ref / 2, rtol=1e-12)
        # another ordering of the same pattern is the same pattern too
        with klujax.analyze(Ai, Aj, N, options=klujax.KLUOptions(ordering="colamd")) as sym3:
            np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym3), ref / 2, rtol=1e-12)
        num.close()


def test_gh8_5_pinned_pattern_comes_back_after_clear_cache():
    Ai, Aj, Ax = make_system(N, seed=4)
    b = np.ones(N)
    grad = jax.jit(jax.grad(lambda a: klujax.solve(Ai, Aj, a, b).sum()))
    with klujax.analyze(Ai, Aj, N):
        klujax.clear_cache()
        grad(jnp.asarray(Ax)).block_until_ready()
        for k in range(3):
            before = klujax.cache_info()
            grad(jnp.asarray(Ax * (k + 2))).block_until_ready()
            after = klujax.cache_info()
            # the transposed solve of the backward pass finds the forward factorization
            assert after["numeric_hits"] - before["numeric_hits"] == 1, (before, after)
            assert after["pattern_misses"] == before["pattern_misses"]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_gh8_6_refactor_and_solve_returns_x_and_numeric(mode):
    Ai, Aj, Ax = make_system(N, seed=5)
    b = np.ones(N)
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        f = lambda a, b, num: klujax.refactor_and_solve(Ai, Aj, a, b, num, sym)  # noqa: E731
        x, num2 = (jax.jit(f) if mode == "jit" else f)(3 * Ax, b, num)
        assert isinstance(num2, klujax.KLUHandleManager) and num2.kind == "numeric"
        np.testing.assert_allclose(x, np.linalg.solve(3 * dense(Ai, Aj, Ax, N), b), rtol=1e-12)
        np.testing.assert_allclose(klujax.solve_with_numeric(num2, b, sym), x, rtol=1e-12)
