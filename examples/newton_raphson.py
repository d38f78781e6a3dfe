"""Newton-Raphson on a nonlinear circuit with klujax.

The circuit is a ladder of ``n`` nodes: a 5 V source with a 1 kOhm series resistance
drives node 0, a 2 Ohm resistor joins each node to the next, and every node has a
diode (``i = Is (exp(v / Vt) - 1)``) and a small leak conductance to ground. Kirchhoff's
current law at every node gives the nonlinear system ``F(v) = 0`` with

    F(v) = G v + Is (exp(v / Vt) - 1) - i_src,
    J(v) = G + diag(Is / Vt * exp(v / Vt)).

The Jacobian's sparsity pattern never changes, only its values do: the pattern is
analysed once, outside the loop, and each iteration only refactors (KLU keeps the pivot
order and the memory) and solves. The matrix is assembled from "stamps" the way circuit
simulators do it: the linear part and the diode conductances are separate COO entries
on the same diagonal positions, and klujax adds duplicates up.

Three solvers run the same damped Newton iteration and must agree:

* ``newton_klujax``: a Python loop around a jitted step that uses ``klujax.refactor`` +
  ``klujax.solve_with_numeric`` with handles created (and freed) outside ``jit``;
* ``newton_while_loop``: the whole iteration inside one ``jax.lax.while_loop`` using
  ``klujax.solve_with_symbol`` (no numeric handle to manage);
* ``newton_dense``: the reference, with a dense Jacobian and ``jnp.linalg.solve``.

Run it with ``python examples/newton_raphson.py``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import klujax
from klujax._compat import enable_x64

VT = 0.025852  # thermal voltage at 300 K [V]
IS = 1e-14  # diode saturation current [A]
DV_MAX = 0.1  # largest voltage change per Newton step [V] (simple damping)


class Circuit(NamedTuple):
    """The diode ladder as arrays (a pytree, so it can be passed to jitted functions)."""

    Ai: jax.Array  # (n_nz,) rows of the Jacobian: linear stamps, then one diode per node
    Aj: jax.Array  # (n_nz,) columns
    lin_i: jax.Array  # rows of the linear part G alone
    lin_j: jax.Array  # columns of the linear part G alone
    lin_x: jax.Array  # values of G
    i_src: jax.Array  # (n,) source current injected into each node [A]


def diode_ladder(n: int, *, r_series: float = 2.0, r_source: float = 1e3,
                 v_source: float = 5.0, g_leak: float = 1e-4) -> Circuit:
    """Builds the COO stamps of the ladder (duplicates on the diagonal on purpose)."""
    k = np.arange(n - 1)
    g = 1.0 / r_series
    # A resistor between nodes a and b stamps +g at (a, a), (b, b) and -g at (a, b), (b, a).
    lin_i = np.concatenate([k, k + 1, k, k + 1, np.arange(n)])
    lin_j = np.concatenate([k, k + 1, k + 1, k, np.arange(n)])
    shunt = np.full(n, g_leak)
    shunt[0] += 1.0 / r_source  # the source's series resistance, as a Norton equivalent
    lin_x = np.concatenate([np.full(n - 1, g), np.full(n - 1, g),
                            np.full(n - 1, -g), np.full(n - 1, -g), shunt])
    i_src = np.zeros(n)
    i_src[0] = v_source / r_source
    diag = np.arange(n)
    return Circuit(
        Ai=jnp.asarray(np.concatenate([lin_i, diag]), jnp.int32),
        Aj=jnp.asarray(np.concatenate([lin_j, diag]), jnp.int32),
        lin_i=jnp.asarray(lin_i, jnp.int32),
        lin_j=jnp.asarray(lin_j, jnp.int32),
        lin_x=jnp.asarray(lin_x),
        i_src=jnp.asarray(i_src),
    )


def residual(c: Circuit, v: jax.Array) -> jax.Array:
    """KCL: the net current leaving every node (zero at the solution)."""
    return klujax.dot(c.lin_i, c.lin_j, c.lin_x, v) + IS * jnp.expm1(v / VT) - c.i_src


def jacobian_values(c: Circuit, v: jax.Array) -> jax.Array:
    """The Jacobian's COO values, in the order of ``c.Ai``/``c.Aj``."""
    return jnp.concatenate([c.lin_x, IS / VT * jnp.exp(v / VT)])


def _damped(dv: jax.Array) -> jax.Array:
    return jnp.clip(dv, -DV_MAX, DV_MAX)


#== 1. Python loop, jitted step: analyze once, factor once, refactor every iteration ==#

@jax.jit
def _klujax_step(c: Circuit, v: jax.Array, numeric: Any, symbolic: Any) -> tuple[jax.Array, ...]:
    F = residual(c, v)
    # refactor updates the native factorization in place and returns its handle; the solve
    # must consume that *returned* handle so that it is ordered after the refactorization.
    numeric = klujax.refactor(c.Ai, c.Aj, jacobian_values(c, v), numeric, symbolic)
    dv = klujax.solve_with_numeric(numeric, -F, symbolic)
    dv = _damped(dv)
    return v + dv, jnp.max(jnp.abs(F)), jnp.max(jnp.abs(dv))


