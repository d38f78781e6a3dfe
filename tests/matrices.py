"""Reproducible sparse test matrices and error metrics for the klujax accuracy tests.

Pure NumPy/SciPy: nothing here imports jax or klujax, so the module also serves the
benchmarks and can be run on its own (``python tests/matrices.py`` prints every matrix
of :func:`matrix_set` with its condition numbers and checks that it is nonsingular).

Every generator takes the size ``n`` and a ``seed`` (an int or a
``numpy.random.Generator``) and returns ``(Ai, Aj, Ax, n)``: COO row indices, column
indices (int32), values (float64, or complex128 with ``complex_=True`` where the family
has a meaningful complex form) and the size, which some families round (``grid2d`` to a
square, see there). The entries are unique and sorted column-major (the CSC order), and
some are *stored zeros* on purpose. The same arguments always give the same matrix.

The families, and why each is hard for a sparse LU such as KLU:

``mna_ladder``
    Modified nodal analysis of an RC (or, complex, RLC) ladder with bridging resistors
    and ideal voltage sources. Each source adds a row/column with +-1 entries and a
    stored *zero* diagonal, so a diagonal pivot order is impossible (pivoting is
    mandatory); the conductances span about six decades (1 uS .. 1 S series, nS
    leakage), so the +-1 entries and the nodal entries differ by orders of magnitude.
    Real: the backward-Euler companion matrix ``G + C/h``; complex: ``G + jwC + 1/(jwL)``.
``power_flow_jacobian``
    The Newton-Raphson Jacobian of an AC power flow in polar form (blocks dP/dtheta,
    dP/dV, dQ/dtheta, dQ/dV) on a random mesh-like network (nearest-neighbour lines,
    transformers with off-nominal taps and phase shifts), with a slack bus and PV buses
    removed as in a real solver. Structurally symmetric but numerically unsymmetric,
    indefinite blocks, entries of both signs. Complex: the bus admittance matrix with
    generator/load shunts (the matrix of a short-circuit study).
``random_unsymmetric_weak_diag``
    Random unsymmetric, 5 entries per column, a random transversal (an n-cycle)
    carrying the weight and a *weak* diagonal (0.01 x N(0, 1), a quarter of it stored
    zeros). The diagonal is structurally complete, so a solver that prefers it (KLU
    takes a diagonal pivot if it is >= tol = 0.001 times the column's largest entry)
    accepts pivots ~1e-3 of the column, and the growth compounds over the elimination;
    a pivot order reused from other values is worse still. The strength of the
    transversal is tuned (bisection) so that cond_inf is ``target_cond`` (1e4).
``near_singular``
    A well-conditioned, diagonally dominant sparse matrix in which one row is replaced by
    a multiple of another plus ``delta`` times itself: two nearly dependent rows, cond
    ~1/delta, tuned to ``target_cond`` (1e11). Row scaling does not cure it: the
    ill-conditioning is genuine, so backward errors stay small but forward errors reach
    cond * eps.
``badly_scaled_rows``
    A well-conditioned matrix with rows scaled by factors 10**U(-8, 8) (both ends
    attained). cond_inf is ~1e17+ although the row-equilibrated matrix is benign: a
    solver that does not scale rows picks pivots by magnitude alone and loses the small
    rows; normwise metrics only see the large rows. Check nonsingularity with
    :func:`scaled_cond_inf`.
``grid2d``
    A 2D diffusion-advection operator on an m x m grid (Dirichlet boundary, 5-point
    stencil, central differences) with diffusion coefficients varying over two decades
    and a recirculating flow field: cell Peclet numbers up to ``peclet`` make it
    unsymmetric and not diagonally dominant; fill-in is substantial. Complex: an added
    ``i*omega`` time-harmonic term.

:func:`value_family` gives one pattern with a batch of *different* values, to exercise
the reuse of a pivot order across batch members and across calls (refactorization);
its ``"pivot_trap"`` kind is built so that a reused pivot order is disastrous while a
cheap pivot-quality check (min|u_kk| / max|u_kk| relative to the previous fresh
factorization) does not notice.

Metrics: :func:`backward_error` (normwise, with residuals computed exactly: error-free
products plus :func:`math.fsum`, so that backward errors far below 1e-16 are
meaningful), :func:`forward_error`, :func:`cond_inf` / :func:`cond_1` /
:func:`scaled_cond_inf` (dense), :func:`reference_solve` (dense LU plus iterative
refinement with exact residuals: accurate to about eps as long as cond * eps < 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import scipy.linalg
import scipy.sparse

COO: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray, int]
"""``(Ai, Aj, Ax, n)``: int32 rows, int32 columns, float64/complex128 values, size."""
Named: TypeAlias = tuple[str, np.ndarray, np.ndarray, np.ndarray, int]
"""``(name, Ai, Aj, Ax, n)`` as listed by :func:`matrix_set`."""
Seed: TypeAlias = int | np.random.Generator

#: kinds accepted by :func:`value_family`
FAMILY_KINDS = ("random", "weak_diag", "pivot_trap", "mna_sweep", "power_flow", "grid2d",
                "near_singular", "badly_scaled")

# --------------------------------------------------------------------------- assembly


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _randn(rng: np.random.Generator, size: int | tuple[int, ...], complex_: bool) -> np.ndarray:
    """Standard normal values (complex: unit variance, independent real/imaginary parts)."""
    if complex_:
        return (rng.standard_normal(size) + 1j * rng.standard_normal(size)) / math.sqrt(2.0)
    return rng.standard_normal(size)


def _assemble(rows: Any, cols: Any, vals: Any, n: int) -> COO:
    """Unique entries (duplicates summed, stored zeros kept), sorted column-major."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    vals = np.asarray(vals).ravel()
    dtype = np.complex128 if np.iscomplexobj(vals) else np.float64
    key = cols * n + rows
    uniq, inv = np.unique(key, return_inverse=True)
    Ax = np.zeros(uniq.shape[0], dtype=dtype)
    np.add.at(Ax, inv, vals)
    return (uniq % n).astype(np.int32), (uniq // n).astype(np.int32), Ax, n


def _positions(Ai: np.ndarray, Aj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               n: int) -> np.ndarray:
    """Positions in the (column-major sorted, unique) pattern of the entries (rows, cols)."""
    key = Aj.astype(np.int64) * n + Ai
    want = np.asarray(cols, np.int64) * n + np.asarray(rows, np.int64)
    pos = np.searchsorted(key, want)
    assert np.all(key[np.minimum(pos, key.shape[0] - 1)] == want), "entry not in the pattern"
    return pos


def _tune_log(f: Callable[[float], float], lo: float, hi: float, target: float,
              *, decreasing: bool = True, steps: int = 40, tol: float = 0.05) -> float:
    """A parameter p in [lo, hi] with log10 f(p) ~ log10 target, by bisection on log p.

    Assumes f monotonic (decreasing in p if ``decreasing``); returns the best p seen.
    ``tol`` is in decades of f.
    """
    a, b = math.log10(lo), math.log10(hi)
    best_p, best_d = hi, math.inf
    for _ in range(steps):
        mid = 0.5 * (a + b)
        p = 10.0**mid
        val = f(p)
        d = math.log10(val) - math.log10(target) if np.isfinite(val) and val > 0 else math.inf
        if abs(d) < best_d:
            best_p, best_d = p, abs(d)
        if best_d < tol:
            break
        if (d > 0) == decreasing:  # f too large: move p towards where f is smaller
            a = mid
        else:
            b = mid
    return best_p


# --------------------------------------------------------------------------- generators


def _mna_parts(n: int, rng: np.random.Generator, n_sources: int) -> dict[str, Any]:
    """Topology and element values of the MNA ladder (independent of frequency/timestep)."""
    if n_sources < 1:
        raise ValueError("mna_ladder: n_sources must be >= 1")
    N = n - n_sources  # circuit nodes (ground excluded)
    if N < 2 * n_sources + 2:
        raise ValueError(f"mna_ladder: n={n} too small for {n_sources} sources")
    i = np.arange(N - 1)
    k = np.arange(0, N - 7, 10)
    # series resistors 1 ohm .. 1 Mohm (conductance 1e-6 .. 1 S), bridges likewise
    g_series = 10.0 ** rng.uniform(-6.0, 0.0, N - 1)
    g_bridge = 10.0 ** rng.uniform(-6.0, 0.0, k.shape[0])
    g_leak = 10.0 ** rng.uniform(-9.0, -7.0, N)  # leakage to ground
    cap = 10.0 ** rng.uniform(-12.0, -9.0, N)  # 1 pF .. 1 nF to ground
    ind = 10.0 ** rng.uniform(-6.0, -3.0, N - 1)  # 1 uH .. 1 mH in series with ...
    has_l = rng.random(N - 1) < 0.3  # ... 30 % of the series branches (complex only)
    # source 0 drives node 0 against ground; the others float between distinct nodes
    # (not 0, no two sources sharing a node: the sources form no loop, A is nonsingular)
    ends = rng.choice(np.arange(1, N), size=2 * (n_sources - 1), replace=False)
    return dict(N=N, i=i, k=k, g_series=g_series, g_bridge=g_bridge, g_leak=g_leak, cap=cap,
                ind=ind, has_l=has_l, p=np.concatenate([[0], ends[0::2]]),
                q=np.concatenate([[-1], ends[1::2]]))


def _mna_assemble(parts: dict[str, Any], n: int, *, omega: float | None, h: float) -> COO:
    """MNA matrix: ``G + jwC + 1/(jwL)`` (omega given) or ``G + C/h`` (omega None)."""
    N, i, k = parts["N"], parts["i"], parts["k"]
    if omega is None:
        y_series = parts["g_series"].astype(np.float64)
        y_shunt = parts["g_leak"] + parts["cap"] / h
    else:
        y_series = parts["g_series"].astype(np.complex128)
        y_series = np.where(parts["has_l"],
                            1.0 / (1.0 / y_series + 1j * omega * parts["ind"]), y_series)
        y_shunt = parts["g_leak"] + 1j * omega * parts["cap"]
    rows: list[Any] = []
    cols: list[Any] = []
    vals: list[Any] = []

    def branch(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:
        rows.extend([a, b, a, b])
        cols.extend([a, b, b, a])
        vals.extend([y, y, -y, -y])

    branch(i, i + 1, y_series)
    branch(k, k + 7, parts["g_bridge"].astype(y_series.dtype))
    rows.append(np.arange(N))
    cols.append(np.arange(N))
    vals.append(y_shunt)
    for s, (p, q) in enumerate(zip(parts["p"], parts["q"])):
        e = N + s  # branch-current unknown / voltage equation of source s
        for node, sign in ((p, 1.0), (q, -1.0)):
            if node >= 0:
                rows.extend([[node], [e]])
                cols.extend([[e], [node]])
                vals.extend([[sign], [sign]])
        rows.append([e])  # the stored zero diagonal
        cols.append([e])
        vals.append([0.0])
    rows_a = np.concatenate([np.asarray(r).ravel() for r in rows])
    cols_a = np.concatenate([np.asarray(c).ravel() for c in cols])
    vals_a = np.concatenate([np.asarray(v).ravel() for v in vals])
    if omega is not None:
        vals_a = vals_a.astype(np.complex128)
    return _assemble(rows_a, cols_a, vals_a, n)


def mna_ladder(n: int = 120, seed: Seed = 0, *, complex_: bool = False, n_sources: int = 2,
               omega: float = 2 * math.pi * 1e6, h: float = 1e-9) -> COO:
    """MNA matrix of an RC/RLC ladder with ``n_sources`` ideal voltage sources.

    ``n - n_sources`` circuit nodes in a chain of series resistors (1 ohm .. 1 Mohm,
    log-uniform) with bridges from every 10th node to the node 7 further, leakage
    (1 .. 100 nS) and a capacitor (1 pF .. 1 nF) from every node to ground, and one
    extra row/column per voltage source (+-1 couplings, stored zero diagonal): source 0
    drives node 0, the others float between two random nodes. Real: ``G + C/h`` (the
    backward-Euler companion of a transient step ``h``); complex: ``G + jwC`` with 30 %
    of the series branches an R-L series (1 uH .. 1 mH) at angular frequency ``omega``.
    """
    parts = _mna_parts(n, _rng(seed), n_sources)
    return _mna_assemble(parts, n, omega=omega if complex_ else None, h=h)


def _power_network(nb: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dense bus admittance matrix Ybus (nb x nb) of a random mesh-like grid, and bus x-y."""
    xy = rng.random((nb, 2))
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    edges = set()
    for a in range(1, nb):  # a random tree by nearest earlier bus: connected
        edges.add((int(np.argmin(d[a, :a])), a))
    for a in range(nb):  # meshing: the two nearest neighbours
        for b in np.argsort(d[a])[:2]:
            edges.add((min(a, int(b)), max(a, int(b))))
    for _ in range(max(1, nb // 20)):  # a few long lines
        a, b = rng.choice(nb, 2, replace=False)
        edges.add((int(min(a, b)), int(max(a, b))))
    Y = np.zeros((nb, nb), np.complex128)
    for f, t in sorted(edges):
        x = (0.02 + 0.3 * d[f, t]) * rng.uniform(0.5, 1.5)
        z = x / rng.uniform(3.0, 10.0) + 1j * x
        ys = 1.0 / z
        bc = rng.uniform(0.0, 0.05) * d[f, t]  # line charging
        tap = 1.0 + 0j
        if rng.random() < 0.1:  # transformer: off-nominal tap, some phase shifting
            tap = rng.uniform(0.95, 1.05) * np.exp(1j * math.radians(rng.uniform(-5.0, 5.0)))
        Y[f, f] += (ys + 0.5j * bc) / abs(tap) ** 2
        Y[t, t] += ys + 0.5j * bc
        Y[f, t] -= ys / np.conj(tap)
        Y[t, f] -= ys / tap
    return Y, xy


def _power_flow_parts(n: int, rng: np.random.Generator) -> dict[str, Any]:
    # size = 2 (nb - 1) - n_pv: choose n_pv ~ n / 10 with the parity of n
    n_pv = max(1, int(round(n / 10)))
    n_pv += (n + n_pv) % 2
    nb = (n + n_pv) // 2 + 1
    Y, xy = _power_network(nb, rng)
    order = rng.permutation(nb)
    slack, pv = order[0], np.sort(order[1:1 + n_pv])
    pq = np.sort(order[1 + n_pv:])
    pvpq = np.sort(np.concatenate([pv, pq]))
    # operating point: angles follow a smooth random "flow" across the area plus noise
    direction = rng.standard_normal(2)
    field = (xy - xy[slack]) @ (direction / np.linalg.norm(direction))
    va_shape = field + 0.1 * rng.standard_normal(nb)
    vm = 1.0 + 0.05 * rng.uniform(-1.0, 1.0, nb)
    return dict(Y=Y, slack=slack, pv=pv, pq=pq, pvpq=pvpq, va_shape=va_shape, vm=vm, nb=nb)


def _power_flow_assemble(parts: dict[str, Any], n: int, load: float) -> COO:
    """Polar Newton Jacobian at angles ``load * va_shape`` (MATPOWER's dSbus_dV)."""
    Y, pvpq, pq = parts["Y"], parts["pvpq"], parts["pq"]
    V = parts["vm"] * np.exp(1j * load * parts["va_shape"])
    Ibus = Y @ V
    dS_dVa = 1j * V[:, None] * np.conj(np.diag(Ibus) - Y * V[None, :])
    Vn = V / np.abs(V)
    dS_dVm = V[:, None] * np.conj(Y * Vn[None, :]) + np.diag(np.conj(Ibus) * Vn)
    blocks = [(pvpq, pvpq, dS_dVa.real, 0, 0), (pvpq, pq, dS_dVm.real, 0, len(pvpq)),
              (pq, pvpq, dS_dVa.imag, len(pvpq), 0), (pq, pq, dS_dVm.imag, len(pvpq), len(pvpq))]
    structure = (Y != 0) | np.eye(Y.shape[0], dtype=bool)
    rows, cols, vals = [], [], []
    for r_bus, c_bus, D, r0, c0 in blocks:
        r, c = np.nonzero(structure[np.ix_(r_bus, c_bus)])
        rows.append(r + r0)
        cols.append(c + c0)
        vals.append(D[r_bus[r], c_bus[c]])  # stored zeros kept: the pattern is Y's
    assert len(pvpq) + len(pq) == n
    return _assemble(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n)


def power_flow_jacobian(n: int = 120, seed: Seed = 0, *, complex_: bool = False,
                        load: float = 0.3) -> COO:
    """Newton power-flow Jacobian ``[[dP/dth, dP/dV], [dQ/dth, dQ/dV]]`` of size n.

    The network has ``nb = (n + n_pv) / 2 + 1`` buses (n_pv ~ n/10 PV buses: their Q
    rows and V columns are dropped, as are the slack bus's), placed at random in the unit
    square and connected to their nearest neighbours (plus a few long lines); 10 % of
    the branches are transformers with off-nominal complex taps. ``load`` scales the bus
    angles of the operating point (0: flat start). Structurally symmetric, numerically
    unsymmetric.

    With ``complex_`` the matrix is instead the n x n bus admittance matrix of such a
    network plus a generator admittance at 20 % of the buses and a load admittance at
    the others (what a short-circuit study factors): complex, structurally symmetric.
    """
    rng = _rng(seed)
    if not complex_:
        return _power_flow_assemble(_power_flow_parts(n, rng), n, load)
    Y, _ = _power_network(n, rng)
    gen = rng.random(n) < 0.2
    y_gen = 1.0 / (rng.uniform(0.002, 0.01, n) + 1j * rng.uniform(0.1, 0.3, n))
    y_load = rng.uniform(0.2, 1.0, n) * (1.0 - 0.5j)
    Y[np.diag_indices(n)] += np.where(gen, y_gen, y_load)
    r, c = np.nonzero((Y != 0) | np.eye(n, dtype=bool))
    return _assemble(r, c, Y[r, c], n)


def _weak_diag_pattern(n: int, rng: np.random.Generator, nnz_per_col: int) -> dict[str, Any]:
    """Pattern: full diagonal, a random n-cycle (the strong transversal), random rows.

    The transversal has no fixed point, so every row and column holds one strong entry
    off the diagonal (zeroing diagonal entries can never leave a row empty).
    """
    if n < max(nnz_per_col, 2):
        raise ValueError("random_unsymmetric_weak_diag: n must be >= max(nnz_per_col, 2)")
    order = rng.permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, -1)  # one cycle through all of 0..n-1
    rows, cols = [], []
    for j in range(n):
        extra = rng.choice(n, size=nnz_per_col, replace=False)
        r = list(dict.fromkeys([j, int(perm[j]), *extra.tolist()]))[:nnz_per_col]
        rows += r
        cols += [j] * len(r)
    Ai, Aj, _, _ = _assemble(rows, cols, np.zeros(len(rows)), n)
    diag = _positions(Ai, Aj, np.arange(n), np.arange(n), n)
    trans = _positions(Ai, Aj, perm, np.arange(n), n)
    return dict(Ai=Ai, Aj=Aj, n=n, diag=diag, trans=trans)


def _weak_diag_values(pat: dict[str, Any], rng: np.random.Generator, *, complex_: bool,
                      diag_scale: float, zero_diag_fraction: float,
                      target_cond: float | None) -> np.ndarray:
    """Random values: O(1) entries, weak diagonal, transversal tuned to ``target_cond``."""
    Ai, Aj, n = pat["Ai"], pat["Aj"], pat["n"]
    base = _randn(rng, Ai.shape[0], complex_)
    diag = pat["diag"]
    base[diag] *= diag_scale
    base[diag[rng.random(n) < zero_diag_fraction]] = 0.0
    trans = pat["trans"]
    phase = base[trans] / np.maximum(np.abs(base[trans]), 1e-300)

    def values(alpha: float) -> np.ndarray:
        v = base.copy()
        v[trans] += alpha * phase
        return v

    if target_cond is None:
        return values(1.0)
    alpha = _tune_log(lambda a: cond_inf(to_dense(Ai, Aj, values(a), n)), 1e-3, 1e2,
                      target_cond, tol=0.1, steps=20)
    return values(alpha)


def random_unsymmetric_weak_diag(n: int = 200, seed: Seed = 0, *, complex_: bool = False,
                                 nnz_per_col: int = 5, diag_scale: float = 0.01,
                                 zero_diag_fraction: float = 0.25,
                                 target_cond: float | None = 1e4) -> COO:
    """Random unsymmetric sparse matrix with a weak diagonal and cond_inf ~ ``target_cond``.

    Each column holds ``nnz_per_col`` entries: the diagonal, one entry of a random
    cyclic permutation (the transversal, never on the diagonal), and random rows; values
    are standard normal, the diagonal is scaled by ``diag_scale`` and a
    ``zero_diag_fraction`` of it is set to stored zeros, and the transversal entries get
    ``alpha`` added to their magnitude, with ``alpha`` in [1e-3, 1e2] bisected so that
    cond_inf(A) ~ ``target_cond`` (None: alpha = 1). Over seeds, cond_inf lands in about
    [0.25, 1.5] x target (below when even alpha = 1e-3 is too well conditioned).
    """
    rng = _rng(seed)
    pat = _weak_diag_pattern(n, rng, nnz_per_col)
    Ax = _weak_diag_values(pat, rng, complex_=complex_, diag_scale=diag_scale,
                           zero_diag_fraction=zero_diag_fraction, target_cond=target_cond)
    return pat["Ai"], pat["Aj"], Ax, n


def _dd_base(n: int, rng: np.random.Generator, complex_: bool, *, per_col: int = 4,
             window: int = 8, dominance: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Dense well-conditioned sparse matrix: local random couplings, dominant diagonal.

    Returns the dense matrix and its boolean pattern (diagonal included).
    """
    cols = np.repeat(np.arange(n), per_col)
    off = rng.integers(1, window + 1, cols.shape[0]) * rng.choice([-1, 1], cols.shape[0])
    far = rng.random(cols.shape[0]) < 0.1
    rows = np.where(far, rng.integers(0, n, cols.shape[0]), np.clip(cols + off, 0, n - 1))
    A = np.zeros((n, n), np.complex128 if complex_ else np.float64)
    keep = rows != cols
    np.add.at(A, (rows[keep], cols[keep]), _randn(rng, int(keep.sum()), complex_))
    dom = np.maximum(np.abs(A).sum(axis=0), np.abs(A).sum(axis=1))
    if complex_:
        z = _randn(rng, n, True)
        phase = z / np.maximum(np.abs(z), 1e-300)
    else:
        phase = rng.choice([-1.0, 1.0], n)
    A[np.diag_indices(n)] = (dominance * dom + 1.0) * phase
    return A, A != 0


def near_singular(n: int = 100, seed: Seed = 0, *, complex_: bool = False,
                  target_cond: float = 1e11, delta: float | None = None) -> COO:
    """Two nearly dependent rows in a well-conditioned matrix: cond_inf ~ ``target_cond``.

    Row q of a diagonally dominant sparse base matrix B (cond ~ 10) is replaced by
    ``c * B[p] + delta * B[q]`` (c ~ U(0.5, 2) with random sign), so the pattern of row
    q becomes the union of both rows and A is singular for delta = 0. ``delta`` is
    bisected so that cond_inf(A) ~ ``target_cond`` (or given explicitly).
    """
    rng = _rng(seed)
    A0, mask = _dd_base(n, rng, complex_)
    p, q = rng.choice(n, 2, replace=False)
    c = rng.uniform(0.5, 2.0) * rng.choice([-1.0, 1.0])
    mask[q] |= mask[p]
    r, col = np.nonzero(mask)

    def dense(d: float) -> np.ndarray:
        A = A0.copy()
        A[q] = c * A0[p] + d * A0[q]
        return A

    if delta is None:
        delta = _tune_log(lambda d: cond_inf(dense(d)), 1e-16, 1.0, target_cond,
                          decreasing=True, tol=0.05)
    A = dense(delta)
    return _assemble(r, col, A[r, col], n)


def badly_scaled_rows(n: int = 150, seed: Seed = 0, *, complex_: bool = False,
                      log10_range: tuple[float, float] = (-8.0, 8.0)) -> COO:
    """A well-conditioned sparse matrix with rows scaled by 10**U(log10_range).

    The base is a random sparse matrix with a moderately dominant diagonal (cond ~ 10 -
    100); the smallest and largest factors of the range are both used (on random rows).
    """
    rng = _rng(seed)
    A, mask = _dd_base(n, rng, complex_, dominance=0.6)
    lo, hi = log10_range
    e = rng.uniform(lo, hi, n)
    e[rng.choice(n, 2, replace=False)] = (lo, hi)
    A *= (10.0**e)[:, None]
    r, c = np.nonzero(mask)
    return _assemble(r, c, A[r, c], n)


def _grid_parts(n: int, rng: np.random.Generator) -> dict[str, Any]:
    m = max(3, int(round(math.sqrt(n))))
    idx = np.arange(m * m).reshape(m, m)
    h = 1.0 / (m + 1)
    # a recirculating flow (one cell vortex) with a random perturbation
    y, x = (np.mgrid[0:m, 0:m] + 1) * h
    a, b = rng.uniform(0.5, 1.5, 2)
    vx = a * np.sin(math.pi * x) * np.cos(math.pi * y) + 0.3 * rng.standard_normal((m, m))
    vy = -b * np.cos(math.pi * x) * np.sin(math.pi * y) + 0.3 * rng.standard_normal((m, m))
    vmax = max(np.abs(vx).max(), np.abs(vy).max())
    # diffusion coefficients per edge, two decades, smooth-ish in space
    kx = 10.0 ** rng.uniform(-1.0, 1.0, (m, m - 1))
    ky = 10.0 ** rng.uniform(-1.0, 1.0, (m - 1, m))
    return dict(m=m, idx=idx, vx=vx / vmax, vy=vy / vmax, kx=kx, ky=ky)


def _grid_assemble(parts: dict[str, Any], *, peclet: float, shift: complex) -> COO:
    """5-point diffusion + central-difference advection (scaled by h^2), plus ``shift``."""
    m, idx = parts["m"], parts["idx"]
    n = m * m
    rows, cols, vals = [], [], []
    diag = np.zeros(n, np.complex128 if isinstance(shift, complex) else np.float64)
    for (lo, hi, k, v) in ((idx[:, :-1], idx[:, 1:], parts["kx"], parts["vx"]),
                           (idx[:-1, :], idx[1:, :], parts["ky"], parts["vy"])):
        lo, hi, k = lo.ravel(), hi.ravel(), k.ravel()
        v = v.ravel()[lo]
        adv = 0.5 * peclet * v  # central differences, in units of the mean diffusion
        rows += [lo, hi]
        cols += [hi, lo]
        vals += [-k + adv, -k - adv]
        np.add.at(diag, lo, k)
        np.add.at(diag, hi, k)
    # Dirichlet boundary: every missing neighbour of a boundary node adds k = 1
    missing = 4 - np.bincount(np.concatenate(rows), minlength=n)
    diag += missing + shift
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    vals_a = np.concatenate([np.asarray(v, diag.dtype) for v in vals])
    return _assemble(np.concatenate(rows), np.concatenate(cols), vals_a, n)


def grid2d(n: int = 144, seed: Seed = 0, *, complex_: bool = False, peclet: float = 8.0,
           omega: float = 0.5) -> COO:
    """Diffusion-advection on an m x m grid, m = round(sqrt(n)): the size is m**2.

    Per edge: diffusion coefficient k = 10**U(-1, 1) and central-difference advection
    +-peclet * v / 2 with v a perturbed vortex, |v| <= 1 (cell Peclet number peclet |v| / k
    up to 10 peclet): off-diagonal entries of both signs, many larger than the
    diagonal. Dirichlet boundary (k = 1 to the missing neighbours). Complex:
    ``+ 1j * omega`` on the diagonal (time-harmonic).
    """
    parts = _grid_parts(n, _rng(seed))
    return _grid_assemble(parts, peclet=peclet, shift=1j * omega if complex_ else 0.0)


# --------------------------------------------------------------------------- collections


def matrix_set(complex_: bool = False) -> list[Named]:
    """Every family at one or two sizes: ``[(name, Ai, Aj, Ax, n), ...]`` (deterministic)."""
    cases: list[tuple[str, Callable[..., COO], int]] = [
        ("mna_ladder", mna_ladder, 60),
        ("mna_ladder", mna_ladder, 250),
        ("power_flow_jacobian", power_flow_jacobian, 80),
        ("power_flow_jacobian", power_flow_jacobian, 241),
        ("random_unsymmetric_weak_diag", random_unsymmetric_weak_diag, 200),
        ("near_singular", near_singular, 100),
        ("badly_scaled_rows", badly_scaled_rows, 150),
        ("grid2d", grid2d, 64),
        ("grid2d", grid2d, 225),
    ]
    out: list[Named] = []
    for name, gen, n in cases:
        Ai, Aj, Ax, n_out = gen(n, seed=n, complex_=complex_)
        out.append((f"{name}-{n_out}-{'c128' if complex_ else 'f64'}", Ai, Aj, Ax, n_out))
    return out


def value_family(kind: str, n: int = 200, n_members: int = 50, seed: Seed = 0, *,
                 complex_: bool = False) -> COO:
    """One pattern with ``n_members`` different value sets: ``(Ai, Aj, Ax, n)``, Ax 2D.

    ``Ax`` has shape ``(n_members, n_nz)``; all members are nonsingular. Kinds:

    ``"random"``
        independent random values per member on one 5-per-column pattern, as in
        :func:`random_unsymmetric_weak_diag` but with ``diag_scale=0.3`` and no zero
        diagonal entries, each member tuned to cond_inf ~ 1e4: the pivot order of one
        member is a random, often poor, order for another, and because no pivot of the
        diagonal is exactly zero a refactorization with it does not fail. KLU's own
        fresh factorizations (tol 1e-3) of these matrices already have
        min|u_kk|/max|u_kk| ~ 1e-8 .. 1e-12, so a check of that ratio against a fresh
        factorization's accepts refactorizations with pivot growth ~1e10. The bug
        report's system.
    ``"weak_diag"``
        the same with the defaults of :func:`random_unsymmetric_weak_diag` (diagonal
        0.01 x N(0, 1), a quarter of it zero): even a fresh factorization with KLU's
        default pivot tolerance (0.001, diagonal preference) loses accuracy here.
    ``"pivot_trap"``
        member 0 has a dominant diagonal (+-10) and one "floating" column scaled by
        1e-12 (a node connected through nothing but a 1 Tohm leak: a tiny but harmless
        pivot, which makes its reference min|u_kk|/max|u_kk| ~ 1e-12); the later members
        are ``"random"`` values. Member 0's good pivot order (the diagonal) is a bad one
        for them, and their refactorizations with it pass a check relative to member
        0's ratio.
    ``"mna_sweep"``
        :func:`mna_ladder` swept: complex over omega = 2 pi 10**(3 .. 9), real over the
        transient step h = 10**(-12 .. -3): which elements dominate changes along the
        sweep.
    ``"power_flow"``
        :func:`power_flow_jacobian` (real) from flat start (load 0) to heavy load
        (angles x 1.2); complex: the admittance matrix with a growing fault admittance.
    ``"grid2d"``
        :func:`grid2d` with the Peclet number swept 0 .. 40 (size rounded to a square).
    ``"near_singular"``
        :func:`near_singular` with the dependency ``delta`` swept so that cond goes
        from ~1e3 to ~1e12.
    ``"badly_scaled"``
        one base matrix with row scales 10**U(-8, 8) redrawn per member.
    """
    rng = _rng(seed)
    L = int(n_members)
    if L < 1:
        raise ValueError("value_family: n_members must be >= 1")
    t = np.linspace(0.0, 1.0, L) if L > 1 else np.zeros(1)
    members: list[np.ndarray] = []
    if kind in ("random", "weak_diag"):
        # "random": diagonal 0.3 x N(0, 1), none zero (see the docstring); "weak_diag": the
        # defaults of random_unsymmetric_weak_diag
        ds, zf = (0.3, 0.0) if kind == "random" else (0.01, 0.25)
        pat = _weak_diag_pattern(n, rng, 5)
        for _ in range(L):
            members.append(_weak_diag_values(pat, rng, complex_=complex_, diag_scale=ds,
                                             zero_diag_fraction=zf, target_cond=1e4))
        Ai, Aj = pat["Ai"], pat["Aj"]
    elif kind == "pivot_trap":
        Ai, Aj, members = _pivot_trap(n, L, rng, complex_)
    elif kind == "mna_sweep":
        parts = _mna_parts(n, rng, 2)
        for tm in t:
            if complex_:
                Ai, Aj, Ax, _ = _mna_assemble(parts, n, omega=2 * math.pi * 10 ** (3 + 6 * tm),
                                              h=1.0)
            else:
                Ai, Aj, Ax, _ = _mna_assemble(parts, n, omega=None, h=10 ** (-12 + 9 * tm))
            members.append(Ax)
    elif kind == "power_flow":
        if complex_:
            Ai, Aj, Ax0, _ = power_flow_jacobian(n, rng, complex_=True)
            diag = _positions(Ai, Aj, np.arange(n), np.arange(n), n)
            bus = int(rng.integers(n))
            for tm in t:
                Ax = Ax0.copy()
                Ax[diag[bus]] += 1e3 * tm * (1 - 10j)  # a growing fault at one bus
                members.append(Ax)
        else:
            parts = _power_flow_parts(n, rng)
            for tm in t:
                Ai, Aj, Ax, _ = _power_flow_assemble(parts, n, 1.2 * tm)
                members.append(Ax)
    elif kind == "grid2d":
        parts = _grid_parts(n, rng)
        for tm in t:
            Ai, Aj, Ax, n = _grid_assemble(parts, peclet=40.0 * tm,
                                           shift=0.5j if complex_ else 0.0)
            members.append(Ax)
    elif kind == "near_singular":
        sub = int(rng.integers(2**31))
        for tm in t:
            Ai, Aj, Ax, _ = near_singular(n, sub, complex_=complex_,
                                          delta=10.0 ** (-1.0 - 10.0 * tm))
            members.append(Ax)
    elif kind == "badly_scaled":
        sub = int(rng.integers(2**31))
        Ai, Aj, Ax0, _ = badly_scaled_rows(n, sub, complex_=complex_, log10_range=(0.0, 0.0))
        for _ in range(L):
            e = rng.uniform(-8.0, 8.0, n)
            members.append(Ax0 * 10.0 ** e[Ai])
    else:
        raise ValueError(f"value_family: unknown kind {kind!r}; expected one of {FAMILY_KINDS}")
    return Ai, Aj, np.stack(members), n


def _pivot_trap(n: int, L: int, rng: np.random.Generator,
                complex_: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """See :func:`value_family` ``"pivot_trap"``."""
    pat = _weak_diag_pattern(n, rng, 5)
    Ai, Aj = pat["Ai"], pat["Aj"]
    first = _randn(rng, Ai.shape[0], complex_)
    first[pat["diag"]] = 10.0 * rng.choice([-1.0, 1.0], n)  # dominant diagonal
    first[Aj == int(rng.integers(n))] *= 1e-12  # the floating column
    members = [first]
    for _ in range(L - 1):
        members.append(_weak_diag_values(pat, rng, complex_=complex_, diag_scale=0.3,
                                         zero_diag_fraction=0.0, target_cond=1e4))
    return Ai, Aj, members


# --------------------------------------------------------------------------- conversions


def to_dense(Ai: Any, Aj: Any, Ax: Any, n: int) -> np.ndarray:
    """Dense ``(n, n)`` (or ``(L, n, n)`` for a batched ``Ax``) matrix; duplicates add up."""
    Ai = np.asarray(Ai, dtype=np.int64)
    Aj = np.asarray(Aj, dtype=np.int64)
    Ax = np.asarray(Ax)
    dtype = np.complex128 if np.iscomplexobj(Ax) else np.float64
    if Ax.ndim == 1:
        A = np.zeros((n, n), dtype)
        np.add.at(A, (Ai, Aj), Ax)
        return A
    A = np.zeros((Ax.shape[0], n, n), dtype)
    for m in range(Ax.shape[0]):
        np.add.at(A[m], (Ai, Aj), Ax[m])
    return A


def to_scipy(Ai: Any, Aj: Any, Ax: Any, n: int) -> scipy.sparse.csc_matrix:
    """``scipy.sparse.csc_matrix`` of the COO matrix (duplicates summed, stored zeros kept)."""
    return scipy.sparse.csc_matrix(
        (np.asarray(Ax), (np.asarray(Ai, np.int64), np.asarray(Aj, np.int64))), shape=(n, n))


# --------------------------------------------------------------------------- metrics


def _as_coo(A: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    if scipy.sparse.issparse(A):
        C = scipy.sparse.coo_matrix(A)
        return C.row.astype(np.int64), C.col.astype(np.int64), np.asarray(C.data), C.shape[0]
    A = np.asarray(A)
    r, c = np.nonzero(A)
    return r, c, A[r, c], A.shape[0]


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Error-free product (Dekker): a * b == p + e exactly (absent over/underflow)."""
    p = a * b

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = 134217729.0 * x  # 2**27 + 1
        hi = t - (t - x)
        return hi, x - hi

    ah, al = split(a)
    bh, bl = split(b)
    e = al * bl - (((p - ah * bh) - al * bh) - ah * bl)
    return p, e


def residual(A: Any, x: Any, b: Any) -> np.ndarray:
    """``b - A x``, each entry correctly rounded from the exact value (same shape as b).

    ``A`` dense or scipy sparse (duplicates add up), ``x`` and ``b`` of shape (n,) or
    (n, k). Every product is split error-free (Dekker) and each row summed with
    :func:`math.fsum`, so the result is exact to the last bit whatever the platform's
    ``longdouble`` is; complex values are handled through their real and imaginary parts.
    """
    r_idx, c_idx, vals, n = _as_coo(A)
    x = np.asarray(x)
    b = np.asarray(b)
    cplx = np.iscomplexobj(vals) or np.iscomplexobj(x) or np.iscomplexobj(b)
    x2 = x.reshape(n, -1)
    b2 = b.reshape(n, -1)
    order = np.argsort(r_idx, kind="stable")
    r_idx, c_idx, vals = r_idx[order], c_idx[order], vals[order]
    bounds = np.searchsorted(r_idx, np.arange(n + 1))
    out = np.empty(b2.shape, np.complex128 if cplx else np.float64)
    a_re, a_im = np.real(vals).astype(np.float64), np.imag(vals).astype(np.float64)
    for k in range(b2.shape[1]):
        xk = x2[c_idx, k]
        x_re, x_im = np.real(xk).astype(np.float64), np.imag(xk).astype(np.float64)
        parts_re = [_two_prod(a_re, x_re), _two_prod(-a_im, x_im)]
        parts_im = [_two_prod(a_re, x_im), _two_prod(a_im, x_re)]
        for target, parts, bk in ((0, parts_re, np.real(b2[:, k])),
                                  (1, parts_im, np.imag(b2[:, k]))):
            if target == 1 and not cplx:
                continue
            terms = np.stack([t for pe in parts for t in pe], axis=1)  # (nnz, 4)
            col = np.empty(n)
            for i in range(n):
                lo, hi = bounds[i], bounds[i + 1]
                col[i] = math.fsum([float(bk[i]), *(-terms[lo:hi]).ravel().tolist()])
            if target == 0:
                out[:, k] = col
            else:
                out[:, k] += 1j * col
    return out.reshape(b.shape)


def _inf_norm_rows(A: Any) -> float:
    """||A||_inf (max row sum of moduli)."""
    if scipy.sparse.issparse(A):
        return float(np.max(np.asarray(abs(A).sum(axis=1)), initial=0.0))
    return float(np.max(np.abs(np.asarray(A)).sum(axis=1), initial=0.0))


def backward_error(A: Any, x: Any, b: Any) -> float:
    """Normwise backward error, max over the right-hand sides (columns of x and b).

    ``||b - A x||_inf / (||A||_inf ||x||_inf + ||b||_inf)``: the smallest relative
    perturbation of A and b (in these norms) for which x is an exact solution. The
    residual is computed exactly (see :func:`residual`); float64 roundoff of the norms
    only changes the result in its last bits. A non-finite x gives ``inf``.
    """
    x = np.asarray(x)
    b = np.asarray(b)
    if not np.all(np.isfinite(x)):
        return math.inf
    n = b.shape[0]
    r = residual(A, x, b).reshape(n, -1)
    xn = np.abs(x.reshape(n, -1)).max(axis=0, initial=0.0)
    bn = np.abs(b.reshape(n, -1)).max(axis=0, initial=0.0)
    rn = np.abs(r).max(axis=0, initial=0.0)
    den = _inf_norm_rows(A) * xn + bn
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rn == 0, 0.0, rn / den)
    return float(ratio.max(initial=0.0))


def forward_error(x: Any, x_ref: Any) -> float:
    """``||x - x_ref||_inf / ||x_ref||_inf``, max over columns (non-finite x: inf)."""
    x = np.asarray(x)
    x_ref = np.asarray(x_ref)
    if not np.all(np.isfinite(x)):
        return math.inf
    k = x_ref.shape[0]
    num = np.abs(x.reshape(k, -1) - x_ref.reshape(k, -1)).max(axis=0, initial=0.0)
    den = np.abs(x_ref.reshape(k, -1)).max(axis=0, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(num == 0, 0.0, num / den)
    return float(ratio.max(initial=0.0))


def _dense(A: Any) -> np.ndarray:
    return A.toarray() if scipy.sparse.issparse(A) else np.asarray(A)


def cond_inf(A: Any) -> float:
    """``||A||_inf ||A^-1||_inf`` (dense; inf if A is numerically singular)."""
    with np.errstate(all="ignore"):
        try:
            return float(np.linalg.cond(_dense(A), np.inf))
        except np.linalg.LinAlgError:
            return math.inf


def cond_1(A: Any) -> float:
    """``||A||_1 ||A^-1||_1`` (dense; inf if A is numerically singular)."""
    with np.errstate(all="ignore"):
        try:
            return float(np.linalg.cond(_dense(A), 1))
        except np.linalg.LinAlgError:
            return math.inf


def scaled_cond_inf(A: Any) -> float:
    """cond_inf of A with every row scaled to unit inf-norm (invariant to row scaling)."""
    D = _dense(A)
    s = np.abs(D).max(axis=1)
    if np.any(s == 0):
        return math.inf
    return cond_inf(D / s[:, None])


def reference_solve(A: Any, b: Any, *, refine: int = 4) -> np.ndarray:
    """Accurate solution of ``A x = b``: dense LU + ``refine`` steps of refinement.

    The residuals of the refinement are exact (:func:`residual`), so the result is
    accurate to about eps (not cond * eps) whenever cond * eps << 1. ``b``: (n,) or (n, k).
    """
    D = _dense(A)
    lu = scipy.linalg.lu_factor(D, check_finite=True)
    x = scipy.linalg.lu_solve(lu, b)
    for _ in range(refine):
        x = x + scipy.linalg.lu_solve(lu, residual(D, x, b))
    return x


# --------------------------------------------------------------------------- self-check


def describe(Ai: np.ndarray, Aj: np.ndarray, Ax: np.ndarray, n: int) -> dict[str, float]:
    """nnz and the dense condition numbers (cond_1, cond_inf, row-scaled cond_inf)."""
    A = to_dense(Ai, Aj, Ax, n)
    return dict(n=n, nnz=int(Ai.shape[0]), cond_1=cond_1(A), cond_inf=cond_inf(A),
                scaled_cond_inf=scaled_cond_inf(A))


def _main() -> None:
    import scipy.sparse.linalg as spla

    print(f"{'matrix':42s} {'nnz':>6s} {'cond_1':>9s} {'cond_inf':>9s} {'scaled':>9s}"
          f" {'berr(splu)':>10s}")
    for complex_ in (False, True):
        for name, Ai, Aj, Ax, n in matrix_set(complex_):
            d = describe(Ai, Aj, Ax, n)
            assert d["scaled_cond_inf"] < 1e13, f"{name} is numerically singular: {d}"
            A = to_scipy(Ai, Aj, Ax, n)
            b = np.ones(n, Ax.dtype)
            x = spla.splu(A).solve(b)
            print(f"{name:42s} {d['nnz']:6d} {d['cond_1']:9.2e} {d['cond_inf']:9.2e}"
                  f" {d['scaled_cond_inf']:9.2e} {backward_error(A, x, b):10.1e}")
    for kind in FAMILY_KINDS:
        Ai, Aj, Ax, n = value_family(kind, 200, 6, seed=1)
        conds = [cond_inf(A) for A in to_dense(Ai, Aj, Ax, n)]
        scaled = [scaled_cond_inf(A) for A in to_dense(Ai, Aj, Ax, n)]
        assert max(scaled) < 1e13, kind
        print(f"family {kind:14s} n={n} members={Ax.shape[0]} nnz={Ai.shape[0]}"
              f" cond_inf {min(conds):.1e} .. {max(conds):.1e}")


if __name__ == "__main__":
    _main()
