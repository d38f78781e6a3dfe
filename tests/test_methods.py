"""The solver backends (issue 11): KLU and UMFPACK behind the same primitives.

Every backend must give what the dense reference gives under the same transformation
(jit, vmap, grad/jvp in both modes, batching, split API, diagnostics), meet the accuracy
guarantee, and the automatic choice must be a function of the pattern alone. UMFPACK is
optional at build time: its tests skip where it is not built in, except when
KLUJAX_REQUIRE_UMFPACK=1 (CI's source builds set it), where its absence is a failure.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import BACKWARD_TOL, dense, make_system
from jax.test_util import check_grads
from matrices import backward_error, to_scipy, value_family

import klujax
from klujax import _klujax

HAVE_UMFPACK = "umfpack" in klujax.methods()
METHODS = ["klu", "umfpack", "auto"]
needs_umfpack = pytest.mark.skipif(not HAVE_UMFPACK, reason="klujax built without UMFPACK")


def _opts(method: str) -> klujax.KLUOptions:
    if method == "umfpack" and not HAVE_UMFPACK:
        pytest.skip("klujax built without UMFPACK")
    return klujax.KLUOptions(method=method)  # type: ignore[arg-type]


def fill_heavy(n: int = 300, per_row: int = 5, seed: int = 0, complex_: bool = False):
    """A random unsymmetric matrix with a nonzero diagonal: heavy fill under any ordering."""
    rng = np.random.default_rng(seed)
    Ai = np.concatenate([np.repeat(np.arange(n), per_row), np.arange(n)])
    Aj = np.concatenate([rng.integers(0, n, n * per_row), np.arange(n)])
    key = np.unique(Ai.astype(np.int64) * n + Aj)
    Ai, Aj = (key // n).astype(np.int32), (key % n).astype(np.int32)
    Ax = rng.standard_normal(len(Ai))
    if complex_:
        Ax = Ax + 1j * rng.standard_normal(len(Ai))
    Ax[Ai == Aj] += 4.0
    return Ai, Aj, Ax, n


def test_umfpack_is_built_where_required():
    if os.environ.get("KLUJAX_REQUIRE_UMFPACK") == "1":
        assert HAVE_UMFPACK, klujax.methods()
    assert klujax.methods()[0] == "klu"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_solve_matches_dense_single_batched_jit_vmap(method, dtype):
    o = _opts(method)
    Ai, Aj, Ax = make_system(12, n_lhs=5, dtype=dtype, seed=1)
    b = np.random.default_rng(2).standard_normal((5, 12)).astype(dtype)
    A = dense(Ai, Aj, Ax, 12)
    ref = np.linalg.solve(A, b[..., None])[..., 0]
    np.testing.assert_allclose(klujax.solve(Ai, Aj, Ax, b, options=o), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(klujax.solve(Ai, Aj, Ax[0], b[0], options=o), ref[0], rtol=1e-12, atol=1e-12)
    f = jax.jit(jax.vmap(lambda a, b: klujax.solve(Ai, Aj, a, b, options=o)))
    np.testing.assert_allclose(f(Ax, b), ref, rtol=1e-12, atol=1e-12)
    # transposed solves (the plain transpose, also for complex)
    with klujax.analyze(Ai, Aj, 12, options=o) as sym:
        xt = klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym, options=o)
    reft = np.linalg.solve(np.swapaxes(A, -1, -2), b[..., None])[..., 0]
    np.testing.assert_allclose(xt, reft, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["klu", "umfpack"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_gradients_both_modes_second_order(method, dtype):
    o = _opts(method)
    Ai, Aj, Ax = make_system(8, dtype=dtype, seed=3)
    b = np.random.default_rng(4).standard_normal(8).astype(dtype)

    def f(a, b):
        return klujax.solve(Ai, Aj, a, b, options=o)

    check_grads(f, (jnp.asarray(Ax), jnp.asarray(b)), order=2, modes=("fwd", "rev"),
                atol=1e-6, rtol=1e-6)

    # and the same gradient as the dense reference under jit(grad)
    def loss(a, solve):
        return jnp.sum(jnp.abs(solve(a)) ** 2)

    g = jax.jit(jax.grad(lambda a: loss(a, lambda a: f(a, b))))(jnp.asarray(Ax))
    gd = jax.grad(lambda a: loss(a, lambda a: jnp.linalg.solve(
        jnp.zeros((8, 8), a.dtype).at[Ai, Aj].add(a), b)))(jnp.asarray(Ax))
    np.testing.assert_allclose(g, gd, rtol=1e-10, atol=1e-12)


@needs_umfpack
@pytest.mark.parametrize("complex_", [False, True])
def test_fill_heavy_umfpack_equals_klu_and_dense(complex_):
    Ai, Aj, Ax, n = fill_heavy(complex_=complex_)
    b = np.random.default_rng(5).standard_normal(n)
    A = dense(Ai, Aj, Ax, n)
    ref = np.linalg.solve(A, b)
    for m in ("klu", "umfpack"):
        x = np.asarray(klujax.solve(Ai, Aj, Ax, b, options=_opts(m)))
        assert backward_error(to_scipy(Ai, Aj, Ax, n), x, b) <= BACKWARD_TOL
        np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12)


@needs_umfpack
@pytest.mark.parametrize("kind", ["random", "weak_diag", "pivot_trap", "mna_sweep",
                                  "power_flow", "badly_scaled"])
@pytest.mark.parametrize("complex_", [False, True])
def test_umfpack_meets_accuracy_target(kind, complex_):
    """The accuracy check runs above the seam: UMFPACK solutions meet 1e-14 too, batched,
    repeated (value-keyed reuse) and transposed."""
    Ai, Aj, Ax, n = value_family(kind, n=120, n_members=6, seed=3, complex_=complex_)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((6, n)) + (1j * rng.standard_normal((6, n)) if complex_ else 0)
    o = _opts("umfpack")
    for x in (klujax.solve(Ai, Aj, Ax, b, options=o), klujax.solve(Ai, Aj, Ax, b, options=o)):
        for m in range(6):
            A = to_scipy(Ai, Aj, Ax[m], n)
            assert backward_error(A, np.asarray(x[m]), b[m]) <= 1e-14
    with klujax.analyze(Ai, Aj, n, options=o) as sym:
        xt = klujax.tsolve_with_symbol(Ai, Aj, Ax, b, sym, options=o)
    for m in range(6):
        assert backward_error(to_scipy(Ai, Aj, Ax[m], n).T, np.asarray(xt[m]), b[m]) <= 1e-14


@pytest.mark.parametrize("method", ["klu", "umfpack"])
def test_split_api_with_each_method(method):
    o = _opts(method)
    Ai, Aj, Ax = make_system(10, n_lhs=3, dtype=np.complex128, seed=6)
    b = np.random.default_rng(7).standard_normal((3, 10)).astype(np.complex128)
    A = dense(Ai, Aj, Ax, 10)
    with klujax.analyze(Ai, Aj, 10, options=o) as sym, klujax.factor(Ai, Aj, Ax, sym, options=o) as num:
        np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym),
                                   np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12, atol=1e-12)
        klujax.refactor(Ai, Aj, 2 * Ax, num, sym, options=o)
        np.testing.assert_allclose(klujax.solve_with_numeric(num, b, sym),
                                   np.linalg.solve(2 * A, b[..., None])[..., 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(klujax.tsolve_with_numeric(num, b, sym),
                                   np.linalg.solve(2 * np.swapaxes(A, -1, -2), b[..., None])[..., 0],
                                   rtol=1e-12, atol=1e-12)
        cond = np.linalg.cond(2 * A, 1)
        est = np.asarray(klujax.condest(num))
        assert np.all(est <= cond * (1 + 1e-8)) and np.all(est >= cond / 10), (est, cond)


@pytest.mark.parametrize("method", ["klu", "umfpack"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_diagnostics_with_each_method(method, dtype):
    o = _opts(method)
    Ai, Aj, Ax = make_system(15, n_lhs=2, dtype=dtype, seed=8)
    A = dense(Ai, Aj, Ax, 15)
    sign, logabs = klujax.slogdet(Ai, Aj, Ax, 15, options=o)
    rs, rl = np.linalg.slogdet(A)
    np.testing.assert_allclose(logabs, rl, rtol=1e-12)
    np.testing.assert_allclose(sign, rs, rtol=1e-12, atol=1e-12)
    est = np.asarray(klujax.condest(Ai, Aj, Ax, 15, options=o))
    cond = np.linalg.cond(A, 1)
    assert np.all(est <= cond * (1 + 1e-8)) and np.all(est >= cond / 10), (est, cond)
    rc = np.asarray(klujax.rcond(Ai, Aj, Ax, 15, options=o))
    assert np.all((rc > 0) & (rc <= 1))
    # slogdet's gradient through the seam: A^-T on the pattern
    check_grads(lambda a: klujax.slogdet(Ai, Aj, a, 15, options=o)[1], (jnp.asarray(Ax[0]),),
                order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("method", ["klu", "umfpack"])
def test_singular_gives_nan_and_diagnostics_say_so(method):
    o = _opts(method)
    Ai = np.array([0, 1, 1, 2], np.int32)
    Aj = np.array([0, 0, 1, 1], np.int32)  # column 2 empty: structurally singular
    Ax = np.array([1.0, 2.0, 3.0, 4.0])
    x = klujax.solve(Ai, Aj, Ax, np.ones(3), options=o)
    assert np.all(np.isnan(x))
    Ai2, Aj2 = np.array([0, 0, 1, 1], np.int32), np.array([0, 1, 0, 1], np.int32)
    Ax2 = np.array([1.0, 2.0, 2.0, 4.0])  # numerically singular
    x2 = jax.jit(lambda a: klujax.solve(Ai2, Aj2, a, np.ones(2), options=o))(Ax2)
    assert np.all(np.isnan(x2))
    assert float(klujax.rcond(Ai2, Aj2, Ax2, 2, options=o)) == 0.0
    assert np.isinf(float(klujax.condest(Ai2, Aj2, Ax2, 2, options=o)))


@pytest.mark.parametrize("method", ["klu", "umfpack"])
def test_value_keyed_reuse_equals_fresh(method):
    o = _opts(method)
    Ai, Aj, Ax, n = fill_heavy(n=150, seed=2)
    b1, b2 = np.ones(n), np.arange(n, dtype=float)
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=o))
    f(Ax, b1).block_until_ready()
    before = klujax.cache_info()["numeric_hits"]
    x = f(Ax, b2)
    assert klujax.cache_info()["numeric_hits"] == before + 1
    klujax.clear_cache()
    np.testing.assert_array_equal(x, f(Ax, b2))  # bit-identical to a fresh factorization


@needs_umfpack
def test_auto_choice_depends_on_the_pattern_only():
    auto = klujax.KLUOptions().as_attribute()
    Ai, Aj, Ax, n = fill_heavy(n=600, per_row=5)
    heavy = _klujax.analysis_info(Ai, Aj, n, auto)
    assert heavy["method"] == "umfpack", heavy
    Ai2, Aj2, _, n2 = value_family("mna_sweep", n=600, n_members=1, seed=0)
    light = _klujax.analysis_info(Ai2, Aj2, n2, auto)
    assert light["method"] == "klu", light
    # whichever backend auto picks, the answer is the dense one
    b = np.ones(n)
    np.testing.assert_allclose(klujax.solve(Ai, Aj, Ax, b), np.linalg.solve(dense(Ai, Aj, Ax, n), b),
                               rtol=1e-9)


@needs_umfpack
@pytest.mark.parametrize("complex_", [False, True])
def test_umfpack_plan_follows_the_pattern(complex_):
    """UMFPACK's strategy and ordering are chosen from the pattern (docs/solvers.md): the
    symmetric strategy (and, for a heavy factorization, nested dissection when it saves
    flops) on symmetric patterns with a full diagonal, the unsymmetric one elsewhere. Each
    plan solves as the dense reference does, and the symmetric plan's factors are accurate
    enough that no refinement step is needed on these matrices (the unsymmetric plan's
    loose first factorization may need one: docs/solvers.md)."""
    attr = klujax.KLUOptions(method="umfpack").as_attribute()
    Ai, Aj, Ax3, n3 = stencil3d(m=10, members=2)
    Ai2, Aj2, Ax2, n2 = fill_heavy(n=300, complex_=complex_)
    # a symmetric pattern with one structurally missing diagonal entry
    keep = ~((Ai == Aj) & (Ai == 7))
    Ai4, Aj4, Ax4 = Ai[keep], Aj[keep], Ax3[0][keep]
    cases = [
        (Ai, Aj, Ax3, n3, "symmetric, "),
        (Ai2, Aj2, Ax2, n2, "unsymmetric, colamd"),
        (Ai4, Aj4, Ax4, n3, "unsymmetric, colamd"),
    ]
    # 1.7e7 flops under AMD: nested dissection is tried, and wins on a 3-D stencil
    assert _klujax.analysis_info(Ai, Aj, n3, attr)["plan"] == "symmetric, nested dissection"
    rng = np.random.default_rng(2)
    for ai, aj, ax, n, plan in cases:
        assert _klujax.analysis_info(ai, aj, n, attr)["plan"].startswith(plan)
        ax = np.asarray(ax) * (1 + 0.5j if complex_ else 1.0)
        axs = np.atleast_2d(ax)
        b = rng.standard_normal((axs.shape[0], n))
        before = klujax.cache_info()
        x = np.asarray(klujax.solve(ai, aj, axs, b, options=_opts("umfpack")))
        with klujax.analyze(ai, aj, n, options=_opts("umfpack")) as sym:
            xt = np.asarray(klujax.tsolve_with_symbol(ai, aj, axs, b, sym, options=_opts("umfpack")))
        after = klujax.cache_info()
        assert after["tightenings"] == before["tightenings"]  # the target met on loose factors
        if plan.startswith("symmetric"):  # accurate factors: no refining
            assert after["refine_steps"] == before["refine_steps"]
        for m in range(axs.shape[0]):
            A = dense(ai, aj, axs[m], n)
            np.testing.assert_allclose(x[m], np.linalg.solve(A, b[m]), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(xt[m], np.linalg.solve(A.T, b[m]), rtol=1e-10, atol=1e-12)
            assert backward_error(to_scipy(ai, aj, axs[m], n), x[m], b[m]) <= 1e-14


def test_options_attribute_round_trip_and_old_form():
    for m in ("auto", "klu", "umfpack"):
        o = klujax.KLUOptions(method=m, tol=0.5)  # type: ignore[arg-type]
        assert klujax.KLUOptions.from_attribute(o.as_attribute()) == o
    # klujax 0.6.0's 7-field attribute (exported computations) means KLU
    old = klujax.KLUOptions().as_attribute()[:7]
    assert klujax.KLUOptions.from_attribute(old).method == "klu"
    with pytest.raises(ValueError, match="method"):
        klujax.KLUOptions(method="superlu")  # type: ignore[arg-type]


def test_blas_library_is_reported():
    if HAVE_UMFPACK:
        # UMFPACK links a BLAS: the process has one loaded
        assert klujax.blas_library() != ""
    assert isinstance(klujax.blas_library(), str)


def stencil3d(m: int = 10, members: int = 16, seed: int = 0):
    """A 27-point 3-D stencil (m**3 unknowns), unsymmetric and diagonally dominant: large
    frontal matrices, so UMFPACK's factorizations and solves run in the BLAS (dgemm)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(m**3).reshape(m, m, m)
    rows, cols = [], []
    for off in np.ndindex(3, 3, 3):
        d = np.asarray(off) - 1
        src = tuple(slice(max(0, -k), m - max(0, k)) for k in d)
        dst = tuple(slice(max(0, k), m - max(0, -k)) for k in d)
        rows.append(idx[src].ravel())
        cols.append(idx[dst].ravel())
    Ai, Aj = np.concatenate(rows).astype(np.int32), np.concatenate(cols).astype(np.int32)
    Ax = -rng.uniform(0.5, 1.5, (members, len(Ai)))
    Ax[:, Ai == Aj] = 30.0
    return Ai, Aj, Ax, m**3