def newton_klujax(c: Circuit, v0: jax.Array, *, tol: float = 1e-10,
                  max_iter: int = 100) -> tuple[jax.Array, int]:
    """Damped Newton; returns the solution and the number of iterations taken."""
    n = v0.shape[0]
    # Handles are created outside jit, so Python owns them and the with-block frees them.
    with klujax.analyze(c.Ai, c.Aj, n) as symbolic, \
            klujax.factor(c.Ai, c.Aj, jacobian_values(c, v0), symbolic) as numeric:
        v = v0
        for it in range(1, max_iter + 1):
            v, f_max, dv_max = _klujax_step(c, v, numeric, symbolic)
            if float(dv_max) < tol:  # float() waits for the step, before the handles go
                return v, it
    return v, max_iter


#== 2. The whole iteration in one lax.while_loop with solve_with_symbol ==#

@jax.jit
def _newton_while_loop(c: Circuit, v0: jax.Array, symbolic: Any, tol: float,
                       max_iter: int) -> tuple[jax.Array, jax.Array]:
    def cond(state: tuple[jax.Array, ...]) -> jax.Array:
        _, it, dv_max = state
        return (it < max_iter) & (dv_max >= tol)

    def body(state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        v, it, _ = state
        # Factor (by refactoring a cached numeric object of this pattern) and solve.
        dv = _damped(klujax.solve_with_symbol(c.Ai, c.Aj, jacobian_values(c, v),
                                              -residual(c, v), symbolic))
        return v + dv, it + 1, jnp.max(jnp.abs(dv))

    v, it, _ = jax.lax.while_loop(cond, body, (v0, jnp.asarray(0), jnp.asarray(jnp.inf, v0.dtype)))
    return v, it


def newton_while_loop(c: Circuit, v0: jax.Array, *, tol: float = 1e-10,
                      max_iter: int = 100) -> tuple[jax.Array, int]:
    with klujax.analyze(c.Ai, c.Aj, v0.shape[0]) as symbolic:
        v, it = _newton_while_loop(c, v0, symbolic, tol, max_iter)
        v.block_until_ready()
    return v, int(it)


#== 3. Dense reference ==#

@jax.jit
def _dense_step(c: Circuit, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = v.shape[0]
    J = jnp.zeros((n, n), v.dtype).at[c.Ai, c.Aj].add(jacobian_values(c, v))
    dv = _damped(jnp.linalg.solve(J, -residual(c, v)))
    return v + dv, jnp.max(jnp.abs(dv))


def newton_dense(c: Circuit, v0: jax.Array, *, tol: float = 1e-10,
                 max_iter: int = 100) -> tuple[jax.Array, int]:
    v = v0
    for it in range(1, max_iter + 1):
        v, dv_max = _dense_step(c, v)
        if float(dv_max) < tol:
            return v, it
    return v, max_iter


def _x64() -> contextlib.AbstractContextManager:
    """Double precision for the duration of the example (jax's own scoped switch)."""
    return enable_x64(True)


def main(n: int = 200, *, tol: float = 1e-10) -> dict[str, Any]:
    """Solves the ladder three ways and returns the convergence and agreement figures."""
    with _x64():
        c = diode_ladder(n)
        v0 = jnp.zeros(n)

        t0 = time.perf_counter()
        v, iterations = newton_klujax(c, v0, tol=tol)
        v.block_until_ready()
        t_klujax = time.perf_counter() - t0

        v_loop, iterations_loop = newton_while_loop(c, v0, tol=tol)
        v_dense, iterations_dense = newton_dense(c, v0, tol=tol)

        res = residual(c, v)
        scale = float(jnp.max(jnp.abs(c.i_src)))
        return {
            "n": n,
            "iterations": iterations,
            "converged": bool(iterations < 100 and float(jnp.max(jnp.abs(res))) < 1e-9 * scale),
            "residual": float(jnp.max(jnp.abs(res))),  # [A]
            "relative_residual": float(jnp.max(jnp.abs(res))) / scale,
            "iterations_dense": iterations_dense,
            "max_abs_diff_dense": float(jnp.max(jnp.abs(v - v_dense))),  # [V]
            "iterations_while_loop": iterations_loop,
            "max_abs_diff_while_loop": float(jnp.max(jnp.abs(v - v_loop))),
            "v_first": float(v[0]),
            "v_last": float(v[-1]),
            "monotone": bool(jnp.all(jnp.diff(v) <= 0)),
            "seconds_klujax_loop": t_klujax,  # includes compilation
        }


if __name__ == "__main__":
    out = main()
    print(f"diode ladder with {out['n']} nodes")
    print(f"  klujax (analyze once, refactor per step): {out['iterations']} iterations, "
          f"max |F(v)| = {out['residual']:.2e} A (relative {out['relative_residual']:.1e})")
    print(f"  node voltages: v[0] = {out['v_first']:.4f} V ... v[-1] = {out['v_last']:.4f} V")
    print(f"  lax.while_loop + solve_with_symbol: {out['iterations_while_loop']} iterations, "
          f"max |dv| vs loop = {out['max_abs_diff_while_loop']:.1e} V")
    print(f"  dense jnp.linalg.solve reference:   {out['iterations_dense']} iterations, "
          f"max |dv| vs klujax = {out['max_abs_diff_dense']:.1e} V")
    print("  converged" if out["converged"] else "  NOT converged")
