"""``python -m klujax``: a demo on built-in circuit-like systems.

It builds an RC ladder (a transmission-line model) and a 2D resistor grid, solves a
frequency sweep as one batch inside ``jax.jit``, takes a gradient through the solve,
uses the split API for a transient run, reports condition estimates, determinants and
backward errors, checks every result against a dense solve, and prints what it did with
timings. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import klujax
from klujax._compat import enable_x64


def rc_ladder(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nodal admittance pattern of an RC ladder: series R between nodes, C to ground.

    Returns Ai, Aj, and the conductance (G) and capacitance (C) value vectors, so
    that ``Ax = G + 1j * omega * C``.
    """
    rng = np.random.default_rng(0)
    g = 1.0 / rng.uniform(5.0, 15.0, n - 1)
    c = rng.uniform(1e-3, 2e-3, n)
    Ai, Aj, G, C = [], [], [], []
    for k in range(n - 1):  # series conductance between k and k+1
        Ai += [k, k + 1, k, k + 1]
        Aj += [k, k + 1, k + 1, k]
        G += [g[k], g[k], -g[k], -g[k]]
        C += [0.0] * 4
    for k in range(n):  # capacitance to ground (+ a source conductance at node 0)
        Ai.append(k)
        Aj.append(k)
        G.append(1.0 if k == 0 else 1e-6)
        C.append(c[k])
    return (np.array(Ai, np.int32), np.array(Aj, np.int32), np.array(G), np.array(C))


def grid(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A m x m resistor grid with a leak to ground at every node (5-point stencil)."""
    idx = np.arange(m * m).reshape(m, m)
    Ai, Aj, Ax = [], [], []
    for i in range(m):
        for j in range(m):
            k = idx[i, j]
            Ai.append(k)
            Aj.append(k)
            Ax.append(4.1)
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < m and 0 <= j + dj < m:
                    Ai.append(k)
                    Aj.append(idx[i + di, j + dj])
                    Ax.append(-1.0)
    return np.array(Ai, np.int32), np.array(Aj, np.int32), np.array(Ax)


def fill_heavy(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A random unsymmetric matrix, ~5 entries per row plus the diagonal: heavy fill."""
    rng = np.random.default_rng(1)
    Ai = np.concatenate([np.repeat(np.arange(n), 5), np.arange(n)])
    Aj = np.concatenate([rng.integers(0, n, 5 * n), np.arange(n)])
    key = np.unique(Ai.astype(np.int64) * n + Aj)
    Ai, Aj = (key // n).astype(np.int32), (key % n).astype(np.int32)
    Ax = rng.standard_normal(len(Ai)) + 4.0 * (Ai == Aj)
    return Ai, Aj, Ax, n


def dense(Ai: np.ndarray, Aj: np.ndarray, Ax: jax.Array | np.ndarray, n: int) -> jax.Array:
    """Dense (..., n, n) matrices from COO values (duplicates summed)."""
    return jnp.zeros((*Ax.shape[:-1], n, n), Ax.dtype).at[..., Ai, Aj].add(Ax)


def timeit(fn, *args, repeat: int = 7) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_paired(fns: dict, make_input, rounds: int = 11) -> tuple[dict, list]:
    """Interleaved timing with fresh inputs: in each round every function is called once,
    in a shuffled order, on an input never seen before (``make_input(k)``). Returns the
    median time per function and the per-round times (for paired ratios)."""
    names = list(fns)
    k = 0
    for name in names:  # compile (and warm) outside the timing
        jax.block_until_ready(fns[name](make_input(k)))
        k += 1
    rng = np.random.default_rng(0)
    per_round = []
    for _ in range(rounds):
        t = {}
        for name in rng.permutation(names):
            x = jax.block_until_ready(make_input(k))
            k += 1
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name](x))
            t[name] = time.perf_counter() - t0
        per_round.append(t)
    return {n: float(np.median([r[n] for r in per_round])) for n in names}, per_round


def paired_ratio(per_round: list, num: str, den: str) -> str:
    """Median [IQR] of the per-round ratio num/den."""
    q1, med, q3 = np.percentile([r[num] / r[den] for r in per_round], [25, 50, 75])
    return f"{med:.2f} [{q1:.2f}-{q3:.2f}]"


def relerr(a: jax.Array, b: jax.Array) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klujax", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="RC ladder nodes (default 300)")
    parser.add_argument("--freqs", type=int, default=64, help="frequencies in the sweep")
    args = parser.parse_args(argv)

    with enable_x64(True):
        return _run(args.n, args.freqs)


