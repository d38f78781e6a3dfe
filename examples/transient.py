"""Transient simulation of an RC network with klujax: factor once, solve every step.

The network is an ``nx x ny`` grid of nodes, each with a capacitance ``C`` to ground,
joined to its neighbours by resistors ``R``. A voltage source with series resistance
``R_s`` drives the corner node 0 and a load conductance drains the opposite corner.
With the node voltages ``v``:

    C dv/dt + G v = e_0 u(t) / R_s.

Backward Euler with a fixed step ``h`` turns each step into a linear solve with the
*same* matrix:

    (C / h + G) v[k+1] = (C / h) v[k] + e_0 u(t[k+1]) / R_s.

So the matrix is analysed and factored once, outside the time loop, and every step of
the ``jax.lax.scan`` is only a pair of triangular solves (``klujax.solve_with_numeric``).
Three input waveforms (a step and two sines) are simulated at once as three right-hand
side columns, so every step solves for all of them with one call.

The example also differentiates the output energy w.r.t. the input samples: reverse
mode through ``solve_with_numeric`` is a transposed solve on the same factorization.
Everything is compared with a dense LU reference (``jax.scipy.linalg.lu_factor``).

Run it with ``python examples/transient.py``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import lu_factor, lu_solve

import klujax
from klujax._compat import enable_x64


class RCGrid(NamedTuple):
    """The backward-Euler system matrix in COO form plus the vectors of one step."""

    Ai: jax.Array  # (n_nz,) rows of C/h + G (resistor stamps + diagonal, duplicates summed)
    Aj: jax.Array  # (n_nz,) columns
    Ax: jax.Array  # (n_nz,) values
    c_over_h: jax.Array  # (n,) C / h
    inject: jax.Array  # (n,) e_0 / R_s: where (and how strongly) the source drives


def rc_grid(nx: int, ny: int, *, r: float = 1e3, c: float = 1e-9, r_source: float = 50.0,
            g_load: float = 1e-3, h: float = 5e-6) -> RCGrid:
    """Stamps the grid's conductances and the backward-Euler capacitor terms."""
    idx = np.arange(nx * ny).reshape(nx, ny)
    a = np.concatenate([idx[:-1, :].ravel(), idx[:, :-1].ravel()])  # one end of each resistor
    b = np.concatenate([idx[1:, :].ravel(), idx[:, 1:].ravel()])  # the other end
    g = np.full(a.shape, 1.0 / r)
    n = nx * ny
    diag = np.arange(n)
    shunt = np.full(n, c / h)  # the capacitors' backward-Euler conductance C/h
    shunt[0] += 1.0 / r_source
    shunt[-1] += g_load
    Ai = np.concatenate([a, b, a, b, diag])
    Aj = np.concatenate([a, b, b, a, diag])
    Ax = np.concatenate([g, g, -g, -g, shunt])
    inject = np.zeros(n)
    inject[0] = 1.0 / r_source
    return RCGrid(jnp.asarray(Ai, jnp.int32), jnp.asarray(Aj, jnp.int32), jnp.asarray(Ax),
                  jnp.full(n, c / h), jnp.asarray(inject))


def inputs(n_steps: int, h: float) -> jax.Array:
    """(n_steps, 3) source voltages: a 1 V step, and 1 V sines at 1 kHz and 5 kHz."""
    t = h * jnp.arange(1, n_steps + 1)
    return jnp.stack([jnp.ones_like(t), jnp.sin(2 * jnp.pi * 1e3 * t),
                      jnp.sin(2 * jnp.pi * 5e3 * t)], axis=1)


@jax.jit
def simulate(sys: RCGrid, u: jax.Array, numeric: Any, symbolic: Any) -> jax.Array:
    """Backward Euler from rest; returns every node's voltage at every step, (T, n, 3)."""
    def step(v: jax.Array, u_k: jax.Array) -> tuple[jax.Array, jax.Array]:
        rhs = sys.c_over_h[:, None] * v + sys.inject[:, None] * u_k[None, :]
        v = klujax.solve_with_numeric(numeric, rhs, symbolic)  # (n, n_rhs): one call
        return v, v

    v0 = jnp.zeros((sys.c_over_h.shape[0], u.shape[1]), u.dtype)
    return jax.lax.scan(step, v0, u)[1]


