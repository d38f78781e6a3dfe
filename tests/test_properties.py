"""Property-based tests (hypothesis) of klujax.solve against dense references.

Random sparse systems: n in 1..60, patterns from diagonal-only to dense (with or without
a transversal, i.e. possibly structurally singular), duplicates on/off, every documented
(Ax, b) rank combination with n_lhs broadcasting, float32/float64/complex64/complex128
inputs, int32/int64 (NumPy or jax) indices, jit on/off, random vmap in_axes/out_axes, and
grad/jvp of a scalar loss vs a dense jax.numpy reference built with ``.at[].add``.

Results are checked with a residual (backward error) bound and a forward error bound
scaled by ``np.linalg.cond``; structurally singular systems must give NaN; shapes that do
not broadcast must raise the documented ValueError.

Profiles (``KLUJAX_HYPOTHESIS_PROFILE``): ``ci`` (default, 25 examples per test, the
whole module in well under a minute) and ``long`` (1000 examples per test).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    BACKWARD_TOL,
    FLOAT_DTYPES,
    backward_error,
    canon_b,
    check_solution,
    dense_jnp,
    make_dominant,
    members,
    out_shape,
    pattern,
    result_dtype,
    uniform_values,
)
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import klujax
import klujax._compat

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# CI: no shrinking, so a failing run stays as fast as a passing one (the failing example
# is still printed in full and saved for replay); "long" shrinks.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target))
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)
# Applied per test (not with settings.load_profile) so other modules are not affected.
PROFILE = settings.get_profile(os.environ.get("KLUJAX_HYPOTHESIS_PROFILE", "ci"))

MAX_N = 60


# ----------------------------------------------------------------------------- strategies


@dataclass
class System:
    n: int
    Ai: Any
    Aj: Any
    Ax: np.ndarray
    b: np.ndarray
    kind: str
    well_conditioned: bool

    def describe(self) -> str:
        return (f"n={self.n} kind={self.kind} nnz={len(self.Ai)} Ai:{np.asarray(self.Ai).dtype} "
                f"Ax:{self.Ax.dtype}{self.Ax.shape} b:{self.b.dtype}{self.b.shape}")


@st.composite
def systems(draw, *, max_n: int = MAX_N, allow_singular: bool = True,
            dtypes=FLOAT_DTYPES) -> System:
    n = draw(st.integers(1, max_n), label="n")
    kinds = ["diagonal", "sparse", "dense"] + (["no_transversal"] if allow_singular else [])
    kind = draw(st.sampled_from(kinds), label="kind")
    if kind == "diagonal":
        density = 0.0
    elif kind == "dense":
        density = 1.0
    else:
        density = draw(st.floats(0.0, 1.0), label="density")
    duplicates = draw(st.sampled_from([0, 0, 1, 5]), label="duplicates")
    idx_dtype = draw(st.sampled_from([np.int32, np.int64]), label="idx_dtype")
    ax_dtype = draw(st.sampled_from(dtypes), label="ax_dtype")
    b_dtype = draw(st.sampled_from(dtypes), label="b_dtype")
    dominant = kind != "no_transversal" and (
        not allow_singular or draw(st.booleans(), label="dominant"))
    ax_ndim = draw(st.sampled_from([1, 2]), label="ax_ndim")
    b_ndim = draw(st.sampled_from([1, 2, 3]), label="b_ndim")
    L = draw(st.integers(1, 3), label="n_lhs")
    la = draw(st.sampled_from([1, L]), label="la") if ax_ndim == 2 else 1
    lb = draw(st.sampled_from([1, L]), label="lb")
    r = draw(st.integers(1, 3), label="n_rhs")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")

    rng = np.random.default_rng(seed)
    Ai, Aj, diag = pattern(n, rng, density=density, transversal=kind != "no_transversal",
                           duplicates=duplicates)
    Ax = uniform_values(rng, (la, len(Ai)) if ax_ndim == 2 else (len(Ai),), np.complex128)
    if dominant:
        Ax = make_dominant(Ax, Ai, diag, n)
    if not np.issubdtype(np.dtype(ax_dtype), np.complexfloating):
        Ax = Ax.real
    Ax = Ax.astype(ax_dtype)
    if b_ndim == 1:
        b_shape: tuple[int, ...] = (n,)
    elif b_ndim == 2:
        b_shape = (n, r) if ax_ndim == 1 else (lb, n)
    else:
        b_shape = (lb, n, r)
    b = uniform_values(rng, b_shape, b_dtype)
    return System(n, Ai.astype(idx_dtype), Aj.astype(idx_dtype), Ax, b, kind, dominant)


def _maybe_jit(fn, use_jit: bool):
    return jax.jit(fn) if use_jit else fn


def _index_container(Ai, Aj, kind: str):
    if kind == "jax":
        return jnp.asarray(Ai), jnp.asarray(Aj)
    if kind == "list":
        return Ai.tolist(), Aj.tolist()
    return Ai, Aj


# ----------------------------------------------------------------------------- solve


@PROFILE
@given(sys_=systems(), use_jit=st.booleans(), idx_kind=st.sampled_from(["numpy", "jax"]))
def test_solve_matches_dense(sys_: System, use_jit: bool, idx_kind: str):
    Ai, Aj = _index_container(sys_.Ai, sys_.Aj, idx_kind)
    x = _maybe_jit(klujax.solve, use_jit)(Ai, Aj, sys_.Ax, sys_.b)
    assert x.dtype == result_dtype(sys_.Ax.dtype, sys_.b.dtype), sys_.describe()
    check_solution(x, sys_.Ai, sys_.Aj, sys_.Ax, sys_.b, sys_.n, what=sys_.describe())


@PROFILE
@given(sys_=systems(max_n=20), use_jit=st.booleans())
def test_solve_then_dot_round_trip(sys_: System, use_jit: bool):
    """dot(A, solve(A, b)) == b for nonsingular members; dot matches the dense product."""
    x = _maybe_jit(klujax.solve, use_jit)(sys_.Ai, sys_.Aj, sys_.Ax, sys_.b)
    y = np.asarray(_maybe_jit(klujax.dot, use_jit)(sys_.Ai, sys_.Aj, sys_.Ax, x))
    assert y.shape == x.shape
    x3 = canon_b(np.asarray(x), sys_.Ax.ndim)
    y3 = canon_b(y, sys_.Ax.ndim)
    for m, (A, bm) in enumerate(members(sys_.Ai, sys_.Aj, sys_.Ax, sys_.b, sys_.n)):
        if np.isnan(x3[m]).any():
            continue
        xm = x3[m].astype(np.complex128)
        scale = np.abs(A).sum(axis=1).max() * np.abs(xm).max(initial=0.0)
        # dot itself is exact up to rounding: compare with the dense product
        np.testing.assert_allclose(y3[m], A @ xm, rtol=0, atol=1e-13 * max(scale, 1e-300))
        if np.linalg.cond(A) < 1e10:  # and A x reproduces b: the residual is small
            assert backward_error(A, xm, bm) <= BACKWARD_TOL, sys_.describe()


@PROFILE
@given(n=st.integers(1, 8), la=st.integers(2, 4), lb=st.integers(2, 4),
       b_ndim=st.sampled_from([2, 3]), use_jit=st.booleans())
def test_non_broadcasting_batches_raise(n, la, lb, b_ndim, use_jit):
    assume(la != lb)
    rng = np.random.default_rng(0)
    Ai, Aj, diag = pattern(n, rng, density=0.3)
    Ax = make_dominant(uniform_values(rng, (la, len(Ai)), np.float64), Ai, diag, n)
    b = uniform_values(rng, (lb, n) if b_ndim == 2 else (lb, n, 2), np.float64)
    with pytest.raises(ValueError, match="n_lhs"):
        _maybe_jit(klujax.solve, use_jit)(Ai, Aj, Ax, b)


# ----------------------------------------------------------------------------- vmap


@st.composite
def vmap_cases(draw):
    sys_ = draw(systems(max_n=25))
    V = draw(st.integers(1, 3), label="V")
    batched = draw(st.sets(st.sampled_from(["idx", "Ax", "b"]), min_size=1), label="batched")
    ax_axis = draw(st.integers(0, sys_.Ax.ndim), label="ax_axis")
    b_axis = draw(st.integers(0, sys_.b.ndim), label="b_axis")
    out_axis = draw(st.integers(0, len(out_shape(sys_.Ax.shape, sys_.b.shape))), label="out")
    use_jit = draw(st.booleans(), label="jit")
    seed = draw(st.integers(0, 2**32 - 1), label="vseed")
    return sys_, V, batched, ax_axis, b_axis, out_axis, use_jit, seed


@PROFILE
@given(case=vmap_cases())
def test_vmap_random_in_axes(case):
    sys_, V, batched, ax_axis, b_axis, out_axis, use_jit, seed = case
    rng = np.random.default_rng(seed)
    nnz = len(sys_.Ai)
    # Member v: its own entry order (a different pattern key) when the indices are
    # batched; its own values / right-hand sides when those are batched. Batched indices
    # with a shared Ax put the same values at permuted positions: a different matrix.
    perms = [rng.permutation(nnz) if "idx" in batched else np.arange(nnz) for _ in range(V)]
    Ais = [np.asarray(sys_.Ai)[p] for p in perms]
    Ajs = [np.asarray(sys_.Aj)[p] for p in perms]
    if "Ax" in batched:
        real = sys_.Ax.real.dtype
        Axs = [(sys_.Ax[..., p] * np.asarray(1.0 + 0.5 * v, real)).astype(sys_.Ax.dtype)
               for v, p in enumerate(perms)]
    else:
        Axs = [sys_.Ax] * V
    bs = [(sys_.b * np.asarray(1.0 - 0.25 * v if "b" in batched else 1.0, sys_.b.real.dtype))
          .astype(sys_.b.dtype) for v in range(V)]
    Ax_in = np.stack(Axs, axis=ax_axis) if "Ax" in batched else Axs[0]
    b_in = np.stack(bs, axis=b_axis) if "b" in batched else bs[0]
    Ai_in = np.stack(Ais) if "idx" in batched else Ais[0]
    Aj_in = np.stack(Ajs) if "idx" in batched else Ajs[0]
    in_axes = (0 if "idx" in batched else None, 0 if "idx" in batched else None,
               ax_axis if "Ax" in batched else None, b_axis if "b" in batched else None)
    fn = jax.vmap(klujax.solve, in_axes=in_axes, out_axes=out_axis)
    x = np.asarray(_maybe_jit(fn, use_jit)(Ai_in, Aj_in, Ax_in, b_in))
    assert x.dtype == result_dtype(sys_.Ax.dtype, sys_.b.dtype)
    assert x.shape[out_axis] == V
    x = np.moveaxis(x, out_axis, 0)
    for v in range(V):
        check_solution(x[v], Ais[v], Ajs[v], Axs[v], bs[v], sys_.n,
                       what=f"{sys_.describe()} vmap member {v} in_axes={in_axes}")


# ----------------------------------------------------------------------------- AD


def _reference_solve(Ai, Aj, Ax, b, n: int, dtype) -> jax.Array:
    """Dense jax.numpy reference with klujax's shape semantics, computed in ``dtype``."""
    Ax = jnp.asarray(Ax).astype(dtype)
    b = jnp.asarray(b).astype(dtype)
    Ax2 = Ax if Ax.ndim == 2 else Ax[None]
    A = jnp.stack([dense_jnp(Ai, Aj, Ax2[m], n) for m in range(Ax2.shape[0])])
    if b.ndim == 1:
        b3 = b[None, :, None]
    elif b.ndim == 2:
        b3 = b[None] if Ax.ndim == 1 else b[:, :, None]
    else:
        b3 = b
    L = max(A.shape[0], b3.shape[0])
    A = jnp.broadcast_to(A, (L, n, n))
    b3 = jnp.broadcast_to(b3, (L, *b3.shape[1:]))
    x = jnp.linalg.solve(A, b3)
    return x.reshape(out_shape(tuple(Ax.shape), tuple(b.shape)))