def _run(n: int, n_freq: int) -> int:
    ok = True

    def check(name: str, err: float, tol: float) -> None:
        nonlocal ok
        status = "ok" if err < tol else "FAILED"
        ok &= err < tol
        print(f"  check {name:<44s} rel. error {err:.1e}  [{status}]")

    print(
        f"klujax {klujax.__version__} (KLU {klujax._klujax.klu_version}, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; backends: {', '.join(klujax.methods())})"
    )

    # 1. Frequency sweep of an RC ladder: one batched complex solve inside jit.
    Ai, Aj, G, C = rc_ladder(n)
    omega = jnp.logspace(0, 4, n_freq)
    Ax = G[None, :] + 1j * omega[:, None] * C[None, :]  # (n_freq, n_nz)
    b = jnp.zeros(n, complex).at[0].set(1.0)  # 1 A injected at node 0, shared by all
    sweep = jax.jit(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b))
    x = sweep(Ax, b)
    x_ref = jnp.linalg.solve(dense(Ai, Aj, Ax, n), jnp.broadcast_to(b, (n_freq, n))[..., None])[
        ..., 0
    ]
    print(
        f"\n[1] RC ladder, n={n}, nnz={len(Ai)}: frequency sweep of {n_freq} complex systems "
        "in one jitted klujax.solve"
    )
    check("batched solve vs jnp.linalg.solve", relerr(x, x_ref), 1e-9)
    t_klu = timeit(sweep, Ax, b)
    t_dense = timeit(
        jax.jit(lambda A, b: jnp.linalg.solve(A, b)),
        dense(Ai, Aj, Ax, n),
        jnp.broadcast_to(b, (n_freq, n))[..., None],
        repeat=1,
    )
    print(
        f"  time: klujax {t_klu * 1e3:.2f} ms for the sweep ({t_klu / n_freq * 1e6:.0f} us per "
        f"system); dense LU {t_dense * 1e3:.2f} ms"
    )

    # 2. Gradient of the far-end voltage magnitude w.r.t. every conductance value.
    def far_end(G):
        x = klujax.solve(Ai, Aj, G[None, :] + 1j * omega[:, None] * C[None, :], b)
        return jnp.sum(jnp.abs(x[:, -1]) ** 2)

    def far_end_dense(G):
        A = dense(Ai, Aj, G[None, :] + 1j * omega[:, None] * C[None, :], n)
        x = jnp.linalg.solve(A, jnp.broadcast_to(b, (n_freq, n))[..., None])[..., 0]
        return jnp.sum(jnp.abs(x[:, -1]) ** 2)

    grad = jax.jit(jax.grad(far_end))
    g = grad(jnp.asarray(G))
    print("\n[2] jax.grad of the far-end power over the sweep w.r.t. all conductances")
    check("gradient vs dense autodiff", relerr(g, jax.grad(far_end_dense)(jnp.asarray(G))), 1e-7)
    # fresh values every call, as in an optimisation loop (no cache hits across calls);
    # forward and gradient interleaved round by round, paired ratios
    t, per_round = time_paired(
        {"forward": jax.jit(far_end), "gradient": grad},
        lambda k: jnp.asarray(G * (1.0 + 1e-4 * (k + 1))),
    )
    print(
        f"  time: forward {t['forward'] * 1e3:.2f} ms, gradient {t['gradient'] * 1e3:.2f} ms "
        f"(gradient/forward {paired_ratio(per_round, 'gradient', 'forward')}, median [IQR] of 11 "
        "interleaved rounds: the backward pass reuses the forward factorizations)"
    )

    # 3. A 2D resistor grid, transient with backward Euler: factor once, then one
    #    triangular solve per time step with the split API.
    m = 30
    Gi, Gj, Gx = grid(m)
    N = m * m
    dt, cap = 1e-2, 1.0
    Ax_t = Gx + np.where(Gi == Gj, cap / dt, 0.0)
    sym = klujax.analyze(Gi, Gj, N)
    num = klujax.factor(Gi, Gj, Ax_t, sym)
    source = jnp.zeros(N).at[N // 2].set(1.0)

    @jax.jit
    def run(v0, num, sym):
        def step(v, _):
            v = klujax.solve_with_numeric(num, cap / dt * v + source, sym)
            return v, v[N // 2]

        return jax.lax.scan(step, v0, None, length=200)

    v, _trace = run(jnp.zeros(N), num, sym)
    lu = jax.scipy.linalg.lu_factor(dense(Gi, Gj, jnp.asarray(Ax_t), N))
    v_ref, _ = jax.lax.scan(
        lambda v, _: (jax.scipy.linalg.lu_solve(lu, cap / dt * v + source), None),
        jnp.zeros(N),
        None,
        length=200,
    )
    print(
        f"\n[3] {m}x{m} resistor grid (n={N}): 200 backward-Euler steps, factor once + "
        "solve_with_numeric in a jitted lax.scan"
    )
    check("transient vs dense LU", relerr(v, v_ref), 1e-9)
    t_tr = timeit(run, jnp.zeros(N), num, sym)
    print(f"  time: {t_tr * 1e3:.2f} ms for 200 steps ({t_tr / 200 * 1e6:.1f} us per step)")
    num.close()
    sym.close()

    # 4. What KLU knows about the sweep's matrices, and the accuracy check at work.
    print(
        "\n[4] diagnostics of the sweep's matrices (one batched call each) and the backward error"
    )
    ce = klujax.condest(Ai, Aj, Ax, n)
    sign, logdet = klujax.slogdet(Ai, Aj, Ax, n)
    ref_sign, ref_logdet = jnp.linalg.slogdet(dense(Ai, Aj, Ax, n))
    check(
        "slogdet vs jnp.linalg.slogdet", relerr(logdet, ref_logdet) + relerr(sign, ref_sign), 1e-10
    )
    A_np = np.asarray(dense(Ai, Aj, Ax, n))
    x_np, b_np = np.asarray(x), np.broadcast_to(np.asarray(b), (n_freq, n))
    resid = np.abs(b_np - np.einsum("lij,lj->li", A_np, x_np)).max(axis=1)
    berr = resid / (np.abs(A_np).sum(axis=2).max(axis=1) * np.abs(x_np).max(axis=1) + 1)
    check("worst backward error of the sweep (target 1e-14)", float(berr.max()), 1e-13)
    print(
        f"  condest from {float(ce.min()):.1e} to {float(ce.max()):.1e} over the sweep; "
        f"refinement steps so far: {klujax.cache_info()['refine_steps']}, "
        f"fresh-pivot fallbacks: {klujax.cache_info()['refactor_fallbacks']}, "
        f"loose-pivot tightenings: {klujax.cache_info()['tightenings']}"
    )

    # 5. A fill-heavy matrix: "auto" hands it to UMFPACK where this build has it.
    Ri, Rj, Rx, nr = fill_heavy(1000)
    br = jnp.ones(nr)
    ref = jnp.linalg.solve(dense(Ri, Rj, jnp.asarray(Rx), nr), br)
    chosen = klujax._klujax.analysis_info(Ri, Rj, nr, klujax.KLUOptions().as_attribute())
    print(
        f"\n[5] fill-heavy random unsymmetric matrix (n={nr}, nnz={len(Ri)}): "
        f"method='auto' chose {chosen['method']!r} (estimated {chosen['flops']:.2g} flops, "
        f"{chosen['flops'] / max(chosen['lu_nnz'], 1):.0f} per factor entry)"
    )
    solvers = {}
    for method in klujax.methods():
        opts = klujax.KLUOptions(method=method)  # type: ignore[arg-type]
        f = jax.jit(lambda a, opts=opts: klujax.solve(Ri, Rj, a, br, options=opts))
        check(f"method={method!r} vs jnp.linalg.solve", relerr(f(jnp.asarray(Rx)), ref), 1e-9)
        solvers[method] = f
    times, per_round = time_paired(solvers, lambda k: jnp.asarray(Rx * (1 + 1e-4 * (k + 1))))
    print(
        "  time per solve with new values: "
        + ", ".join(f"{m} {t * 1e3:.2f} ms" for m, t in times.items())
        + (
            f" (umfpack/klu {paired_ratio(per_round, 'umfpack', 'klu')}; BLAS: {klujax.blas_library()})"
            if "umfpack" in times
            else " (UMFPACK not built in)"
        )
    )

    info = klujax.cache_info()
    print(
        f"\nnative cache: {info['patterns']} patterns, {info['numeric_sets']} kept factorizations, "
        f"{info['bytes'] / 2**20:.1f} MiB of {info['limit_bytes'] / 2**20:.0f} MiB"
    )
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
