"""Checks of the accuracy test matrices (tests/matrices.py) and their error metrics.

NumPy/SciPy only (no klujax): the matrices are what they claim to be (nonsingular,
deterministic, conditioned as documented) and the metrics compute what they claim.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import matrices as M


@pytest.fixture(scope="module", params=[False, True], ids=["f64", "c128"])
def mset(request: pytest.FixtureRequest) -> list[M.Named]:
    return M.matrix_set(complex_=request.param)


def _named(mset: list[M.Named], prefix: str) -> list[M.Named]:
    out = [m for m in mset if m[0].startswith(prefix)]
    assert out, prefix
    return out


def test_matrix_set_well_formed_and_nonsingular(mset: list[M.Named]) -> None:
    families = {name.rsplit("-", 2)[0] for name, *_ in mset}
    assert families == {"mna_ladder", "power_flow_jacobian", "random_unsymmetric_weak_diag",
                        "near_singular", "badly_scaled_rows", "grid2d"}
    for name, Ai, Aj, Ax, n in mset:
        assert Ai.dtype == np.int32 and Aj.dtype == np.int32, name
        assert Ax.dtype == (np.complex128 if name.endswith("c128") else np.float64), name
        assert Ai.shape == Aj.shape == Ax.shape and Ai.ndim == 1, name
        assert 0 <= Ai.min() and Ai.max() < n and 0 <= Aj.min() and Aj.max() < n, name
        key = Aj.astype(np.int64) * n + Ai
        assert np.all(np.diff(key) > 0), f"{name}: entries not unique / column-major"
        assert 50 <= n <= 300, name
        scaled = M.scaled_cond_inf(M.to_dense(Ai, Aj, Ax, n))
        assert scaled < 1e13, f"{name} numerically singular: row-scaled cond_inf {scaled:.1e}"
        # a sparse direct solver gets a small backward error: the metric sees it
        A = M.to_scipy(Ai, Aj, Ax, n)
        b = np.ones(n, Ax.dtype)
        assert M.backward_error(A, spla.splu(A).solve(b), b) < 1e-14, name


def test_condition_ranges(mset: list[M.Named]) -> None:
    for name, Ai, Aj, Ax, n in _named(mset, "random_unsymmetric_weak_diag"):
        assert 2e3 <= M.cond_inf(M.to_dense(Ai, Aj, Ax, n)) <= 3e4, name
    for name, Ai, Aj, Ax, n in _named(mset, "near_singular"):
        assert 1e10 <= M.cond_inf(M.to_dense(Ai, Aj, Ax, n)) <= 1e12, name
    for name, Ai, Aj, Ax, n in _named(mset, "badly_scaled_rows"):
        A = M.to_dense(Ai, Aj, Ax, n)
        rows = np.abs(A).max(axis=1)
        assert rows.max() / rows.min() > 1e15, name
        assert M.cond_inf(A) > 1e14 and M.scaled_cond_inf(A) < 1e4, name


def test_structure_of_the_circuit_families(mset: list[M.Named]) -> None:
    for name, Ai, Aj, Ax, n in _named(mset, "mna_ladder"):
        A = M.to_dense(Ai, Aj, Ax, n)
        stored_zero_diag = (Ai == Aj) & (Ax == 0)
        assert stored_zero_diag.sum() == 2, name  # one per voltage source
        src = Ai[stored_zero_diag]
        assert set(np.unique(A[src])) <= {-1.0, 0.0, 1.0}, name  # +-1 couplings only
        g = np.abs(Ax[(Ai != Aj) & (Ai < n - 2) & (Aj < n - 2)])
        assert g.max() / g.min() > 1e4, f"{name}: conductances span too few decades"
    for name, Ai, Aj, Ax, n in _named(mset, "power_flow_jacobian"):
        A = M.to_dense(Ai, Aj, Ax, n)
        S = np.zeros((n, n), bool)
        S[Ai, Aj] = True
        assert np.array_equal(S, S.T), f"{name}: not structurally symmetric"
        assert np.abs(A - A.T).max() > 1e-3 * np.abs(A).max(), f"{name}: symmetric"


def test_generators_are_deterministic() -> None:
    gens = [M.mna_ladder, M.power_flow_jacobian, M.random_unsymmetric_weak_diag,
            M.near_singular, M.badly_scaled_rows, M.grid2d]
    for gen in gens:
        a, b, c = gen(64, seed=3), gen(64, seed=3), gen(64, seed=4)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert a[3] == c[3]
        assert a[0].shape != c[0].shape or not np.array_equal(a[2], c[2]), gen.__name__
    # a Generator works as the seed too
    x = M.random_unsymmetric_weak_diag(60, np.random.default_rng(7), target_cond=None)
    y = M.random_unsymmetric_weak_diag(60, np.random.default_rng(7), target_cond=None)
    np.testing.assert_array_equal(x[2], y[2])


@pytest.mark.parametrize("kind", M.FAMILY_KINDS)
def test_value_family(kind: str) -> None:
    Ai, Aj, Ax, n = M.value_family(kind, 60, 3, seed=1)
    assert Ai.dtype == Aj.dtype == np.int32 and Ax.dtype == np.float64
    assert Ax.shape == (3, Ai.shape[0])
    assert not np.array_equal(Ax[0], Ax[-1]), "members must differ"
    for A in M.to_dense(Ai, Aj, Ax, n):
        assert M.scaled_cond_inf(A) < 1e13, kind
    Ai2, Aj2, Ax2, _ = M.value_family(kind, 60, 3, seed=1)
    np.testing.assert_array_equal(Ax, Ax2)


def test_value_family_random_and_trap_conditioning() -> None:
    for kind in ("random", "pivot_trap"):
        Ai, Aj, Ax, n = M.value_family(kind, 200, 3, seed=0)
        conds = [M.cond_inf(A) for A in M.to_dense(Ai, Aj, Ax, n)]
        later = conds[1:] if kind == "pivot_trap" else conds
        assert all(1e3 <= c <= 3e4 for c in later), (kind, conds)
    Ai, Aj, Ax, n = M.value_family("random", 60, 2, seed=0, complex_=True)
    assert Ax.dtype == np.complex128


def test_residual_is_exact() -> None:
    rng = np.random.default_rng(0)
    n = 12
    A = rng.standard_normal((n, n)) * 10.0 ** rng.integers(-8, 8, (n, n))
    x = rng.standard_normal((n, 2))
    b = rng.standard_normal((n, 2))
    r = M.residual(A, x, b)
    for i in range(n):
        for k in range(2):
            exact = Fraction(b[i, k]) - sum(Fraction(A[i, j]) * Fraction(x[j, k])
                                            for j in range(n))
            assert r[i, k] == float(exact)
    Ac = A + 1j * rng.standard_normal((n, n))
    xc = x[:, 0] + 1j * x[:, 1]
    np.testing.assert_allclose(M.residual(Ac, xc, b[:, 0]), b[:, 0] - Ac @ xc, rtol=0,
                               atol=1e-12 * np.abs(Ac).sum(axis=1).max())


def test_metrics() -> None:
    Ai, Aj, Ax, n = M.grid2d(64, seed=0)
    A = M.to_dense(Ai, Aj, Ax, n)
    b = np.arange(1.0, n + 1.0)
    x = M.reference_solve(A, b)
    assert M.backward_error(A, x, b) < 1e-16
    assert M.backward_error(M.to_scipy(Ai, Aj, Ax, n), x, b) == pytest.approx(
        M.backward_error(A, x, b), rel=1e-12)
    y = x * (1 + 1e-6)
    naive = np.abs(b - A @ y).max() / (np.abs(A).sum(axis=1).max() * np.abs(y).max()
                                       + np.abs(b).max())
    assert M.backward_error(A, y, b) == pytest.approx(naive, rel=1e-6)
    assert M.forward_error(y, x) == pytest.approx(1e-6, rel=1e-6)
    assert M.forward_error(x, x) == 0.0
    assert M.backward_error(A, np.full(n, np.nan), b) == math.inf
    # several right-hand sides: the worst column counts
    X = np.stack([x, y], axis=1)
    B = np.stack([b, b], axis=1)
    assert M.backward_error(A, X, B) == M.backward_error(A, y, b)
    assert M.forward_error(X, np.stack([x, x], axis=1)) == M.forward_error(y, x)
    assert M.cond_inf(A) == pytest.approx(np.linalg.norm(A, np.inf)
                                          * np.linalg.norm(np.linalg.inv(A), np.inf))
    assert M.cond_inf(np.zeros((3, 3))) == math.inf


def test_conversions_sum_duplicates() -> None:
    Ai = np.array([0, 1, 1, 0], np.int32)
    Aj = np.array([0, 1, 1, 1], np.int32)
    Ax = np.array([1.0, 2.0, 3.0, 4.0])
    expected = np.array([[1.0, 4.0], [0.0, 5.0]])
    np.testing.assert_array_equal(M.to_dense(Ai, Aj, Ax, 2), expected)
    np.testing.assert_array_equal(M.to_scipy(Ai, Aj, Ax, 2).toarray(), expected)
    batch = M.to_dense(Ai, Aj, np.stack([Ax, 2 * Ax]), 2)
    np.testing.assert_array_equal(batch, np.stack([expected, 2 * expected]))