def _ad_tolerance(sys_: System) -> float:
    A = np.stack([m[0] for m in members(sys_.Ai, sys_.Aj, sys_.Ax, sys_.b, sys_.n)])
    cond = float(np.max(np.linalg.cond(A)))
    in_eps = max(float(np.finfo(np.dtype(d)).eps) for d in (sys_.Ax.dtype, sys_.b.dtype))
    # derivatives of x = A^-1 b involve A^-1 twice: cond^2 (times KLU's backward error,
    # see BACKWARD_TOL); the result is rounded to the input dtype (float32 inputs get
    # float32 cotangents).
    return 10 * BACKWARD_TOL * cond**2 + 8 * in_eps


def _rel_close(actual, expected, tol: float, what: str) -> None:
    actual = np.asarray(actual).astype(np.complex128)
    expected = np.asarray(expected).astype(np.complex128)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


@PROFILE
@given(sys_=systems(max_n=20, allow_singular=False), use_jit=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_grad_matches_dense(sys_: System, use_jit: bool, seed: int):
    dtype = result_dtype(sys_.Ax.dtype, sys_.b.dtype)
    shape = out_shape(sys_.Ax.shape, sys_.b.shape)
    w = uniform_values(np.random.default_rng(seed), shape, dtype)
    n = sys_.n

    def loss(solver):
        def f(Ax, b):
            return jnp.real(jnp.sum(w * solver(Ax, b)))
        return f

    ours = loss(lambda Ax, b: klujax.solve(sys_.Ai, sys_.Aj, Ax, b))
    ref = loss(lambda Ax, b: _reference_solve(sys_.Ai, sys_.Aj, Ax, b, n, dtype))
    g = _maybe_jit(jax.grad(ours, argnums=(0, 1)), use_jit)(sys_.Ax, sys_.b)
    g_ref = jax.jit(jax.grad(ref, argnums=(0, 1)))(sys_.Ax, sys_.b)
    tol = _ad_tolerance(sys_)
    for name, a, e, x in zip(("Ax", "b"), g, g_ref, (sys_.Ax, sys_.b)):
        assert a.dtype == x.dtype and a.shape == x.shape, (name, a.dtype, a.shape)
        _rel_close(a, e, tol, f"grad {name}: {sys_.describe()}")


@PROFILE
@given(sys_=systems(max_n=20, allow_singular=False), use_jit=st.booleans(),
       seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["Ax", "b", "both"]))
