"""klujax's UMFPACK paths against raw UMFPACK calls in the same process.

    KLUJAX_NUM_THREADS=1 .venv/bin/python benchmarks/umfpack_raw.py [--rounds 11]

Per random unsymmetric system (benchmarks/systems.py; UMFPACK's unsymmetric strategy,
the plan klujax gives such patterns), interleaved and shuffled rounds of:
* ``new``: ``klujax.solve(..., method="umfpack")`` with new values every call (factor +
  checked solve, through jit and the FFI);
* ``raw_new``: ``umfpack_di_numeric`` + ``umfpack_di_wsolve`` through ctypes on the same
  values, with klujax's control settings for new values (pivot tolerance 0.1, max
  scaling, no UMFPACK refinement), the previous numeric object freed: the floor of
  ``new``, which also checks its answer and refines it where needed;
* ``raw_ir``: the same with UMFPACK's default settings, its own iterative refinement
  included (``Control[UMFPACK_IRSTEP] = 2``): what a binding that keeps UMFPACK's
  defaults (umfpack-jax) pays with this UMFPACK and BLAS;
* ``same``: ``klujax.solve`` with the same values and a new ``b`` (a kept factorization:
  after 8 columns, klujax's own triangular solves, docs/solvers.md), on a second pattern
  of the same kind (so that ``new`` does not evict its factorization);
* ``raw_same``: ``umfpack_di_wsolve`` with one kept numeric object of that matrix.
Reports per-call medians [min, max] over rounds (wall and process CPU time; everything
runs on one thread) and the per-round paired ratios new/raw_new and same/raw_same
(CPU), median [min, max]. Needs the system UMFPACK (libumfpack.so.5 or .6) and a klujax
built with UMFPACK.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
from pathlib import Path

import jax
import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))
import systems  # noqa: E402
from _timing import interleaved, q, ratio, setting  # noqa: E402

jax.config.update("jax_enable_x64", True)
import klujax  # noqa: E402

# umfpack.h Control/Info indices and values
PRL, STRATEGY, PIVOT_TOLERANCE, IRSTEP, SCALE = 0, 5, 3, 7, 16
STRATEGY_UNSYMMETRIC, SCALE_MAX = 1, 2


def load_umfpack() -> ctypes.CDLL:
    for name in ("libumfpack.so.6", "libumfpack.so.5", ctypes.util.find_library("umfpack")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                pass
    raise SystemExit("umfpack_raw.py: the system UMFPACK library was not found")


class Raw:
    """One system through ctypes: CSC arrays, klujax's control settings, a symbolic object."""

    def __init__(self, U: ctypes.CDLL, s: systems.System, defaults: bool = False):
        self.U, self.n = U, s.n
        self.b = np.asarray(s.b)
        mats = []
        for ax in np.asarray(s.Ax):
            A = sp.coo_matrix((ax, (s.Ai, s.Aj)), shape=(s.n, s.n)).tocsc()
            A.sum_duplicates()
            A.sort_indices()
            mats.append(A)
        self.ap = mats[0].indptr.astype(np.int32)
        self.ai = mats[0].indices.astype(np.int32)
        self.vals = [np.ascontiguousarray(A.data) for A in mats]
        self.ctl, self.info = np.zeros(20), np.zeros(90)
        U.umfpack_di_defaults(self.p(self.ctl))
        self.ctl[PRL] = 0
        if not defaults:
            self.ctl[IRSTEP], self.ctl[PIVOT_TOLERANCE] = 0, 0.1
            self.ctl[STRATEGY], self.ctl[SCALE] = STRATEGY_UNSYMMETRIC, SCALE_MAX
        self.sym = ctypes.c_void_p()
        if U.umfpack_di_symbolic(s.n, s.n, self.p(self.ap), self.p(self.ai), None, ctypes.byref(self.sym),
                                 self.p(self.ctl), self.p(self.info)) != 0:
            raise SystemExit("umfpack_di_symbolic failed")
        self.x, self.wi, self.wd = np.zeros(s.n), np.zeros(s.n, np.int32), np.zeros(5 * s.n)
        self.num = ctypes.c_void_p()

    @staticmethod
    def p(a: np.ndarray) -> ctypes.c_void_p:
        return a.ctypes.data_as(ctypes.c_void_p)

    def factor(self, k: int) -> None:  # replaces the kept numeric object
        old, self.num = self.num, ctypes.c_void_p()
        self.U.umfpack_di_numeric(self.p(self.ap), self.p(self.ai), self.p(self.vals[k]), self.sym,
                                  ctypes.byref(self.num), self.p(self.ctl), self.p(self.info))
        if old:
            self.U.umfpack_di_free_numeric(ctypes.byref(old))

    def solve(self, k: int, j: int) -> np.ndarray:  # values k (those factored), right-hand side j
        self.U.umfpack_di_wsolve(0, self.p(self.ap), self.p(self.ai), self.p(self.vals[k]), self.p(self.x),
                                 self.p(self.b[j]), self.num, self.p(self.ctl), self.p(self.info),
                                 self.p(self.wi), self.p(self.wd))
        return self.x


