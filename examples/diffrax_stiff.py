"""A stiff reaction-diffusion system with diffrax's implicit Kvaerno5 and the KLU solver.

The one-dimensional Brusselator (Hairer & Wanner, *Solving ODEs II*, IV.1), discretised
on ``N`` interior grid points of ``[0, 1]`` with spacing ``dx = 1 / (N + 1)``:

    u_i' = 1 + u_i^2 v_i - 4 u_i + alpha (u_{i-1} - 2 u_i + u_{i+1}) / dx^2,
    v_i' = 3 u_i - u_i^2 v_i     + alpha (v_{i-1} - 2 v_i + v_{i+1}) / dx^2,

with ``alpha = 1/50``, ``u = 1, v = 3`` on the boundary and ``u(x, 0) = 1 + sin(2 pi x)``,
``v(x, 0) = 3``, for ``t`` in ``[0, 10]``. Diffusion makes it stiff (the largest
eigenvalue grows like ``4 alpha / dx^2``): an explicit solver's step is bounded by
stability, not accuracy. The state is ``y = [u; v]``; the diffusion operator is a sparse
matrix applied with ``klujax.dot``.

``diffrax.Kvaerno5`` (an implicit ESDIRK method with adaptive steps) solves a nonlinear
system per stage with its chord root finder ``diffrax.VeryChord``, whose linear solver
here is ``klujax.lineax.KLU``. The stage Jacobian ``I - h gamma df/dy`` has the pattern of
the two tridiagonal Laplacians plus the ``u``-``v`` coupling on the two off-diagonal
blocks; given it, ``KLU`` recovers the values from a few JVPs (one per column colour),
factors once per Jacobian and reuses that factorization for every chord iteration
(klujax's native cache, keyed by the values). The same integration with lineax's dense
``LU`` is the reference: it must take the same steps and agree. The explicit ``Tsit5``
at the same tolerances shows the stiffness (several times more steps).

Run it with ``python examples/diffrax_stiff.py`` (needs ``pip install "klujax[lineax]"``).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

import klujax
import klujax.lineax as klx
from klujax._compat import enable_x64

ALPHA = 1.0 / 50.0
T1 = 10.0
TOL = 1e-6


class Brusselator(NamedTuple):
    """The diffusion matrix of y = [u; v] in COO form and its boundary terms."""

    Ai: jax.Array  # (n_nz,) rows of the block-diagonal Laplacian (times alpha / dx^2)
    Aj: jax.Array  # (n_nz,) columns
    Lx: jax.Array  # (n_nz,) values
    boundary: jax.Array  # (2 N,) the Dirichlet values' contribution


def brusselator(N: int) -> tuple[Brusselator, jax.Array, tuple[np.ndarray, np.ndarray]]:
    """The problem, its initial state and the sparsity pattern of its Jacobian."""
    c = ALPHA * (N + 1) ** 2
    i = np.arange(N)
    li = np.concatenate([i, i[1:], i[:-1]])
    lj = np.concatenate([i, i[:-1], i[1:]])
    lap = c * np.concatenate([np.full(N, -2.0), np.ones(N - 1), np.ones(N - 1)])
    Ai, Aj, Lx = (np.concatenate([li, li + N]), np.concatenate([lj, lj + N]),
                  np.concatenate([lap, lap]))
    boundary = np.zeros(2 * N)
    boundary[[0, N - 1]] = c * 1.0  # u = 1 at both ends
    boundary[[N, 2 * N - 1]] = c * 3.0  # v = 3 at both ends
    x = (i + 1) / (N + 1)
    y0 = np.concatenate([1.0 + np.sin(2 * np.pi * x), np.full(N, 3.0)])
    # The reaction couples u_i and v_i: the diagonals of the off-diagonal blocks.
    pattern = (np.concatenate([Ai, i, i + N]), np.concatenate([Aj, i + N, i]))
    problem = Brusselator(jnp.asarray(Ai, jnp.int32), jnp.asarray(Aj, jnp.int32),
                          jnp.asarray(Lx), jnp.asarray(boundary))
    return problem, jnp.asarray(y0), pattern


def vector_field(t: jax.Array, y: jax.Array, p: Brusselator) -> jax.Array:
    N = y.shape[0] // 2
    u, v = y[:N], y[N:]
    uuv = u * u * v
    reaction = jnp.concatenate([1.0 + uuv - 4.0 * u, 3.0 * u - uuv])
    return reaction + klujax.dot(p.Ai, p.Aj, p.Lx, y) + p.boundary


def simulate(p: Brusselator, y0: jax.Array, solver: diffrax.AbstractSolver) -> diffrax.Solution:
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver, t0=0.0, t1=T1, dt0=1e-3, y0=y0, args=p,
        saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, T1, 11)),
        stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
        max_steps=20_000,
    )


def kvaerno5(linear_solver: lx.AbstractLinearSolver) -> diffrax.Kvaerno5:
    """Kvaerno5 whose chord root finder uses ``linear_solver`` (tolerances: the controller's)."""
    root_finder = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)(
        linear_solver=linear_solver)
    return diffrax.Kvaerno5(root_finder=root_finder)


def main(N: int = 64) -> dict[str, Any]:
    """Integrates with KLU, with dense LU and explicitly; returns the agreement figures."""
    with enable_x64(True):
        p, y0, pattern = brusselator(N)
        klu = klx.KLU(pattern=pattern)
        run = jax.jit(simulate, static_argnums=2)

        t0 = time.perf_counter()
        sol = run(p, y0, kvaerno5(klu))
        ys = sol.ys.block_until_ready()
        seconds = time.perf_counter() - t0
        sol_dense = run(p, y0, kvaerno5(lx.LU()))
        sol_explicit = run(p, y0, diffrax.Tsit5())
        return {
            "n": 2 * N,
            "colours": klu.pattern.n_colours,
            "successful": bool(sol.result == diffrax.RESULTS.successful),
            "all_finite": bool(jnp.all(jnp.isfinite(ys))),
            "steps": int(sol.stats["num_accepted_steps"]),
            "rejected_steps": int(sol.stats["num_rejected_steps"]),
            "steps_dense": int(sol_dense.stats["num_accepted_steps"]),
            "steps_explicit": int(sol_explicit.stats["num_accepted_steps"]),
            "relative_diff_dense": float(jnp.max(jnp.abs(ys - sol_dense.ys))
                                         / jnp.max(jnp.abs(ys))),
            "relative_diff_explicit": float(jnp.max(jnp.abs(ys - sol_explicit.ys))
                                            / jnp.max(jnp.abs(ys))),
            "u_mid_final": float(ys[-1, N // 2]),
            "seconds_klu_first_call": seconds,  # includes compilation
        }


if __name__ == "__main__":
    out = main()
    print(f"Brusselator, {out['n']} unknowns, Kvaerno5 over t in [0, {T1:g}]")
    print(f"  KLU (Jacobian from {out['colours']} JVPs): {out['steps']} accepted and "
          f"{out['rejected_steps']} rejected steps, "
          f"{'successful' if out['successful'] else 'NOT successful'}")
    print(f"  dense lineax.LU reference: {out['steps_dense']} steps, max relative difference "
          f"{out['relative_diff_dense']:.1e}")
    print(f"  explicit Tsit5: {out['steps_explicit']} steps, max relative difference "
          f"{out['relative_diff_explicit']:.1e}")
    print(f"  u(1/2, {T1:g}) = {out['u_mid_final']:.6f}")