_CONCURRENT_CHECK = """
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import klujax
import scipy.sparse as sp
from test_methods import stencil3d
Ai, Aj, Ax0, n = stencil3d(m=14, members=24)
b = np.random.default_rng(1).standard_normal((Ax0.shape[0], n))
f = jax.jit(lambda a, b: klujax.solve(
    Ai, Aj, a, b, options=klujax.KLUOptions(method="umfpack", check=False)))
worst = 0.0
for k in range(3):  # new values each time: 72 factorizations, two or more at once
    Ax = Ax0 * (1 + 0.1 * k)
    x = np.asarray(f(Ax, b))
    for m in range(Ax.shape[0]):
        A = sp.csr_matrix((Ax[m], (Ai, Aj)), shape=(n, n))
        r = np.abs(b[m] - A @ x[m]).max()
        worst = max(worst, r / (abs(A).sum(1).max() * np.abs(x[m]).max() + np.abs(b[m]).max()))
print(klujax.blas_library(), worst)
assert worst <= 1e-13, worst
"""


@needs_umfpack
@pytest.mark.parametrize("blas", ["default", "openblas-serial"])
def test_batched_umfpack_on_parallel_workers_is_right(blas, tmp_path):
    """Batch members factor on several threads at once. A sequential OpenBLAS shares
    unlocked buffers between callers (wrong numbers: residuals up to 5 were measured),
    so klujax runs UMFPACK one call at a time there; every other BLAS runs in parallel.
    Each run is its own process: the BLAS is chosen when the library loads."""
    import subprocess
    import sys

    env = dict(os.environ, KLUJAX_NUM_THREADS="4")
    if blas != "default":
        libdir = "/usr/lib/x86_64-linux-gnu/openblas-serial"
        if not os.path.exists(os.path.join(libdir, "libblas.so.3")):
            pytest.skip(f"no {libdir} (Debian's libopenblas0-serial) on this machine")
        env["LD_LIBRARY_PATH"] = libdir
    script = tmp_path / "check.py"
    script.write_text(_CONCURRENT_CHECK)
    out = subprocess.run([sys.executable, str(script), os.path.dirname(__file__)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    if blas != "default":
        assert "openblas-serial" in out.stdout, out.stdout


@needs_umfpack
@pytest.mark.parametrize("complex_", [False, True])
def test_umfpack_repeated_solves_on_plain_factors(complex_):
    """After 8 solved columns with one factorization, UMFPACK's factors are copied into
    klujax's own arrays, with a dense trailing block where the factors end in one
    (src/solver_umfpack.cpp, PlainLU). Every solve before and after the switch, plain and
    transposed, with one and with several right-hand sides, equals the dense reference
    and meets the backward-error target without refinement (refine=0: a loose first
    factorization that misses it is replaced by a strict one, whose answers must meet
    it); so does a matrix whose factors have no dense tail (a tridiagonal matrix)."""
    o = _opts("umfpack")
    o_solve = klujax.KLUOptions(method="umfpack", refine=0)
    rng = np.random.default_rng(11)
    m = 200
    tri_i = np.concatenate([np.arange(m), np.arange(1, m), np.arange(m - 1)]).astype(np.int32)
    tri_j = np.concatenate([np.arange(m), np.arange(m - 1), np.arange(1, m)]).astype(np.int32)
    tri_x = rng.standard_normal(len(tri_i)) * (1 + 0.3j if complex_ else 1.0)
    tri_x[:m] += 4.0
    for Ai, Aj, Ax, n in (fill_heavy(n=400, complex_=complex_), (tri_i, tri_j, tri_x, m)):
        Ax = np.asarray(Ax)
        A = dense(Ai, Aj, Ax, n)
        before = klujax.cache_info()
        with klujax.analyze(Ai, Aj, n, options=o) as sym, klujax.factor(Ai, Aj, Ax, sym, options=o) as num:
            for call in range(8):
                shape = (n, 3) if call % 3 == 2 else (n,)
                b = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if complex_ else 0)
                x = np.asarray(klujax.solve_with_numeric(num, b, sym, options=o_solve))
                xt = np.asarray(klujax.tsolve_with_numeric(num, b, sym, options=o_solve))
                np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(xt, np.linalg.solve(A.T, b), rtol=1e-10, atol=1e-12)
                for c in range(b.size // n):
                    col = (slice(None), c) if b.ndim == 2 else slice(None)
                    assert backward_error(to_scipy(Ai, Aj, Ax, n), x[col], b[col]) <= 1e-14
                    assert backward_error(to_scipy(Ai, Aj, Ax, n).T, xt[col], b[col]) <= 1e-14
        after = klujax.cache_info()
        # one copy per factorization solved 8 columns (a second after a tightening)
        tightened = after["tightenings"] - before["tightenings"]
        assert tightened in (0, 1)
        assert after["plain_factors"] - before["plain_factors"] in (1, 1 + tightened)


@needs_umfpack
@pytest.mark.parametrize("complex_", [False, True])
def test_umfpack_loose_factors_tightened_when_they_miss(complex_):
    """UMFPACK factors with loose pivoting first (docs/solvers.md). An answer that misses
    the backward-error target after refinement (target=0: every answer does) is made
    again from a strict factorization of the same values: one tightening per member, and
    the answers equal the dense reference. KLU has no looser mode: it never tightens."""
    Ai, Aj, Ax0, n = fill_heavy(n=200, seed=3, complex_=complex_)
    rng = np.random.default_rng(4)
    Ax = np.stack([Ax0 * (1.0 + 0.1 * k) for k in range(3)])
    b = rng.standard_normal((3, n))
    for method, tightenings in (("umfpack", 3), ("klu", 0)):
        o = klujax.KLUOptions(method=method, target=0.0)  # type: ignore[arg-type]
        before = klujax.cache_info()
        x = np.asarray(jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=o))(Ax, b))
        after = klujax.cache_info()
        assert after["tightenings"] - before["tightenings"] == tightenings, method
        if method == "umfpack":  # (no pivot-order reuse to fall back from)
            assert after["refactor_fallbacks"] == before["refactor_fallbacks"]
        for m in range(3):
            A = dense(Ai, Aj, Ax[m], n)
            np.testing.assert_allclose(x[m], np.linalg.solve(A, b[m]), rtol=1e-10, atol=1e-12)
    o = _opts("umfpack")
    # a non-finite right-hand side: no factorization helps, none is made
    before = klujax.cache_info()["tightenings"]
    bad = b[0].copy()
    bad[5] = np.nan
    assert np.isnan(np.asarray(klujax.solve(Ai, Aj, Ax0 * 1.7, bad, options=o))).any()
    assert klujax.cache_info()["tightenings"] == before
    # singular under loose pivoting: strict pivoting is tried before answering NaN
    sing = Ax0.copy()
    sing[Ai == 0] = 0.0  # an empty row
    assert np.isnan(np.asarray(klujax.solve(Ai, Aj, sing, b[0], options=o))).all()
    assert klujax.cache_info()["tightenings"] == before + 1