def test_jvp_matches_dense(sys_: System, use_jit: bool, seed: int, which: str):
    dtype = result_dtype(sys_.Ax.dtype, sys_.b.dtype)
    rng = np.random.default_rng(seed)
    dAx = uniform_values(rng, sys_.Ax.shape, sys_.Ax.dtype) * (which != "b")
    db = uniform_values(rng, sys_.b.shape, sys_.b.dtype) * (which != "Ax")
    dAx, db = dAx.astype(sys_.Ax.dtype), db.astype(sys_.b.dtype)

    def ours(Ax, b):
        return klujax.solve(sys_.Ai, sys_.Aj, Ax, b)

    def ref(Ax, b):
        return _reference_solve(sys_.Ai, sys_.Aj, Ax, b, sys_.n, dtype)

    jvp = _maybe_jit(lambda p, t: jax.jvp(ours, p, t), use_jit)
    x, dx = jvp((sys_.Ax, sys_.b), (dAx, db))
    x_ref, dx_ref = jax.jit(lambda p, t: jax.jvp(ref, p, t))((sys_.Ax, sys_.b), (dAx, db))
    assert x.dtype == dtype and dx.dtype == dtype
    tol = _ad_tolerance(sys_)
    _rel_close(x, x_ref, tol, f"primal: {sys_.describe()}")
    _rel_close(dx, dx_ref, tol, f"tangent ({which}): {sys_.describe()}")


