"""Lifecycle and misuse of split-API handles (KLUHandleManager and raw uint64 handles).

Every misuse must raise a clear Python exception naming the argument; none may crash
the process.
"""

from __future__ import annotations

import gc
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    RUNTIME_ERRORS,
    L,
    N,
    R,
    assert_close,
    assert_same_objects,
    live,
    live_delta,
    make_pattern,
    make_split_system,
    make_values,
    quiet_unowned,
    rand,
    reference_solve,
)

import klujax


@pytest.fixture
def system():
    """(Ai, Aj, Ax (L, n_nz), sym); the symbolic handle is closed afterwards."""
    Ai, Aj, Ax = make_split_system(N, n_lhs=L, seed=2)
    sym = klujax.analyze(Ai, Aj, N)
    yield Ai, Aj, Ax, sym
    sym.close()


# ============================================================================ ownership


def test_context_manager_frees(system):
    Ai, Aj, Ax, sym = system
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        assert live_delta(before)["numeric"] == L
        assert "owned" in repr(num)
    assert num.closed
    assert "closed" in repr(num)
    assert live_delta(before)["numeric"] == 0


def test_context_manager_frees_on_exception(system):
    Ai, Aj, Ax, sym = system
    before = live()
    with pytest.raises(RuntimeError, match="boom"):
        with klujax.factor(Ai, Aj, Ax, sym):
            raise RuntimeError("boom")
    assert live_delta(before)["numeric"] == 0


def test_symbolic_context_manager():
    Ai, Aj = make_pattern(N, seed=40)
    before = live()
    with klujax.analyze(Ai, Aj, N) as sym:
        assert live_delta(before)["symbolic"] == 1
    assert sym.closed
    assert live_delta(before)["symbolic"] == 0


def test_del_and_gc_frees(system):
    Ai, Aj, Ax, sym = system
    before = live()
    num = klujax.factor(Ai, Aj, Ax, sym)
    assert live_delta(before)["numeric"] == L
    del num
    gc.collect()
    assert live_delta(before)["numeric"] == 0

    Bi, Bj = make_pattern(N, seed=41)
    s = klujax.analyze(Bi, Bj, N)
    assert live_delta(before)["symbolic"] == 1
    del s
    gc.collect()
    assert live_delta(before)["symbolic"] == 0


def test_manager_in_reference_cycle_is_freed_by_gc(system):
    Ai, Aj, Ax, sym = system
    before = live()
    a = {"num": klujax.factor(Ai, Aj, Ax, sym)}
    a["self"] = a
    del a
    gc.collect()
    assert live_delta(before)["numeric"] == 0


def test_close_twice_is_harmless(system):
    Ai, Aj, Ax, sym = system
    before = live()
    num = klujax.factor(Ai, Aj, Ax, sym)
    num.close()
    num.close()
    assert num.closed
    assert live_delta(before)["numeric"] == 0
    del num
    gc.collect()
    assert live_delta(before)["numeric"] == 0


def test_double_free_is_harmless(system):
    Ai, Aj, Ax, sym = system
    before = live()
    num = klujax.factor(Ai, Aj, Ax, sym)
    raw = num.handle
    assert int(klujax.free_numeric(num)) == L
    assert num.closed
    assert int(klujax.free_numeric(num)) == 0  # closed manager: no-op
    assert int(klujax.free_numeric(raw)) == 0  # unknown ids are ignored
    num.close()
    assert live_delta(before)["numeric"] == 0
    # other live objects were not touched
    with klujax.factor(Ai, Aj, Ax, sym) as other:
        klujax.free_numeric(raw)
        b = rand((L, N))
        assert_close(klujax.solve_with_numeric(other, b, sym), reference_solve(Ai, Aj, Ax, b, N))


