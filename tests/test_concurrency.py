"""Concurrency: several Python threads calling klujax at once.

8 threads start together (a barrier) and each checks every result against a dense NumPy
solve; any exception or wrong result in any thread fails the test. Covered: solve with
different patterns and with one shared pattern (the native cache is shared), the split
API with a shared symbolic analysis and per-thread numeric factorizations, one numeric
factorization shared by all threads, jitted functions (solve + grad), analyze/factor/free
of the same pattern racing, and solves racing cache clears and limit changes.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from helpers import dense, make_dominant, pattern, uniform_values

import klujax

N_THREADS = 8
ITERS = 40
N = 12


def _system(n: int, seed: int, batch: tuple[int, ...] = (), dtype=np.float64):
    rng = np.random.default_rng(seed)
    Ai, Aj, diag = pattern(n, rng, density=0.3, duplicates=2)
    Ax = make_dominant(uniform_values(rng, (*batch, len(Ai)), dtype), Ai, diag, n)
    return Ai.astype(np.int32), Aj.astype(np.int32), Ax


def _ref(Ai, Aj, Ax, b, n):
    """Dense reference; Ax (n_nz,) or (L, n_nz); b (n,) or (L, n)."""
    A = dense(Ai, Aj, Ax, n)
    b = np.asarray(b).astype(np.complex128)
    if A.ndim == 3:
        b = np.broadcast_to(b, (A.shape[0], n))
        return np.linalg.solve(A, b[..., None])[..., 0]
    return np.linalg.solve(A, b)


def _close(x, expected, what=""):
    """Equal up to KLU's accuracy. The test matrices have cond < 10, but KLU's default
    threshold pivoting (tol = 0.001, also in raw KLU) and refactorization with an earlier
    pivot order give relative errors up to ~1e-9 here; a race (two threads in one numeric
    object, a freed pattern, a mixed-up batch member) gives O(1) errors."""
    x = np.asarray(x)
    expected = np.asarray(expected)
    if not np.iscomplexobj(x):
        expected = expected.real
    assert x.shape == expected.shape, (what, x.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-300)
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-6 * scale, err_msg=what)


def _run_threads(work: Callable[[int], None], n_threads: int = N_THREADS,
                 timeout: float = 120.0) -> None:
    """Runs work(t) in n_threads threads started together; re-raises the first failure."""
    barrier = threading.Barrier(n_threads)
    errors: list[str] = []

    def target(t: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(t)
        except BaseException:  # noqa: BLE001
            errors.append(f"thread {t}:\n{traceback.format_exc()}")

    threads = [threading.Thread(target=target, args=(t,), daemon=True) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    alive = [t for t, th in enumerate(threads) if th.is_alive()]
    assert not alive, f"threads {alive} still running after {timeout}s (deadlock?)"
    assert not errors, "\n".join(errors[:3])


# ----------------------------------------------------------------------------- solve


def test_threads_solve_different_patterns():
    systems = [_system(N + t, seed=100 + t, batch=(3,), dtype=[np.float64, np.complex128][t % 2])
               for t in range(N_THREADS)]

    def work(t: int) -> None:
        Ai, Aj, Ax = systems[t]
        n = N + t
        rng = np.random.default_rng(t)
        for k in range(ITERS):
            scale = 1.0 + 0.1 * k
            b = uniform_values(rng, (3, n), np.float64)
            x = klujax.solve(Ai, Aj, Ax * scale, b)
            _close(x, _ref(Ai, Aj, Ax * scale, b, n), f"thread {t} iter {k}")

    _run_threads(work)


def test_threads_solve_same_pattern_different_values():
    """All threads share one cached pattern (and compete for its spare numeric objects)."""
    Ai, Aj, Ax0 = _system(N, seed=7)
    diag = pattern(N, np.random.default_rng(7), density=0.3, duplicates=2)[2]  # as _system
    rng = np.random.default_rng(0)
    values = [[make_dominant(uniform_values(rng, (len(Ai),), np.float64), Ai, diag, N)
               for _ in range(ITERS)] for _ in range(N_THREADS)]

    def work(t: int) -> None:
        rng_t = np.random.default_rng(100 + t)
        for k in range(ITERS):
            Ax = values[t][k]
            b = uniform_values(rng_t, (N,), np.float64)
            # alternate single and batched calls on the same pattern
            if k % 2:
                Axb = np.stack([Ax, Ax0])
                x = klujax.solve(Ai, Aj, Axb, b)
                _close(x, _ref(Ai, Aj, Axb, b, N), f"thread {t} iter {k}")
            else:
                _close(klujax.solve(Ai, Aj, Ax, b), _ref(Ai, Aj, Ax, b, N), f"thread {t} iter {k}")

    _run_threads(work)


def test_threads_same_pattern_same_values_with_gradients():
    """Retained factorizations (reverse mode) are looked up and stored concurrently."""
    Ai, Aj, Ax = _system(N, seed=8)
    b = uniform_values(np.random.default_rng(1), (N,), np.float64)
    A = dense(Ai, Aj, Ax, N).real
    x_ref = np.linalg.solve(A, b)
    # d(sum x)/d b = A^-T 1 ;  d(sum x)/d Ax[k] = -(A^-T 1)[Ai[k]] * x[Aj[k]]
    lam = np.linalg.solve(A.T, np.ones(N))
    g_ax_ref = -lam[Ai] * x_ref[Aj]
    grad = jax.jit(jax.grad(lambda a, bb: klujax.solve(Ai, Aj, a, bb).sum(), argnums=(0, 1)))

    def work(t: int) -> None:
        for k in range(ITERS):
            if (t + k) % 2:
                g_ax, g_b = grad(Ax, b)
                _close(g_ax, g_ax_ref, f"thread {t} iter {k} dAx")
                _close(g_b, lam, f"thread {t} iter {k} db")
            else:
                _close(klujax.solve(Ai, Aj, Ax, b), x_ref, f"thread {t} iter {k}")

    _run_threads(work)


def test_threads_jitted_functions():
    """Jitted functions (solve, vmapped solve, dot round trip) called from all threads."""
    Ai, Aj, Ax = _system(N, seed=9, batch=(4,))

    @jax.jit
    def f(Ax, b):
        x = klujax.solve(Ai, Aj, Ax, b)
        return x, klujax.dot(Ai, Aj, Ax, x)

    g = jax.jit(jax.vmap(klujax.solve, in_axes=(None, None, 0, 0)))

    def work(t: int) -> None:
        rng = np.random.default_rng(200 + t)
        for k in range(ITERS):
            b = uniform_values(rng, (4, N), np.float64)
            Axk = Ax * (1.0 + 0.05 * t)
            x, y = f(Axk, b)
            _close(x, _ref(Ai, Aj, Axk, b, N), f"thread {t} iter {k} solve")
            _close(y, b, f"thread {t} iter {k} dot")
            _close(g(Ai, Aj, Axk, b), x, f"thread {t} iter {k} vmap")

    _run_threads(work)


# ----------------------------------------------------------------------------- split API


def test_threads_shared_symbolic_per_thread_numeric():
    Ai, Aj, _ = _system(N, seed=10)
    diag = pattern(N, np.random.default_rng(10), density=0.3, duplicates=2)[2]
    with klujax.analyze(Ai, Aj, N) as sym:

        def work(t: int) -> None:
            rng = np.random.default_rng(300 + t)
            dtype = [np.float64, np.complex128][t % 2]
            vals = [make_dominant(uniform_values(rng, (2, len(Ai)), dtype), Ai, diag, N)
                    for _ in range(ITERS)]
            with klujax.factor(Ai, Aj, vals[0], sym) as num:
                for k in range(ITERS):
                    if k:
                        klujax.refactor(Ai, Aj, vals[k], num, sym)
                    b = uniform_values(rng, (2, N), np.float64)
                    x = klujax.solve_with_numeric(num, b, sym)
                    _close(x, _ref(Ai, Aj, vals[k], b, N), f"thread {t} iter {k}")
                    xs = klujax.solve_with_symbol(Ai, Aj, vals[k], b, sym)
                    _close(xs, x, f"thread {t} iter {k} solve_with_symbol")

        _run_threads(work)


def test_threads_share_one_numeric():
    Ai, Aj, Ax = _system(N, seed=11, batch=(3,))
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        solve_jit = jax.jit(klujax.solve_with_numeric)

        def work(t: int) -> None:
            rng = np.random.default_rng(400 + t)
            for k in range(ITERS):
                b = uniform_values(rng, (3, N), np.float64)
                fn = solve_jit if (t + k) % 2 else klujax.solve_with_numeric
                _close(fn(num, b, sym), _ref(Ai, Aj, Ax, b, N), f"thread {t} iter {k}")
                xt = klujax.tsolve_with_numeric(num, b, sym)
                A = dense(Ai, Aj, Ax, N).real
                _close(np.einsum("lji,lj->li", A, np.asarray(xt)), b, f"thread {t} tsolve")

        _run_threads(work)


def test_threads_analyze_factor_free_same_pattern():
    """Each thread analyses the same pattern (one shared analysis underneath), factors,
    solves and frees, repeatedly; freeing one thread's handles never breaks another's."""
    Ai, Aj, Ax = _system(N, seed=12)

    def work(t: int) -> None:
        rng = np.random.default_rng(500 + t)
        for k in range(ITERS):
            sym = klujax.analyze(Ai, Aj, N)
            num = klujax.factor(Ai, Aj, Ax * (1 + t), sym)
            b = uniform_values(rng, (N,), np.float64)
            _close(klujax.solve_with_numeric(num, b, sym), _ref(Ai, Aj, Ax * (1 + t), b, N),
                   f"thread {t} iter {k}")
            if k % 2:
                num.close()
                sym.close()
                num.close()  # double free: harmless, also while others run
            else:
                klujax.free_numeric(num)
                klujax.free_symbolic(sym)

    _run_threads(work)


# ----------------------------------------------------------------------------- cache


def test_threads_solve_while_cache_is_cleared_and_resized():
    """Two threads clear the cache / change its limit while six solve: no crash, no
    wrong result, and the limit is restored afterwards."""
    systems = [_system(N, seed=600 + t, batch=(2,)) for t in range(N_THREADS)]
    limit_mb = klujax.cache_info()["limit_bytes"] / 2**20
    stop = threading.Event()

    def work(t: int) -> None:
        if t < 2:
            k = 0
            while not stop.is_set():
                if t == 0:
                    klujax.clear_cache()
                else:
                    klujax.set_cache_limit([0, 0.01, limit_mb][k % 3])
                k += 1
                time.sleep(0.0005)  # often, but leave the solvers some CPU (2-core CI)
            return
        try:
            Ai, Aj, Ax = systems[t]
            rng = np.random.default_rng(700 + t)
            for k in range(ITERS):
                b = uniform_values(rng, (2, N), np.float64)
                if k % 8 == 7:
                    g = jax.grad(lambda a: jnp.sum(klujax.solve(Ai, Aj, a, b)))(Ax)
                    assert np.all(np.isfinite(np.asarray(g)))
                _close(klujax.solve(Ai, Aj, Ax, b), _ref(Ai, Aj, Ax, b, N), f"thread {t} {k}")
        finally:
            if t == N_THREADS - 1:
                stop.set()

    try:
        _run_threads(work)
    finally:
        stop.set()
        klujax.set_cache_limit(limit_mb)
    assert klujax.cache_info()["limit_bytes"] == int(limit_mb * 2**20)


# ----------------------------------------------------------------------------- thread cap


def _thread_stats() -> dict:
    from klujax import _klujax

    return _klujax.thread_stats()


def _idle_stats(timeout: float = 10.0) -> dict:
    """thread_stats() once every slot is back: a helper's slot is released when its task
    has run, which may be just after the call that scheduled it returned."""
    deadline = time.monotonic() + timeout
    st = _thread_stats()
    while st["busy"] and time.monotonic() < deadline:
        time.sleep(0.001)
        st = _thread_stats()
    return st


def _big_batch(n: int, L: int, seed: int, dtype=np.float64):
    """A banded, diagonally dominant batch large enough that one call is split into
    chunks over the worker pool (several ms of work)."""
    rng = np.random.default_rng(seed)
    rows, cols = [np.arange(n)], [np.arange(n)]
    for off in (1, -1, 7, -7):
        i = np.arange(max(0, -off), min(n, n - off))
        rows.append(i)
        cols.append(i + off)
    Ai = np.concatenate(rows).astype(np.int32)
    Aj = np.concatenate(cols).astype(np.int32)
    diag = np.arange(n)
    Ax = make_dominant(uniform_values(rng, (L, len(Ai)), dtype), Ai, diag, n)
    b = uniform_values(rng, (L, n), dtype)
    return Ai, Aj, Ax, b


def _dense_ref(Ai, Aj, Ax, b, n):
    A = jnp.zeros((Ax.shape[0], n, n), Ax.dtype).at[:, Ai, Aj].add(Ax)
    return np.asarray(jnp.linalg.solve(A, b[..., None])[..., 0])


def test_thread_cap_single_call_uses_the_pool():
    """One caller at a time: the batch is still split over the pool (single-call speed is
    kept), and the busy threads never exceed the cap."""
    from klujax import _klujax

    n, L = 400, 48
    Ai, Aj, Ax, b = _big_batch(n, L, seed=1)
    ref = _dense_ref(Ai, Aj, Ax, b, n)
    _idle_stats()
    _klujax.reset_thread_stats()
    for k in range(4):
        _close(klujax.solve(Ai, Aj, Ax * (1 + k), b), ref / (1 + k), f"call {k}")
    st = _idle_stats()
    assert st["busy"] == 0, st  # no slot leaked
    assert 1 <= st["peak"] <= st["cap"], st
    if st["cap"] > 1:
        assert st["helpers_run"] > 0, st


def test_thread_cap_no_helper_without_a_free_slot():
    """With every slot taken (as if other callers were inside klujax) a call runs alone on
    its calling thread: no helper is scheduled, the caller never waits for a slot, and the
    result is the same."""
    from klujax import _klujax

    n, L = 400, 48
    Ai, Aj, Ax, b = _big_batch(n, L, seed=2, dtype=np.complex128)
    ref = _dense_ref(Ai, Aj, Ax, b, n)
    cap = _thread_stats()["cap"]
    for held in (cap - 1, cap, cap + 2):
        _idle_stats()  # no helper of an earlier call still holds a slot
        _klujax._add_busy_for_tests(held)
        try:
            _klujax.reset_thread_stats()
            _close(klujax.solve(Ai, Aj, Ax * (2 + held), b), ref / (2 + held), f"held {held}")
            st = _thread_stats()
        finally:
            _klujax._add_busy_for_tests(-held)
        _idle_stats()
        assert st["helpers_run"] == 0, (held, st)
        assert st["peak"] == held + 1, (held, st)  # the caller itself, never a helper
        if cap > 1:
            assert st["helpers_declined"] > 0, (held, st)
    assert _idle_stats()["busy"] == 0


def test_thread_cap_concurrent_batched_solves():
    """K Python threads run jitted and eager batched solves at once (real and complex):
    every result equals the dense reference (jnp.linalg.solve), and the number of busy
    klujax threads stays within the cap plus the callers themselves (a caller is XLA's
    thread and always runs; helpers only take free slots)."""
    from klujax import _klujax

    n, L = 300, 32
    cap = _thread_stats()["cap"]
    k_threads = max(4, 2 * cap)
    data = [_big_batch(n, L, seed=20 + t, dtype=[np.float64, np.complex128][t % 2])
            for t in range(k_threads)]
    refs = [_dense_ref(*d, n) for d in data]
    solve_jit = jax.jit(lambda Ai, Aj, Ax, b: klujax.solve(Ai, Aj, Ax, b))
    _klujax.reset_thread_stats()

    def work(t: int) -> None:
        Ai, Aj, Ax, b = data[t]
        for k in range(8):
            s = 1.0 + 0.25 * k
            fn = solve_jit if (t + k) % 2 else klujax.solve
            _close(fn(Ai, Aj, Ax * s, b), refs[t] / s, f"thread {t} iter {k}")

    _run_threads(work, n_threads=k_threads)
    st = _idle_stats()
    assert st["busy"] == 0, st  # no slot leaked
    assert st["peak_callers"] <= k_threads, st
    # helpers never exceed cap - 1 and are only admitted below the cap
    assert st["peak"] <= max(cap, st["peak_callers"]) + cap - 1, st
    assert st["calls"] >= 8 * k_threads, st


def test_thread_cap_concurrent_split_api():
    """Concurrent batched refactor + solve_with_numeric through the pool's slots."""
    n, L = 300, 24
    Ai, Aj, Ax, b = _big_batch(n, L, seed=40)
    ref = _dense_ref(Ai, Aj, Ax, b, n)
    with klujax.analyze(Ai, Aj, n) as sym:

        def work(t: int) -> None:
            with klujax.factor(Ai, Aj, Ax, sym) as num:
                for k in range(6):
                    s = 1.0 + t + 0.5 * k
                    klujax.refactor(Ai, Aj, Ax * s, num, sym)
                    _close(klujax.solve_with_numeric(num, b, sym), ref / s, f"thread {t} iter {k}")

        _run_threads(work, n_threads=4)
    assert _idle_stats()["busy"] == 0