@needs_umfpack
@pytest.mark.parametrize("complex_", [False, True])
def test_umfpack_kept_factors_tightened_after_refinements(complex_):
    """A kept loose factorization that has needed refinement in 16 calls is factored again
    with strict pivoting for the calls to come (driver.hpp, kTightenAfter): the tightening
    happens in exactly the call that is the 16th to refine, never again for these values
    (value-keyed reuse serves every later call from the strict factors), and every answer
    equals the dense reference and meets the target. One call with many right-hand sides
    counts once."""
    o = _opts("umfpack")
    Ai, Aj, Ax, n = fill_heavy(n=400, seed=0, complex_=complex_)
    A, As = dense(Ai, Aj, Ax, n), to_scipy(Ai, Aj, Ax, n)
    rng = np.random.default_rng(6)
    solve = jax.jit(lambda b: klujax.solve(Ai, Aj, Ax, b, options=o))
    klujax.clear_cache()
    refining, tightened_at = 0, []
    for call in range(150):
        if tightened_at and call > tightened_at[0][0] + 5:
            break
        b = rng.standard_normal((n, 64 if call == 0 else 4))
        before = klujax.cache_info()
        x = np.asarray(solve(b))
        after = klujax.cache_info()
        refining += after["refine_steps"] > before["refine_steps"]
        if after["tightenings"] > before["tightenings"]:
            tightened_at.append((call, refining))
        assert after["numeric_hits"] - before["numeric_hits"] == (0 if call == 0 else 1)
        np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-10, atol=1e-12)
        for c in range(b.shape[1]):
            assert backward_error(As, x[:, c], b[:, c]) <= 1e-14
    assert len(tightened_at) == 1 and tightened_at[0][1] == 16, tightened_at