def test_free_with_dependency_eager(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    num = klujax.factor(Ai, Aj, Ax, sym)
    x = klujax.solve_with_numeric(num, b, sym)
    assert int(klujax.free_numeric(num, dependency={"x": x, "b": b})) == L
    assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
    assert num.closed


def test_free_symbolic_keeps_numeric_usable_until_freed(system):
    """Numeric objects keep their pattern alive; solving needs a live symbolic handle."""
    Ai, Aj, Ax, _ = system
    Bi, Bj = make_pattern(N, seed=42)
    Bx = make_values(Bi, Bj, N, batch=(L,))
    b = rand((L, N))
    before = live()
    sym = klujax.analyze(Bi, Bj, N)
    num = klujax.factor(Bi, Bj, Bx, sym)
    sym_raw = sym.handle
    assert int(klujax.free_symbolic(sym)) == 1
    assert live_delta(before) == {"symbolic": 0, "numeric": L}
    with pytest.raises(ValueError, match="symbolic was already freed"):
        klujax.solve_with_numeric(num, b, sym)
    with pytest.raises(RUNTIME_ERRORS, match="symbolic"):
        klujax.solve_with_numeric(num, b, sym_raw)
    # a fresh analysis of the same pattern is a new symbolic object for the same pattern
    with klujax.analyze(Bi, Bj, N) as sym2:
        assert_close(klujax.solve_with_symbol(Bi, Bj, Bx, b, sym2), reference_solve(Bi, Bj, Bx, b, N))
    num.close()
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}


def test_borrowed_manager_does_not_free(system):
    Ai, Aj, Ax, sym = system
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        borrowed = klujax.KLUHandleManager(num.handle, kind="numeric", dtype=np.float64)
        assert not borrowed.owned and not borrowed.closed
        assert "borrowed" in repr(borrowed)
        borrowed.close()
        del borrowed
        gc.collect()
        assert live_delta(before)["numeric"] == L
        b = rand((L, N))
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))
    assert live_delta(before)["numeric"] == 0


def test_manager_rejects_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        klujax.KLUHandleManager(jnp.zeros((), jnp.uint64), kind="lu")


# ============================================================================ misuse


def test_free_then_use(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    num = klujax.factor(Ai, Aj, Ax, sym)
    raw = num.handle
    num.close()
    # through the manager: caught in Python
    for call in (lambda: klujax.solve_with_numeric(num, b, sym),
                 lambda: klujax.tsolve_with_numeric(num, b, sym),
                 lambda: klujax.refactor(Ai, Aj, Ax, num, sym),
                 lambda: klujax.refactor_and_solve(Ai, Aj, Ax, b, num, sym)[0]):
        with pytest.raises(ValueError, match="numeric was already freed"):
            call()
    # through the raw handle: caught by the native registry
    for call in (lambda: klujax.solve_with_numeric(raw, b, sym),
                 lambda: klujax.tsolve_with_numeric(raw, b, sym),
                 lambda: klujax.refactor(Ai, Aj, Ax, raw, sym),
                 lambda: jax.jit(lambda h: klujax.solve_with_numeric(h, b, sym))(raw)):
        with pytest.raises(RUNTIME_ERRORS, match="numeric .*not a live numeric handle"):
            _block(call)


def _block(call):
    out = call()
    out = out.handle if isinstance(out, klujax.KLUHandleManager) else out
    return jax.block_until_ready(out)


def test_symbolic_free_then_use():
    Ai, Aj, Ax = make_split_system(N, seed=43)
    b = rand((N,))
    sym = klujax.analyze(Ai, Aj, N)
    raw = sym.handle
    sym.close()
    for call in (lambda: klujax.factor(Ai, Aj, Ax, sym),
                 lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym),
                 lambda: klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym)):
        with pytest.raises(ValueError, match="symbolic was already freed"):
            call()
    for call in (lambda: klujax.factor(Ai, Aj, Ax, raw),
                 lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, raw),
                 lambda: klujax.tsolve_with_symbol(Ai, Aj, Ax, b, raw)):
        with pytest.raises(RUNTIME_ERRORS, match="symbolic .*not a live symbolic handle"):
            _block(call)
    assert int(klujax.free_symbolic(raw)) == 0
    assert int(klujax.free_symbolic(sym)) == 0


