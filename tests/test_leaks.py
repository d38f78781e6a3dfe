"""Memory: many analyze/factor/refactor/free cycles and many jitted calls must not grow
the process RSS (nor leave native objects alive).

A numeric factorization of the 60 x 60 test matrix takes ~10 KiB, so leaking the
20,000 objects these tests create would grow RSS by ~200 MiB; the bound is 30 MiB.
"""

from __future__ import annotations

import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import live, live_delta, quiet_unowned, rss_mib

import klujax

pytestmark = pytest.mark.slow

N_LEAK = 60
BOUND_MIB = 30.0


def _system(seed: int = 0):
    """A banded 60 x 60 matrix plus random fill-in entries, as jax arrays."""
    rng = np.random.default_rng(seed)
    idx = np.arange(N_LEAK)
    Ai = np.concatenate([idx, idx[1:], idx[:-1], rng.integers(0, N_LEAK, 60)]).astype(np.int32)
    Aj = np.concatenate([idx, idx[:-1], idx[1:], rng.integers(0, N_LEAK, 60)]).astype(np.int32)
    Ax = rng.uniform(-1, 1, len(Ai))
    Ax[:N_LEAK] += 10.0
    return jnp.asarray(Ai), jnp.asarray(Aj), jnp.asarray(Ax)


def _grows(cycle, n_cycles: int, warmup: int) -> tuple[float, float]:
    """Runs warm-up cycles, then n_cycles; returns (RSS growth MiB, seconds)."""
    for _ in range(warmup):
        cycle()
    gc.collect()
    r0 = rss_mib()
    t0 = time.perf_counter()
    for _ in range(n_cycles):
        cycle()
    gc.collect()
    return rss_mib() - r0, time.perf_counter() - t0


def test_rss_flat_batched_analyze_factor_free():
    """2,000 cycles of analyze + factor(n_lhs=10) + solve + free: 20,000 numeric objects."""
    Ai, Aj, Ax = _system()
    Ax10 = jnp.stack([Ax * (1 + 0.01 * k) for k in range(10)])
    b = jnp.ones(N_LEAK)
    before = live()
    count = [0]

    def cycle():
        sym = klujax.analyze(Ai, Aj, N_LEAK)
        num = klujax.factor(Ai, Aj, Ax10, sym)
        if count[0] % 50 == 0:
            x = klujax.solve_with_numeric(num, b, sym)
            assert bool(jnp.isfinite(x).all())
        count[0] += 1
        assert int(klujax.free_numeric(num)) == 10
        assert int(klujax.free_symbolic(sym)) == 1

    growth, _ = _grows(cycle, 2_000, warmup=200)
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}
    assert growth < BOUND_MIB, f"RSS grew by {growth:.1f} MiB over 20,000 factorizations"


def test_rss_flat_individual_analyze_factor_free():
    """20,000 individual analyze/factor/free cycles (about 20 s), half through the
    context managers, half through free_*."""
    Ai, Aj, Ax = _system(1)
    before = live()
    flip = [False]

    def cycle():
        flip[0] = not flip[0]
        if flip[0]:
            with klujax.analyze(Ai, Aj, N_LEAK) as sym, klujax.factor(Ai, Aj, Ax, sym):
                pass
        else:
            sym = klujax.analyze(Ai, Aj, N_LEAK)
            num = klujax.factor(Ai, Aj, Ax, sym)
            klujax.free_numeric(num)
            klujax.free_symbolic(sym)

    growth, seconds = _grows(cycle, 20_000, warmup=300)
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}
    assert growth < BOUND_MIB, f"RSS grew by {growth:.1f} MiB over 20,000 cycles ({seconds:.0f} s)"


def test_rss_flat_gc_freed_managers():
    """Managers dropped without close() are freed by the garbage collector."""
    Ai, Aj, Ax = _system(2)
    Ax10 = jnp.stack([Ax] * 10)
    before = live()

    def cycle():
        sym = klujax.analyze(Ai, Aj, N_LEAK)
        klujax.factor(Ai, Aj, Ax10, sym)  # dropped at once

    growth, _ = _grows(cycle, 1_000, warmup=100)
    gc.collect()
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}
    assert growth < BOUND_MIB


