"""The accuracy table of docs/accuracy.md: worst errors per path, klujax vs scipy and dense.

    .venv/bin/python benchmarks/accuracy_table.py [--n 200] [--members 20] [--seed 0]

For each value family of tests/matrices.py (real and complex), the worst normwise
backward error (exact residuals) and forward error (against an iteratively refined
dense reference) over the members, for: a fresh klujax factorization per member, one
batched klujax.solve, sequential calls (pivot order reused across calls), the split
API's refactor + solve_with_numeric, the transposed solves of reverse mode (backward
error of A^T y = g), klujax with check=False (plain KLU), scipy's splu (SuperLU) and
dense LAPACK (numpy.linalg.solve). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg as spla

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import matrices  # noqa: E402

jax.config.update("jax_enable_x64", True)
import klujax  # noqa: E402

PATHS = ("fresh", "batch", "sequential", "refactor", "reverse", "check=False", "splu", "dense")


def solutions(Ai, Aj, Ax, n, b, g):
    """{path: (x (L, n), transpose?)} for every path."""
    L = Ax.shape[0]
    out = {}
    fresh = []
    for m in range(L):
        klujax.clear_cache()
        fresh.append(np.asarray(klujax.solve(Ai, Aj, Ax[m], b[m])))
    out["fresh"] = (np.stack(fresh), False)
    out["batch"] = (np.asarray(klujax.solve(Ai, Aj, Ax, b)), False)
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b))
    out["sequential"] = (np.stack([np.asarray(f(Ax[m], b[m])) for m in range(L)]), False)
    with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, Ax[0], sym) as num:
        xs = []
        for m in range(L):
            klujax.refactor(Ai, Aj, Ax[m], num, sym)
            xs.append(np.asarray(klujax.solve_with_numeric(num, b[m], sym)))
    out["refactor"] = (np.stack(xs), False)
    _, vjp = jax.vjp(lambda b: klujax.solve(Ai, Aj, Ax, b), jnp.asarray(b))
    out["reverse"] = (np.asarray(vjp(jnp.asarray(g))[0]), True)
    out["check=False"] = (np.asarray(klujax.solve(Ai, Aj, Ax, b, options=klujax.KLUOptions(check=False))), False)
    out["splu"] = (np.stack([spla.splu(matrices.to_scipy(Ai, Aj, Ax[m], n).tocsc()).solve(b[m])
                             for m in range(L)]), False)
    out["dense"] = (np.stack([np.linalg.solve(matrices.to_dense(Ai, Aj, Ax[m], n), b[m])
                              for m in range(L)]), False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(matrices.FAMILY_KINDS))
    a = ap.parse_args()
    print(f"Worst backward error / forward error over {a.members} members, n ~ {a.n} "
          f"(klujax {klujax.__version__}, KLU {klujax._klujax.klu_version}, seed {a.seed}).\n")
    print("| family | cond (max) | " + " | ".join(PATHS) + " |")
    print("|---|---|" + "---|" * len(PATHS))
    for kind in a.kinds.split(","):
        for cplx in (False, True):
            Ai, Aj, Ax, n = matrices.value_family(kind, n=a.n, n_members=a.members, seed=a.seed,
                                                  complex_=cplx)
            rng = np.random.default_rng(a.seed)
            b = rng.standard_normal((a.members, n)) + (1j * rng.standard_normal((a.members, n)) if cplx else 0)
            g = rng.standard_normal((a.members, n)) + (1j * rng.standard_normal((a.members, n)) if cplx else 0)
            conds, refs, refs_t = [], [], []
            for m in range(a.members):
                A = matrices.to_scipy(Ai, Aj, Ax[m], n)
                conds.append(matrices.cond_inf(A))
                refs.append(matrices.reference_solve(A, b[m]))
                refs_t.append(matrices.reference_solve(A.T, g[m]))
            cells = []
            for path, (x, t) in solutions(Ai, Aj, Ax, n, b, g).items():
                rhs, ref = (g, refs_t) if t else (b, refs)
                be = max(matrices.backward_error(matrices.to_scipy(Ai, Aj, Ax[m], n).T if t else
                                                 matrices.to_scipy(Ai, Aj, Ax[m], n), x[m], rhs[m])
                         for m in range(a.members))
                fe = max(matrices.forward_error(x[m], ref[m]) for m in range(a.members))
                cells.append(f"{be:.0e} / {fe:.0e}")
            print(f"| {kind} {'c128' if cplx else 'f64'} | {max(conds):.0e} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