@jax.jit
def simulate_dense(sys: RCGrid, u: jax.Array) -> jax.Array:
    """The same with a dense LU factorization, factored once."""
    n = sys.c_over_h.shape[0]
    lu = lu_factor(jnp.zeros((n, n), u.dtype).at[sys.Ai, sys.Aj].add(sys.Ax))

    def step(v: jax.Array, u_k: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = lu_solve(lu, sys.c_over_h[:, None] * v + sys.inject[:, None] * u_k[None, :])
        return v, v

    v0 = jnp.zeros((n, u.shape[1]), u.dtype)
    return jax.lax.scan(step, v0, u)[1]


def output_energy(traces: jax.Array, h: float) -> jax.Array:
    """A scalar to differentiate: the energy delivered to the load, summed over inputs."""
    return h * jnp.sum(traces[:, -1, :] ** 2)


def _x64() -> contextlib.AbstractContextManager:
    """Double precision for the duration of the example (jax's own scoped switch)."""
    return enable_x64(True)


def main(nx: int = 16, ny: int = 16, n_steps: int = 400, h: float = 5e-6) -> dict[str, Any]:
    """Simulates the grid with klujax and with a dense reference; compares both."""
    with _x64():
        sys = rc_grid(nx, ny, h=h)
        u = inputs(n_steps, h)
        n = nx * ny

        # Analyse and factor once, outside jit: Python owns both handles and the
        # with-block frees them (after the results below have been computed).
        with klujax.analyze(sys.Ai, sys.Aj, n) as symbolic, \
                klujax.factor(sys.Ai, sys.Aj, sys.Ax, symbolic) as numeric:
            t0 = time.perf_counter()
            traces = simulate(sys, u, numeric, symbolic).block_until_ready()
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            simulate(sys, u, numeric, symbolic).block_until_ready()
            t_second = time.perf_counter() - t0

            # d(energy)/d(u): reverse mode transposes each step's solve into a
            # tsolve on the same factorization; nothing is refactored.
            grad = jax.grad(lambda u: output_energy(simulate(sys, u, numeric, symbolic), h))(u)
            grad = np.asarray(grad)

        traces_dense = simulate_dense(sys, u)
        grad_dense = jax.grad(lambda u: output_energy(simulate_dense(sys, u), h))(u)

        # After a long 1 V step the grid approaches its DC operating point G v = e_0 / R_s.
        G_x = sys.Ax - jnp.zeros_like(sys.Ax).at[-n:].set(sys.c_over_h)
        v_dc = klujax.solve(sys.Ai, sys.Aj, G_x, sys.inject)

        scale = float(jnp.max(jnp.abs(traces_dense)))
        return {
            "n": n,
            "n_steps": n_steps,
            "n_inputs": int(u.shape[1]),
            "max_abs_diff_dense": float(jnp.max(jnp.abs(traces - traces_dense))),  # [V]
            "relative_diff_dense": float(jnp.max(jnp.abs(traces - traces_dense))) / scale,
            "grad_relative_diff_dense": float(np.max(np.abs(grad - grad_dense))
                                              / np.max(np.abs(grad_dense))),
            "all_finite": bool(jnp.all(jnp.isfinite(traces)) and np.all(np.isfinite(grad))),
            "step_final_load_voltage": float(traces[-1, -1, 0]),
            "dc_load_voltage": float(v_dc[-1]),
            "seconds_first_call": t_first,  # includes compilation
            "seconds_second_call": t_second,
        }


if __name__ == "__main__":
    out = main()
    print(f"RC grid with {out['n']} nodes, {out['n_steps']} backward-Euler steps, "
          f"{out['n_inputs']} input waveforms")
    print(f"  klujax vs dense LU: max |dv| = {out['max_abs_diff_dense']:.1e} V "
          f"(relative {out['relative_diff_dense']:.1e})")
    print(f"  d(energy)/d(u) vs dense: relative difference {out['grad_relative_diff_dense']:.1e}")
    print(f"  step response at the load after {out['n_steps']} steps: "
          f"{out['step_final_load_voltage']:.4f} V (DC value {out['dc_load_voltage']:.4f} V)")
    print(f"  simulate: {out['seconds_first_call'] * 1e3:.0f} ms first call (with compilation), "
          f"{out['seconds_second_call'] * 1e3:.1f} ms second call")