def test_wrong_kind(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        # managers: kind checked in Python (TypeError)
        with pytest.raises(TypeError, match="symbolic is a numeric handle"):
            klujax.factor(Ai, Aj, Ax, num)
        with pytest.raises(TypeError, match="numeric is a symbolic handle"):
            klujax.solve_with_numeric(sym, b, sym)
        with pytest.raises(TypeError, match="symbolic is a numeric handle"):
            klujax.solve_with_numeric(num, b, num)
        with pytest.raises(TypeError, match="numeric is a symbolic handle"):
            klujax.refactor(Ai, Aj, Ax, sym, sym)
        with pytest.raises(TypeError, match="symbolic is a numeric handle"):
            klujax.solve_with_symbol(Ai, Aj, Ax, b, num)
        with pytest.raises(TypeError):
            klujax.free_symbolic(num)
        with pytest.raises(TypeError):
            klujax.free_numeric(sym)
        # raw handles: kind checked natively
        with pytest.raises(RUNTIME_ERRORS, match="numeric .*is a symbolic handle"):
            _block(lambda: klujax.solve_with_numeric(jnp.broadcast_to(sym.handle, (L,)), b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic .*is a numeric handle"):
            _block(lambda: klujax.solve_with_numeric(num, b, num.handle[0]))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic .*is a numeric handle"):
            _block(lambda: klujax.factor(Ai, Aj, Ax, num.handle[1]))
        # freeing the wrong kind through a raw handle is ignored, not a crash
        assert int(klujax.free_symbolic(num.handle[0])) == 0
        assert int(klujax.free_numeric(sym.handle)) == 0
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))


def test_non_uint64_handles_rejected(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        for bad in (num.handle.astype(jnp.int64), np.asarray(num.handle).astype(np.float64),
                    int(num.handle[0]), None, "handle"):
            with pytest.raises(TypeError, match="numeric must be a KLUHandleManager or a uint64"):
                klujax.solve_with_numeric(bad, b, sym)
        with pytest.raises(TypeError, match="symbolic must be a KLUHandleManager or a uint64"):
            klujax.factor(Ai, Aj, Ax, int(sym.handle))


@pytest.mark.parametrize("seed", range(4))
def test_random_integer_handle(system, seed):
    Ai, Aj, Ax, sym = system
    b = rand((N,))
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, size=3, dtype=np.uint64)
    values = np.concatenate([values, (values & ~np.uint64(0xF)) | np.uint64(0xA),  # numeric tag
                             (values & ~np.uint64(0xF)) | np.uint64(0x5),  # symbolic tag
                             np.array([0, 1, 2**64 - 1], np.uint64)])
    for v in values:
        h = jnp.asarray(np.uint64(v))
        with pytest.raises(RUNTIME_ERRORS, match="numeric .*not a live numeric handle"):
            _block(lambda: klujax.solve_with_numeric(h, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="numeric .*not a live numeric handle"):
            _block(lambda: klujax.refactor(Ai, Aj, Ax[0], h, sym))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic .*not a live symbolic handle"):
            _block(lambda: klujax.solve_with_symbol(Ai, Aj, Ax, b, h))
        with pytest.raises(RUNTIME_ERRORS, match="symbolic .*not a live symbolic handle"):
            _block(lambda: klujax.factor(Ai, Aj, Ax, h))
        assert int(klujax.free_numeric(h)) == 0
        assert int(klujax.free_symbolic(h)) == 0


def test_batch_with_one_bad_handle(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        h = num.handle.at[1].set(np.uint64(12345))
        with pytest.raises(RUNTIME_ERRORS, match="numeric"):
            _block(lambda: klujax.solve_with_numeric(h, b, sym))
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))


def test_numeric_from_another_pattern(system):
    Ai, Aj, Ax, sym = system
    Bi, Bj = make_pattern(N, seed=44)
    Bx = make_values(Bi, Bj, N, batch=(L,))
    b = rand((L, N))
    with klujax.analyze(Bi, Bj, N) as symB, klujax.factor(Bi, Bj, Bx, symB) as numB:
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*another sparsity pattern"):
            _block(lambda: klujax.solve_with_numeric(numB, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*another sparsity pattern"):
            _block(lambda: klujax.tsolve_with_numeric(numB, b, sym))
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*another sparsity pattern"):
            _block(lambda: klujax.refactor(Ai, Aj, Ax, numB, sym))
        # a pattern with another n_col
        Ci, Cj, Cx = make_split_system(N + 2, seed=45)
        with klujax.analyze(Ci, Cj, N + 2) as symC:
            with pytest.raises(RUNTIME_ERRORS, match="n_col"):
                _block(lambda: klujax.solve_with_numeric(numB, b, symC))
        assert_close(klujax.solve_with_numeric(numB, b, symB), reference_solve(Bi, Bj, Bx, b, N))


def test_indices_not_matching_symbolic(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    Bi, Bj = make_pattern(N, seed=46)
    Bx = make_values(Bi, Bj, N, batch=(L,))
    swapped = (Aj, Ai)  # same n_nz, other pattern
    reordered = (Ai[::-1].copy(), Aj[::-1].copy())  # same entries, other order
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        for Pi, Pj in (swapped, reordered):
            with pytest.raises(RUNTIME_ERRORS, match="Ai/Aj.* not the pattern"):
                _block(lambda: klujax.factor(Pi, Pj, Ax, sym))
            with pytest.raises(RUNTIME_ERRORS, match="Ai/Aj.* not the pattern"):
                _block(lambda: klujax.refactor(Pi, Pj, Ax, num, sym))
            with pytest.raises(RUNTIME_ERRORS, match="Ai/Aj.* not the pattern"):
                _block(lambda: klujax.solve_with_symbol(Pi, Pj, Ax, b, sym))
            with pytest.raises(RUNTIME_ERRORS, match="Ai/Aj.* not the pattern"):
                _block(lambda: klujax.refactor_and_solve(Pi, Pj, Ax, b, num, sym)[0])
        if len(Bi) != len(Ai):  # different n_nz: caught at trace time or natively
            with pytest.raises((ValueError, TypeError, jax.errors.JaxRuntimeError), match="Ai"):
                _block(lambda: klujax.factor(Bi, Bj, Bx, sym))
        # a bad refactor attempt must not have damaged the factorization
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))


def test_wrong_batch_sizes(system):
    Ai, Aj, Ax, sym = system
    with klujax.factor(Ai, Aj, Ax, sym) as num:  # L handles
        with pytest.raises(ValueError, match="numeric"):
            klujax.solve_with_numeric(num, rand((L + 1, N)), sym)
        with pytest.raises(ValueError, match="numeric"):
            klujax.tsolve_with_numeric(num, rand((L + 1, N, R)), sym)
        with pytest.raises(ValueError, match="Ax"):
            klujax.refactor(Ai, Aj, Ax[:2], num, sym)
        with pytest.raises(ValueError, match="Ax"):
            klujax.refactor_and_solve(Ai, Aj, Ax[:2], rand((L, N)), num, sym)
        with pytest.raises(ValueError, match="Ax"):
            klujax.factor(Ai, Aj, Ax[None], sym)  # 3D Ax
        with pytest.raises(ValueError, match="n_lhs"):
            klujax.solve_with_symbol(Ai, Aj, Ax, rand((L + 1, N)), sym)
        with pytest.raises(RUNTIME_ERRORS, match="n_col"):
            _block(lambda: klujax.solve_with_numeric(num, rand((L, N + 1)), sym))


def test_real_numeric_refactored_with_complex_values(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        with pytest.raises(TypeError, match="numeric was factored as float64, Ax is complex128"):
            klujax.refactor(Ai, Aj, Ax + 1j, num, sym)
        with pytest.raises(TypeError, match="numeric was factored as float64"):
            klujax.refactor_and_solve(Ai, Aj, Ax + 1j, b, num, sym)
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*holds a real factorization"):
            _block(lambda: klujax.refactor(Ai, Aj, Ax + 1j, num.handle, sym))
        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))
    with klujax.factor(Ai, Aj, Ax + 0j, sym) as cnum:
        with pytest.raises(TypeError, match="numeric was factored as complex128, Ax is float64"):
            klujax.refactor(Ai, Aj, Ax, cnum, sym)
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*holds a complex factorization"):
            _block(lambda: klujax.refactor(Ai, Aj, Ax, cnum.handle, sym))
        # a raw complex handle with a real b: the dtype is unknown, the native check names it
        with pytest.raises(RUNTIME_ERRORS, match="numeric handle .*holds a complex factorization"):
            _block(lambda: klujax.solve_with_numeric(cnum.handle, b, sym))
        assert_close(klujax.solve_with_numeric(cnum, b, sym), reference_solve(Ai, Aj, Ax + 0j, b, N))


def test_bad_values_dtype(system):
    Ai, Aj, Ax, sym = system
    with pytest.raises(TypeError, match="Ax"):
        klujax.factor(Ai, Aj, Ax.astype(bool), sym)
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        with pytest.raises(TypeError, match="b"):
            klujax.solve_with_numeric(num, np.ones((L, N), bool), sym)


def test_errors_inside_jit_are_clear(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    num = klujax.factor(Ai, Aj, Ax, sym)
    raw = num.handle
    num.close()
    f = jax.jit(lambda h, b: klujax.solve_with_numeric(h, b, sym))
    with pytest.raises(RUNTIME_ERRORS, match="klujax.solve_with_numeric: numeric"):
        _block(lambda: f(raw, b))
    with pytest.raises(TypeError, match="numeric is a symbolic handle"):
        jax.jit(lambda b: klujax.solve_with_numeric(sym, b, sym))(b)
    with pytest.raises(ValueError, match="numeric"):
        f(raw, rand((L + 1, N)))


# ============================================================================ pytree / jit / vmap


def test_pytree_round_trip(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        leaves, treedef = jax.tree_util.tree_flatten(num)
        assert len(leaves) == 1 and leaves[0] is num.handle
        rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
        copied = jax.tree_util.tree_map(lambda h: h, {"n": num, "s": sym, "b": b})
        for m, ref in ((rebuilt, num), (copied["n"], num), (copied["s"], sym)):
            assert isinstance(m, klujax.KLUHandleManager)
            assert m is not ref
            assert not m.owned and not m.closed
            assert (m.kind, m.dtype) == (ref.kind, ref.dtype)
            np.testing.assert_array_equal(np.asarray(m.handle), np.asarray(ref.handle))
        x = klujax.solve_with_numeric(copied["n"], b, copied["s"])
        assert_close(x, reference_solve(Ai, Aj, Ax, b, N))
        # dropping or closing the copies frees nothing
        rebuilt.close()
        del rebuilt, copied
        gc.collect()
        assert live_delta(before)["numeric"] == L
        assert_close(klujax.solve_with_numeric(num, b, sym), x)
    assert live_delta(before)["numeric"] == 0


def test_handle_through_jit_and_vmap(system):
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    before = live()
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        out = jax.jit(lambda m: m)(num)
        assert isinstance(out, klujax.KLUHandleManager) and not out.owned
        assert out.dtype == num.dtype and out.kind == "numeric"
        assert_same_objects(np.asarray(out.handle), np.asarray(num.handle))
        vout = jax.vmap(lambda m: m)(num)
        assert isinstance(vout, klujax.KLUHandleManager) and not vout.owned
        assert_same_objects(np.asarray(vout.handle), np.asarray(num.handle))
        # tree_map over a jitted result, then solve with the rebuilt managers
        out2 = jax.tree_util.tree_map(lambda h: h, jax.jit(lambda m, s: (m, s))(num, sym))
        assert_close(klujax.solve_with_numeric(out2[0], b, out2[1]), reference_solve(Ai, Aj, Ax, b, N))
        # per-member managers made with vmap solve their own member
        xs = jax.vmap(lambda m, b: klujax.solve_with_numeric(m, b, sym))(num, b)
        assert_close(xs, reference_solve(Ai, Aj, Ax, b, N))
        del out, vout, out2
        gc.collect()
        assert live_delta(before)["numeric"] == L
    assert live_delta(before)["numeric"] == 0


def test_handles_are_hashable_in_jit_cache(system):
    """The pytree aux data (kind, dtype) is part of the jit cache key."""
    Ai, Aj, Ax, sym = system
    b = rand((L, N))
    f = jax.jit(lambda m, b: klujax.solve_with_numeric(m, b, sym))
    with klujax.factor(Ai, Aj, Ax, sym) as rnum, klujax.factor(Ai, Aj, Ax + 0j, sym) as cnum:
        xr = f(rnum, b + 0j)  # real factorization, complex b
        xc = f(cnum, b + 0j)
        assert_close(xr, reference_solve(Ai, Aj, Ax, b + 0j, N))
        assert_close(xc, reference_solve(Ai, Aj, Ax + 0j, b + 0j, N))


# ============================================================================ symbolic sharing


def test_analyze_same_pattern_after_cache_eviction_shares_the_analysis():
    """Handles of one pattern share one analysis even after the pattern cache used by
    klujax.solve has evicted it (LRU of 64 patterns): a numeric handle factored with the
    first analysis must work with the second."""
    Ai, Aj, Ax = make_split_system(N, seed=47)
    b = rand((N,))
    before = live()
    sym1 = klujax.analyze(Ai, Aj, N)
    num = klujax.factor(Ai, Aj, Ax, sym1)
    # solve 80 other patterns (same shapes: one compilation) to evict ours from the cache
    n = 10
    diag = np.arange(n, dtype=np.int32)
    for i, j in [(i, j) for i in range(n) for j in range(n) if i != j][:80]:
        Pi = np.append(diag, np.int32(i))
        Pj = np.append(diag, np.int32(j))
        klujax.solve(Pi, Pj, np.append(np.full(n, 4.0), 1.0), np.ones(n))
    sym2 = klujax.analyze(Ai, Aj, N)
    try:
        assert int(sym2.handle) != int(sym1.handle)  # every analyze owns its own handle
        assert live_delta(before)["symbolic"] == 2
        assert_close(klujax.solve_with_numeric(num, b, sym2), reference_solve(Ai, Aj, Ax, b, N))
    finally:
        num.close()
        sym2.close()
        sym1.close()
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}


def test_double_free_of_shared_symbolic_does_not_free_other_owner():
    """free_symbolic documents that freeing twice is harmless. With the same pattern
    analysed twice (one shared, reference-counted id), freeing the first handle twice
    must not release the second owner's reference."""
    Ai, Aj, Ax = make_split_system(N, seed=48)
    b = rand((N,))
    before = live()
    s1 = klujax.analyze(Ai, Aj, N)
    s2 = klujax.analyze(Ai, Aj, N)
    try:
        assert int(klujax.free_symbolic(s1)) == 1
        klujax.free_symbolic(s1)  # harmless: the manager is closed
        klujax.free_symbolic(s1.handle)  # "harmless" too, per the docstring
        assert live_delta(before)["symbolic"] == 1  # s2's handle is untouched
        assert_close(klujax.solve_with_symbol(Ai, Aj, Ax, b, s2), reference_solve(Ai, Aj, Ax, b, N))
    finally:
        s2.close()


# ============================================================================ threads


def test_threads_share_one_numeric_handle(system):
    Ai, Aj, Ax, sym = system
    bs = rand((8, L, N, R), seed=11)
    refs = [reference_solve(Ai, Aj, Ax, bs[k], N) for k in range(8)]
    trefs = [reference_solve(Ai, Aj, Ax, bs[k], N, transpose=True) for k in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)
    with klujax.factor(Ai, Aj, Ax, sym) as num:
        jit_solve = jax.jit(lambda h, b: klujax.solve_with_numeric(h, b, sym))
        klujax.solve_with_numeric(num, bs[0], sym)  # compile outside the threads
        klujax.tsolve_with_numeric(num, bs[0], sym)
        jit_solve(num.handle, bs[0])

        def work(t: int) -> None:
            try:
                start.wait()
                for it in range(40):
                    k = (t + it) % 8
                    if it % 3 == 0:
                        x = klujax.solve_with_numeric(num, bs[k], sym)
                        assert_close(x, refs[k])
                    elif it % 3 == 1:
                        x = klujax.tsolve_with_numeric(num, bs[k], sym)
                        assert_close(x, trefs[k])
                    else:
                        assert_close(jit_solve(num.handle, bs[k]), refs[k])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_threads_factor_refactor_free_independently():
    """Threads that each own their handles (same pattern, shared symbolic) don't interfere."""
    Ai, Aj, _ = make_split_system(N, seed=49)
    errors: list[BaseException] = []
    before = live()
    with klujax.analyze(Ai, Aj, N) as sym:
        def work(t: int) -> None:
            try:
                for it in range(15):
                    Ax = make_values(Ai, Aj, N, batch=(L,), seed=1000 * t + it)
                    Ax2 = make_values(Ai, Aj, N, batch=(L,), seed=1000 * t + it + 500)
                    b = rand((L, N), seed=t)
                    with klujax.factor(Ai, Aj, Ax, sym) as num:
                        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax, b, N))
                        klujax.refactor(Ai, Aj, Ax2, num, sym)
                        assert_close(klujax.solve_with_numeric(num, b, sym), reference_solve(Ai, Aj, Ax2, b, N))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert live_delta(before) == {"symbolic": 0, "numeric": 0}