def test_rss_flat_refactor_cycles():
    """20,000 refactorizations (2,000 batched refactors of 10 members) reuse the objects."""
    Ai, Aj, Ax = _system(3)
    Ax10 = jnp.stack([Ax * (1 + 0.01 * k) for k in range(10)])
    b = jnp.ones(N_LEAK)
    with klujax.analyze(Ai, Aj, N_LEAK) as sym, klujax.factor(Ai, Aj, Ax10, sym) as num:
        before = live()
        scale = [1.0]

        def cycle():
            scale[0] = 3.0 - scale[0]  # alternate 1, 2
            klujax.refactor(Ai, Aj, Ax10 * scale[0], num, sym)

        growth, _ = _grows(cycle, 2_000, warmup=100)
        assert live_delta(before) == {"symbolic": 0, "numeric": 0}
        x = klujax.solve_with_numeric(num, b, sym)
        assert bool(jnp.isfinite(x).all())
    assert growth < BOUND_MIB


def test_rss_flat_jitted_factor_solve_free():
    """Several hundred calls of a jitted factor + solve_with_numeric + free_numeric."""
    Ai, Aj, Ax = _system(4)
    b = jnp.ones(N_LEAK)
    Ax4 = jnp.stack([Ax] * 4)
    with klujax.analyze(Ai, Aj, N_LEAK) as sym:

        @jax.jit
        def step(Ax, b):
            num = klujax.factor(Ai, Aj, Ax, sym)
            x = klujax.solve_with_numeric(num, b, sym)
            return x, klujax.free_numeric(num, dependency=x)

        before = live()
        k = [0]

        def cycle():
            k[0] += 1
            x, freed = step(Ax4 * (1 + 1e-3 * (k[0] % 7)), b)
            assert int(freed) == 4

        with quiet_unowned():
            growth, _ = _grows(cycle, 500, warmup=50)
        assert live_delta(before) == {"symbolic": 0, "numeric": 0}
        x, _ = step(Ax4, b)
        A = np.zeros((N_LEAK, N_LEAK))
        np.add.at(A, (np.asarray(Ai), np.asarray(Aj)), np.asarray(Ax))
        np.testing.assert_allclose(np.asarray(x), np.broadcast_to(np.linalg.solve(A, np.ones(N_LEAK)),
                                                                   (4, N_LEAK)), rtol=1e-10, atol=1e-12)
    assert growth < BOUND_MIB


def test_rss_flat_jitted_analyze_factor_solve_free():
    """The whole pipeline inside jit, freeing the symbolic analysis too."""
    Ai, Aj, Ax = _system(5)
    b = jnp.ones(N_LEAK)

    @jax.jit
    def step(Ax, b):
        sym = klujax.analyze(Ai, Aj, N_LEAK)
        num = klujax.factor(Ai, Aj, Ax, sym)
        x = klujax.solve_with_symbol(Ai, Aj, Ax, b, sym)
        f1 = klujax.free_numeric(num, dependency=x)
        return x, f1, klujax.free_symbolic(sym, dependency=(x, f1))

    before = live()
    k = [0]

    def cycle():
        k[0] += 1
        _, f1, f2 = step(Ax * (1 + 1e-3 * (k[0] % 5)), b)
        assert (int(f1), int(f2)) == (1, 1)

    with quiet_unowned():
        growth, _ = _grows(cycle, 500, warmup=50)
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}
    assert growth < BOUND_MIB


def test_rss_flat_jitted_solve_varying_values():
    """klujax.solve inside jit with new values every call (factorization cache bounded)."""
    Ai, Aj, Ax = _system(6)
    b = jnp.ones((3, N_LEAK))
    f = jax.jit(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b))
    Ax3 = jnp.stack([Ax] * 3)
    k = [0]

    def cycle():
        k[0] += 1
        x = f(Ax3 * (1 + 1e-4 * k[0]), b)
        x.block_until_ready()

    growth, _ = _grows(cycle, 600, warmup=100)
    assert growth < BOUND_MIB
    info = klujax.cache_info()
    assert info["bytes"] <= info["limit_bytes"]