@needs_umfpack
@pytest.mark.parametrize("kind", ["pivot_trap", "badly_scaled", "power_flow", "weak_diag"])
def test_plain_factors_as_accurate_as_fresh_on_hard_matrices(kind):
    """Repeated solves on the copied factors (after 8 columns) of badly pivoted, badly
    scaled and ill-conditioned matrices: every answer meets the backward-error target
    that a fresh factorization's first solve meets, plain and transposed."""
    Ai, Aj, Ax, n = value_family(kind, n=120, n_members=1, seed=4)
    Ax = np.asarray(Ax)[0]
    A = to_scipy(Ai, Aj, Ax, n)
    o = _opts("umfpack")
    rng = np.random.default_rng(5)
    before = klujax.cache_info()["plain_factors"]
    with klujax.analyze(Ai, Aj, n, options=o) as sym, klujax.factor(Ai, Aj, Ax, sym, options=o) as num:
        for call in range(12):
            b = rng.standard_normal((n, 2)) * np.logspace(0, 3, n)[:, None]
            x = np.asarray(klujax.solve_with_numeric(num, b, sym))
            xt = np.asarray(klujax.tsolve_with_numeric(num, b, sym))
            for c in range(2):
                assert backward_error(A, x[:, c], b[:, c]) <= 1e-14, (kind, call)
                assert backward_error(A.T, xt[:, c], b[:, c]) <= 1e-14, (kind, call)
    assert klujax.cache_info()["plain_factors"] == before + 1