def test_unowned_handles_from_jit_can_be_freed_by_hand(system):
    Ai, Aj, Ax, sym = system
    before = live()
    f = jax.jit(lambda Ax: klujax.factor(Ai, Aj, Ax, sym))
    with quiet_unowned():
        num = f(Ax)
    assert live_delta(before)["numeric"] == L
    assert not num.owned
    raw = num.handle
    del num
    gc.collect()
    assert live_delta(before)["numeric"] == L  # not owned: GC does not free it
    # ... so free it by hand, through the raw handle or a rebuilt manager
    assert int(klujax.free_numeric(raw)) == L
    num = f(Ax)
    assert int(klujax.free_numeric(num)) == L
    assert num.closed
    assert live_delta(before)["numeric"] == 0


def test_close_waits_for_results_dispatched_with_the_handle():
    """JAX dispatches asynchronously: closing a manager right after a solve must not free
    the factorization under the still-running solve (close waits for its results)."""
    n = 3000
    Ai = np.concatenate([np.arange(n), np.arange(n - 1), np.arange(1, n)]).astype(np.int32)
    Aj = np.concatenate([np.arange(n), np.arange(1, n), np.arange(n - 1)]).astype(np.int32)
    Ax = np.concatenate([np.full(n, 4.0), np.full(n - 1, -1.0), np.full(n - 1, -1.0)])
    b = np.random.default_rng(0).standard_normal((64, n, 8))
    ref = klujax.solve(Ai, Aj, Ax, b)
    for _ in range(3):
        with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
            x = klujax.solve_with_numeric(num, b, sym)
            xt = klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym)
        np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(xt), np.asarray(ref), rtol=1e-9, atol=1e-12)  # A = A^T
