"""DC operating point of a diode-clamped resistor mesh: optimistix Newton + the KLU solver.

The circuit is an ``nx x ny`` mesh of resistors ``R`` (a crude power-grid or substrate
model). A current source with a shunt resistance drives the corner node 0, a load
draws current at the opposite corner, and every node has a leak conductance and a
diode clamp to ground (``i = Is (exp(v / Vt) - 1)``). Kirchhoff's current law gives

    F(v) = G v + Is (exp(v / Vt) - 1) - i_src = 0,

whose Jacobian ``G + diag(Is / Vt exp(v / Vt))`` has the sparsity pattern of ``G``.

``optimistix.Newton`` hands its linear solver the Jacobian as a
``lineax.FunctionLinearOperator`` (a linearisation of ``F``). ``klujax.lineax.KLU`` given
that pattern recovers the Jacobian's values from a handful of JVPs (one per colour of a
column colouring: 7 for this mesh, whatever its size) and solves with KLU. The
same Newton iteration with lineax's dense ``LU`` is the reference: both must take the
same number of steps to the same answer. Newton's steps are clipped to ``v <= 0.9 V``
(voltage limiting), through optimistix's ``upper`` option.

The operating point is then differentiated w.r.t. the source current: optimistix
applies the implicit function theorem, ``dv/dp = -J^-1 dF/dp``, with KLU again as the
adjoint's linear solver (a transposed solve in reverse mode), and the result is checked
against the dense adjoint.

Run it with ``python examples/optimistix_dc.py`` (needs ``pip install "klujax[lineax]"``).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import klujax
import klujax.lineax as klx
from klujax._compat import enable_x64

VT = 0.025852  # thermal voltage at 300 K [V]
IS = 1e-14  # diode saturation current [A]
V_MAX = 0.9  # Newton iterates are clipped to at most this voltage [V]


class Mesh(NamedTuple):
    """The conductance matrix G in COO form and the fixed current injections."""

    Ai: jax.Array  # (n_nz,) rows of G (resistor stamps + shunts on the diagonal)
    Aj: jax.Array  # (n_nz,) columns
    Gx: jax.Array  # (n_nz,) values (duplicates add up)
    i_src: jax.Array  # (n,) unit source pattern [A per unit of the source parameter]
    i_load: jax.Array  # (n,) the load's current [A]


def diode_mesh(nx: int, ny: int, *, r: float = 10.0, r_shunt: float = 100.0,
               g_leak: float = 1e-4, i_load: float = 5e-3) -> Mesh:
    """Stamps an ``nx x ny`` resistor mesh with a source shunt at node 0."""
    idx = np.arange(nx * ny).reshape(nx, ny)
    a = np.concatenate([idx[:-1, :].ravel(), idx[:, :-1].ravel()])  # one end of each resistor
    b = np.concatenate([idx[1:, :].ravel(), idx[:, 1:].ravel()])  # the other end
    g = np.full(a.shape, 1.0 / r)
    n = nx * ny
    diag = np.arange(n)
    shunt = np.full(n, g_leak)
    shunt[0] += 1.0 / r_shunt
    Ai = np.concatenate([a, b, a, b, diag])
    Aj = np.concatenate([a, b, b, a, diag])
    Gx = np.concatenate([g, g, -g, -g, shunt])
    src = np.zeros(n)
    src[0] = 1.0
    load = np.zeros(n)
    load[-1] = i_load
    return Mesh(jnp.asarray(Ai, jnp.int32), jnp.asarray(Aj, jnp.int32), jnp.asarray(Gx),
                jnp.asarray(src), jnp.asarray(load))


def residual(v: jax.Array, args: tuple[Mesh, jax.Array]) -> jax.Array:
    """KCL at every node for a source current ``i0`` [A]: zero at the operating point."""
    mesh, i0 = args
    return (klujax.dot(mesh.Ai, mesh.Aj, mesh.Gx, v) + IS * jnp.expm1(v / VT)
            - i0 * mesh.i_src + mesh.i_load)


def operating_point(mesh: Mesh, i0: jax.Array, linear_solver: lx.AbstractLinearSolver,
                    *, tol: float = 1e-12) -> optx.Solution:
    solver = optx.Newton(rtol=tol, atol=tol, linear_solver=linear_solver)
    v0 = jnp.zeros(mesh.i_src.shape[0])
    return optx.root_find(residual, solver, v0, (mesh, i0), max_steps=100,
                          options={"upper": jnp.full_like(v0, V_MAX)},
                          adjoint=optx.ImplicitAdjoint(linear_solver=linear_solver))


def main(nx: int = 12, ny: int = 12) -> dict[str, Any]:
    """Solves the mesh with KLU and with dense LU; returns the agreement figures."""
    with enable_x64(True):
        mesh = diode_mesh(nx, ny)
        i0 = jnp.asarray(0.1)  # 100 mA into node 0
        klu = klx.KLU(pattern=(np.asarray(mesh.Ai), np.asarray(mesh.Aj)))
        dense = lx.LU()

        solve = jax.jit(operating_point, static_argnums=2)
        t0 = time.perf_counter()
        sol = solve(mesh, i0, klu)
        v = sol.value.block_until_ready()
        seconds = time.perf_counter() - t0
        sol_dense = solve(mesh, i0, dense)
        v_dense = sol_dense.value

        # d(voltage at the load) / d(source current): the implicit function theorem
        load_v = lambda i0, ls: operating_point(mesh, i0, ls).value[-1]
        dload = jax.jit(jax.grad(load_v), static_argnums=1)
        g, g_dense = dload(i0, klu), dload(i0, dense)
        h = 1e-6
        g_fd = (load_v(i0 + h, klu) - load_v(i0 - h, klu)) / (2 * h)

        res = residual(v, (mesh, i0))
        return {
            "n": nx * ny,
            "colours": klu.pattern.n_colours,
            "successful": bool(sol.result == optx.RESULTS.successful),
            "steps": int(sol.stats["num_steps"]),
            "steps_dense": int(sol_dense.stats["num_steps"]),
            "residual": float(jnp.max(jnp.abs(res))),  # [A]
            "max_abs_diff_dense": float(jnp.max(jnp.abs(v - v_dense))),  # [V]
            "v_source_node": float(v[0]),
            "v_load_node": float(v[-1]),
            "dvload_di0": float(g),  # [V/A]
            "grad_relative_diff_dense": float(abs(g - g_dense) / abs(g_dense)),
            "grad_relative_diff_fd": float(abs(g - g_fd) / abs(g)),
            "seconds_klu_first_call": seconds,  # includes compilation
        }


if __name__ == "__main__":
    out = main()
    print(f"diode-clamped resistor mesh with {out['n']} nodes "
          f"(Jacobian values from {out['colours']} JVPs per Newton step)")
    print(f"  optimistix.Newton + klujax KLU: {out['steps']} steps, "
          f"max |F(v)| = {out['residual']:.1e} A, "
          f"{'converged' if out['successful'] else 'NOT converged'}")
    print(f"  v[source] = {out['v_source_node']:.4f} V, v[load] = {out['v_load_node']:.4f} V")
    print(f"  dense lineax.LU reference: {out['steps_dense']} steps, "
          f"max |dv| = {out['max_abs_diff_dense']:.1e} V")
    print(f"  d v[load] / d i0 = {out['dvload_di0']:.4f} V/A: relative difference "
          f"{out['grad_relative_diff_dense']:.1e} to dense, "
          f"{out['grad_relative_diff_fd']:.1e} to finite differences")