def variants(U: ctypes.CDLL, n: int, members: int = 16) -> dict:
    # `new` cycles through 16 value sets of one pattern (more than klujax keeps per
    # pattern); `same` uses another pattern, so that `new` never evicts its factorization.
    s, s1 = (systems.make_system("unsym", n, batch=members, seed=seed) for seed in (0, 1))
    o = klujax.KLUOptions(method="umfpack")
    f = jax.jit(lambda a, b: klujax.solve(s.Ai, s.Aj, a, b, options=o))
    f1 = jax.jit(lambda a, b: klujax.solve(s1.Ai, s1.Aj, a, b, options=o))
    # one device array per member, made once (indexing a stacked array would time a gather)
    ax, bx = ([jax.device_put(v) for v in np.asarray(a)] for a in (s.Ax, s.b))
    ax1, bx1 = jax.device_put(np.asarray(s1.Ax)[0]), [jax.device_put(v) for v in np.asarray(s1.b)]
    raw, raw_d, raw1 = Raw(U, s), Raw(U, s, defaults=True), Raw(U, s1)
    raw1.factor(0)
    st = {"k": 0}

    def nxt() -> int:
        st["k"] = (st["k"] + 1) % members
        return st["k"]

    def raw_new() -> np.ndarray:
        k = nxt()
        raw.factor(k)
        return raw.solve(k, k)

    def raw_ir() -> np.ndarray:
        k = nxt()
        raw_d.factor(k)
        return raw_d.solve(k, k)

    return {
        "new": lambda: (lambda k: f(ax[k], bx[k]))(nxt()),
        "raw_new": raw_new,
        "raw_ir": raw_ir,
        "same": lambda: f1(ax1, bx1[nxt()]),
        "raw_same": lambda: raw1.solve(0, nxt()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sizes", default="1000,3000")
    a = ap.parse_args()
    if "umfpack" not in klujax.methods():
        raise SystemExit("umfpack_raw.py: this klujax was built without UMFPACK")
    U = load_umfpack()
    cases = {int(n): variants(U, int(n)) for n in a.sizes.split(",")}
    before = klujax.cache_info()
    wall, cpu = interleaved(cases, a.rounds, a.reps)
    print(f"# klujax's UMFPACK paths vs raw UMFPACK in one process ({setting()}, "
          f"{a.rounds} rounds x {a.reps} calls; wall us, median [min, max] of round medians)\n")
    print("| system | new | raw numeric+solve | new/raw (CPU) | raw, UMFPACK defaults + IR | "
          "new/raw_ir (CPU) | same | raw solve | same/raw (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        print(f"| unsym-{c} | {q(wall[(c, 'new')])} | {q(wall[(c, 'raw_new')])} | "
              f"{ratio(cpu[(c, 'new')], cpu[(c, 'raw_new')])} | {q(wall[(c, 'raw_ir')])} | "
              f"{ratio(cpu[(c, 'new')], cpu[(c, 'raw_ir')])} | {q(wall[(c, 'same')])} | "
              f"{q(wall[(c, 'raw_same')])} | {ratio(cpu[(c, 'same')], cpu[(c, 'raw_same')])} |")
    after = klujax.cache_info()
    calls = a.rounds * (a.reps + 1) * 2 * len(cases)
    print(f"\nklujax refinement steps per klujax call: {(after['refine_steps'] - before['refine_steps']) / calls:.2f} "
          f"(the raw calls do not check their answers); factorizations copied for repeated solves: "
          f"{after['plain_factors'] - before['plain_factors']}")


if __name__ == "__main__":
    main()
