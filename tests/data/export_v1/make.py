"""Writes the golden serialized exports that tests/test_export.py must keep running.

Made once, with the oldest supported jax (0.6.0), and never regenerated for a change in
klujax: they call version-1 FFI targets, and a versioned target never changes meaning.
Each ``<name>.npz`` holds the serialized export (``blob``), its arguments (``arg0``...)
and the dense reference results (``want0``...). Run from the repository root::

    python tests/data/export_v1/make.py
"""

from __future__ import annotations

import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from jax import export  # noqa: E402

import klujax  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from helpers import dense, make_system, random_array  # noqa: E402

N, L = 6, 3
HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    Ai, Aj, Ax = make_system(N, n_lhs=L, dtype=np.complex128, seed=3)
    Ax2 = Ax * (1.5 - 0.25j)
    b = random_array((L, N), np.complex128, seed=4)
    A, A2 = dense(Ai, Aj, Ax, N), dense(Ai, Aj, Ax2, N)
    x = np.linalg.solve(A, b[..., None])[..., 0]
    x2 = np.linalg.solve(A2, b[..., None])[..., 0]
    Ar, br = A.real, b.real
    xr = np.linalg.solve(Ar, br[..., None])[..., 0]

    def loss(Ax: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum(klujax.solve(Ai, Aj, Ax, b) ** 2)

    def ref_loss(Ax: jax.Array, b: jax.Array) -> jax.Array:
        A = jnp.zeros((L, N, N), Ax.dtype).at[:, Ai, Aj].add(Ax)
        return jnp.sum(jnp.linalg.solve(A, b[..., None]) ** 2)

    def split(Ax: jax.Array, Ax2: jax.Array, b: jax.Array) -> tuple:
        sym = klujax.analyze(Ai, Aj, N)
        num = klujax.factor(Ai, Aj, Ax, sym)
        x1 = klujax.solve_with_numeric(num, b, sym)
        num = klujax.refactor(Ai, Aj, Ax2, num, sym, dependency=x1)
        x2 = klujax.solve_with_numeric(num, b, sym)
        x3 = klujax.solve_with_symbol(Ai, Aj, Ax, b, sym)
        freed = klujax.free_numeric(num, dependency=(x2, x3))
        return x1, x2, x3, freed + klujax.free_symbolic(sym, dependency=(x2, x3, freed))

    cases = {
        "solve_f64": (lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), (Ax.real, br), (xr,)),
        "solve_c128": (lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), (Ax, b), (x,)),
        "dot_c128": (lambda Ax, x: klujax.dot(Ai, Aj, Ax, x), (Ax, b), ((A @ b[..., None])[..., 0],)),
        "grad_f64": (jax.grad(loss, argnums=(0, 1)), (Ax.real, br),
                     tuple(np.asarray(g) for g in jax.grad(ref_loss, argnums=(0, 1))(Ax.real, br))),
        "split_c128": (split, (Ax, Ax2, b), (x, x2, x, np.int32(L + 1))),
    }
    for name, (fn, args, want) in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = export.export(jax.jit(fn), disabled_checks=klujax.export_safety_checks())(*args)
        blob = np.frombuffer(bytes(exp.serialize()), np.uint8)
        arrays = {"blob": blob, **{f"arg{i}": a for i, a in enumerate(args)},
                  **{f"want{i}": np.asarray(w) for i, w in enumerate(want)}}
        np.savez_compressed(os.path.join(HERE, f"{name}.npz"), jax_version=jax.__version__, **arrays)
        print(name, blob.size, "bytes")


if __name__ == "__main__":
    main()