# ----------------------------------------------------------------------------- x64 off


@pytest.mark.x64_off
@PROFILE
@given(sys_=systems(max_n=20, allow_singular=False, dtypes=(np.float32, np.complex64)),
       use_jit=st.booleans())
def test_x64_off_single_precision_results(sys_: System, use_jit: bool):
    """With x64 off: float32/complex64 out, still computed in double (error ~ rounding)."""
    assert not jax.config.jax_enable_x64
    x = _maybe_jit(klujax.solve, use_jit)(sys_.Ai.astype(np.int32), sys_.Aj.astype(np.int32),
                                          sys_.Ax, sys_.b)
    expected_dtype = result_dtype(sys_.Ax.dtype, sys_.b.dtype, x64=False)
    assert x.dtype == expected_dtype
    with klujax._compat.enable_x64(True):
        x64 = np.asarray(klujax.solve(sys_.Ai, sys_.Aj, sys_.Ax.astype(np.complex128)
                                      if np.iscomplexobj(sys_.Ax) else sys_.Ax.astype(np.float64),
                                      sys_.b.astype(np.complex128) if np.iscomplexobj(sys_.b)
                                      else sys_.b.astype(np.float64)))
    # computed in double then rounded once: within a couple of float32 ulps
    eps32 = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(np.asarray(x), x64.astype(expected_dtype), rtol=2 * eps32,
                               atol=2 * eps32 * np.abs(x64).max())