@needs_umfpack
def test_plain_factors_values_and_gradients_under_jit_and_vmap():
    """Three solves with one matrix (value-keyed reuse; the third runs on the copied
    factors) and their reverse mode (transposed solves with the same factors) equal the
    dense reference, values and gradients, under jit and under vmap over b."""
    Ai, Aj, Ax, n = fill_heavy(n=200, seed=7)
    Ax = jnp.asarray(Ax)
    o = _opts("umfpack")
    rng = np.random.default_rng(8)
    b = jnp.asarray(rng.standard_normal((n, 4)))
    w = jnp.asarray(rng.standard_normal((n, 4)))

    def chain(solve, a, b):
        x = b
        for _ in range(3):
            x = solve(a, x)
        return jnp.sum(w * x)

    sparse = lambda a, x: klujax.solve(Ai, Aj, a, x, options=o)  # noqa: E731
    dense_ = lambda a, x: jnp.linalg.solve(jnp.zeros((n, n)).at[Ai, Aj].add(a), x)  # noqa: E731
    before = klujax.cache_info()["plain_factors"]
    got = jax.jit(jax.value_and_grad(lambda a, b: chain(sparse, a, b), argnums=(0, 1)))(Ax, b)
    want = jax.value_and_grad(lambda a, b: chain(dense_, a, b), argnums=(0, 1))(Ax, b)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-9)
    for g, r in zip(got[1], want[1]):
        np.testing.assert_allclose(g, r, rtol=1e-8, atol=1e-10 * float(jnp.abs(r).max()))
    assert klujax.cache_info()["plain_factors"] > before
    # vmap over a batch of right-hand sides: one matrix, all of them
    bs = jnp.asarray(rng.standard_normal((3, n, 4)))
    vg = jax.jit(jax.vmap(jax.grad(lambda a, b: chain(sparse, a, b), argnums=1), in_axes=(None, 0)))(Ax, bs)
    vr = jax.vmap(jax.grad(lambda a, b: chain(dense_, a, b), argnums=1), in_axes=(None, 0))(Ax, bs)
    np.testing.assert_allclose(vg, vr, rtol=1e-8, atol=1e-10 * float(jnp.abs(vr).max()))
