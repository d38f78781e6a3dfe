"""Reproduce the accuracy loss of pivot-order reuse in batched and repeated solves.

The bug report: a 200 x 200 random unsymmetric sparse system (about 5 nonzeros per
column, cond ~1e4), solved as a batch of 50 value sets in one ``klujax.solve`` and again
as 50 sequential ``solve`` calls, has a worst member with a normwise backward error of
6e-7 and a forward error of 6e-6, while a fresh factorization of that member gives 1e-12
and scipy's ``splu`` 4e-18.

For each value family (``tests/matrices.py``: ``value_family``) and seed this prints the
worst backward error / forward error over the members (and which member) of:

* ``batch``       one ``klujax.solve`` with ``Ax`` of shape (members, n_nz);
* ``sequential``  one ``klujax.solve`` call per member (cache kept between the calls);
* ``fresh``       the same with ``klujax.clear_cache()`` before every call, so that every
                  member is analysed and factored from scratch;
* ``splu``        ``scipy.sparse.linalg.splu`` per member.

With ``--raw-klu`` it also calls the system's SuiteSparse KLU directly (ctypes, no
klujax) to separate the two causes of error: a fresh ``klu_factor`` with the default
pivot tolerance 0.001 and with 1.0 (plain partial pivoting), and a simulation of the
reuse rule of klujax 0.6.0 (``src/driver.hpp`` at the time of the report: refactor with
the previous pivot order, keep it if ``klu_rcond`` >= 0.1 x that of the last fresh
factorization), printing for its worst member the rcond, the reference rcond and
``klu_rgrowth``.

Backward errors use exact residuals and forward errors an iteratively refined dense
reference (``tests/matrices.py``). Usage::

    .venv/bin/python benchmarks/accuracy_repro.py [--kinds random,pivot_trap] [--n 200]
        [--members 50] [--seeds 0,1,2] [--complex] [--raw-klu] [--klujax-path DIR]

``--klujax-path DIR`` imports the ``klujax`` package in DIR (e.g. an unpacked wheel of
another commit) instead of the installed one, to compare builds.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg as spla

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import matrices  # noqa: E402  (tests/matrices.py)

METHODS = ("batch", "sequential", "fresh", "splu")


def use_klujax_from(path: str) -> None:
    """Make ``import klujax`` load the package in ``path`` (bypassing an editable install)."""
    sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
    sys.path.insert(0, os.path.abspath(path))
    for name in [m for m in sys.modules if m == "klujax" or m.startswith("klujax.")]:
        del sys.modules[name]


# --------------------------------------------------------------------------- raw KLU


class _KluCommon(ctypes.Structure):
    """``klu_common`` of SuiteSparse KLU (klu.h, int32 version)."""

    _fields_ = [
        ("tol", ctypes.c_double), ("memgrow", ctypes.c_double),
        ("initmem_amd", ctypes.c_double), ("initmem", ctypes.c_double),
        ("maxwork", ctypes.c_double), ("btf", ctypes.c_int), ("ordering", ctypes.c_int),
        ("scale", ctypes.c_int), ("user_order", ctypes.c_void_p),
        ("user_data", ctypes.c_void_p), ("halt_if_singular", ctypes.c_int),
        ("status", ctypes.c_int), ("nrealloc", ctypes.c_int),
        ("structural_rank", ctypes.c_int), ("numerical_rank", ctypes.c_int),
        ("singular_col", ctypes.c_int), ("noffdiag", ctypes.c_int),
        ("flops", ctypes.c_double), ("rcond", ctypes.c_double), ("condest", ctypes.c_double),
        ("rgrowth", ctypes.c_double), ("work", ctypes.c_double),
        ("memusage", ctypes.c_size_t), ("mempeak", ctypes.c_size_t),
    ]


class RawKlu:
    """One pattern analysed by the system libklu; factor/refactor/solve its values."""

    _lib: Any = None

    @classmethod
    def lib(cls) -> Any:
        if cls._lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("klu") or "libklu.so")
            vp, ip = ctypes.c_void_p, ctypes.c_int
            lib.klu_defaults.argtypes = [vp]
            lib.klu_analyze.restype = vp
            lib.klu_analyze.argtypes = [ip, vp, vp, vp]
            lib.klu_free_symbolic.argtypes = [vp, vp]
            for pre in ("klu_", "klu_z_"):
                getattr(lib, pre + "factor").restype = vp
                getattr(lib, pre + "factor").argtypes = [vp, vp, vp, vp, vp]
                getattr(lib, pre + "refactor").argtypes = [vp, vp, vp, vp, vp, vp]
                getattr(lib, pre + "solve").argtypes = [vp, vp, ip, ip, vp, vp]
                getattr(lib, pre + "rcond").argtypes = [vp, vp, vp]
                getattr(lib, pre + "rgrowth").argtypes = [vp, vp, vp, vp, vp, vp]
                getattr(lib, pre + "free_numeric").argtypes = [vp, vp]
            cls._lib = lib
        return cls._lib

    def __init__(self, Ai: np.ndarray, Aj: np.ndarray, n: int, *, complex_: bool,
                 tol: float = 1e-3) -> None:
        self.lib()
        self.n, self.pre = n, ("klu_z_" if complex_ else "klu_")
        self.common = _KluCommon()
        self._lib.klu_defaults(ctypes.byref(self.common))
        self.common.tol = tol
        # CSC with the position of every COO entry (the generators' entries are unique)
        A = scipy.sparse.csc_matrix((np.arange(1.0, Ai.shape[0] + 1), (Ai, Aj)), shape=(n, n))
        A.sort_indices()
        self.ap = np.ascontiguousarray(A.indptr, np.int32)
        self.ai = np.ascontiguousarray(A.indices, np.int32)
        self.coo_of_csc = A.data.astype(np.int64) - 1
        self.sym = self._lib.klu_analyze(n, self.ap.ctypes.data, self.ai.ctypes.data,
                                         ctypes.byref(self.common))
        self.num: int | None = None
        self.dtype = np.complex128 if complex_ else np.float64

    def _f(self, name: str) -> Any:
        return getattr(self._lib, self.pre + name)

    def _vals(self, Ax: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(Ax)[self.coo_of_csc], self.dtype)

    def _rcond(self) -> float:
        self._f("rcond")(self.sym, self.num, ctypes.byref(self.common))
        return float(self.common.rcond)

    def factor(self, Ax: np.ndarray) -> float:
        """Fresh factorization (new pivot order); returns klu_rcond (0 if singular)."""
        self.free_numeric()
        v = self._vals(Ax)
        self.num = self._f("factor")(self.ap.ctypes.data, self.ai.ctypes.data, v.ctypes.data,
                                     self.sym, ctypes.byref(self.common))
        return self._rcond() if self.num else 0.0

    def refactor(self, Ax: np.ndarray) -> float:
        """New values, the pivot order of the last factor(); returns klu_rcond."""
        v = self._vals(Ax)
        ok = self._f("refactor")(self.ap.ctypes.data, self.ai.ctypes.data, v.ctypes.data,
                                 self.sym, self.num, ctypes.byref(self.common))
        return self._rcond() if ok else float("nan")

    def rgrowth(self, Ax: np.ndarray) -> float:
        """klu_rgrowth (reciprocal pivot growth, small = bad) of the current factors."""
        v = self._vals(Ax)
        self._f("rgrowth")(self.ap.ctypes.data, self.ai.ctypes.data, v.ctypes.data, self.sym,
                           self.num, ctypes.byref(self.common))
        return float(self.common.rgrowth)

    def solve(self, b: np.ndarray) -> np.ndarray:
        x = np.array(b, self.dtype, copy=True, order="C")
        self._f("solve")(self.sym, self.num, self.n, 1, x.ctypes.data, ctypes.byref(self.common))
        return x

    def free_numeric(self) -> None:
        if self.num:
            self._f("free_numeric")(ctypes.byref(ctypes.c_void_p(self.num)),
                                    ctypes.byref(self.common))
            self.num = None

    def __del__(self) -> None:
        try:
            self.free_numeric()
            if self.sym:
                self._lib.klu_free_symbolic(ctypes.byref(ctypes.c_void_p(self.sym)),
                                            ctypes.byref(self.common))
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def raw_klu_case(Ai: np.ndarray, Aj: np.ndarray, Ax: np.ndarray, n: int, b: np.ndarray,
                 dense: np.ndarray) -> dict[str, Any]:
    """Worst berr of fresh KLU (tol 1e-3 and 1.0) and of klujax 0.6.0's reuse rule."""
    cplx = np.iscomplexobj(Ax)
    out: dict[str, Any] = {}
    for tol in (1e-3, 1.0):
        k = RawKlu(Ai, Aj, n, complex_=cplx, tol=tol)
        worst = 0.0
        for m in range(Ax.shape[0]):
            k.factor(Ax[m])
            worst = max(worst, matrices.backward_error(dense[m], k.solve(b[m]), b[m]))
        out[f"fresh tol={tol:g}"] = worst
    k = RawKlu(Ai, Aj, n, complex_=cplx)
    ref = k.factor(Ax[0])
    fresh_count, worst = 1, (0.0, 0, ref, ref, 0.0)
    for m in range(Ax.shape[0]):
        rc = ref
        if m > 0:
            rc = k.refactor(Ax[m])
            if not rc >= 0.1 * ref:
                ref = rc = k.factor(Ax[m])
                fresh_count += 1
        be = matrices.backward_error(dense[m], k.solve(b[m]), b[m])
        if be > worst[0]:
            worst = (be, m, rc, ref, k.rgrowth(Ax[m]))
    out["reuse"] = worst
    out["fresh_count"] = fresh_count
    return out


# --------------------------------------------------------------------------- klujax


def run_case(kind: str, n: int, members: int, seed: int, complex_: bool,
             raw_klu: bool) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import klujax

    Ai, Aj, Ax, n = matrices.value_family(kind, n, members, seed, complex_=complex_)
    rng = np.random.default_rng(1000 + seed)
    b = rng.standard_normal((members, n))
    if complex_:
        b = b + 1j * rng.standard_normal((members, n))
    dense = matrices.to_dense(Ai, Aj, Ax, n)
    ref = np.stack([matrices.reference_solve(dense[m], b[m]) for m in range(members)])

    klujax.clear_cache()
    sols = {"batch": np.asarray(klujax.solve(Ai, Aj, Ax, b))}
    klujax.clear_cache()
    sols["sequential"] = np.stack(
        [np.asarray(klujax.solve(Ai, Aj, Ax[m], b[m])) for m in range(members)])
    fresh = []
    for m in range(members):
        klujax.clear_cache()
        fresh.append(np.asarray(klujax.solve(Ai, Aj, Ax[m], b[m])))
    sols["fresh"] = np.stack(fresh)
    sols["splu"] = np.stack([
        spla.splu(matrices.to_scipy(Ai, Aj, Ax[m], n)).solve(b[m]) for m in range(members)])

    out: dict[str, Any] = {}
    for name, X in sols.items():
        berr = [matrices.backward_error(dense[m], X[m], b[m]) for m in range(members)]
        ferr = [matrices.forward_error(X[m], ref[m]) for m in range(members)]
        out[name] = (max(berr), max(ferr), int(np.argmax(berr)))
    conds = [matrices.cond_inf(dense[m]) for m in range(members)]
    out["cond_inf"] = (min(conds), float(np.median(conds)), max(conds))
    if raw_klu:
        out["raw"] = raw_klu_case(Ai, Aj, Ax, n, b, dense)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--kinds", default="random,pivot_trap",
                    help=f"comma-separated value_family kinds: {','.join(matrices.FAMILY_KINDS)}")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--complex", action="store_true")
    ap.add_argument("--raw-klu", action="store_true",
                    help="also run the system libklu directly (fresh tol 1e-3 / 1, reuse rule)")
    ap.add_argument("--klujax-path", default=None, help="import klujax from this folder")
    args = ap.parse_args()
    if args.klujax_path:
        use_klujax_from(args.klujax_path)
    import klujax

    print(f"klujax {klujax.__version__} from {os.path.dirname(klujax.__file__)}; n={args.n},"
          f" members={args.members}, {'complex128' if args.complex else 'float64'},"
          f" KLUJAX_NUM_THREADS={os.environ.get('KLUJAX_NUM_THREADS', '(default)')}")
    print("worst backward error / worst forward error  #member with the worst backward error")
    print(f"{'kind':11s} {'seed':>4s} {'cond_inf min   median  max':>26s}  "
          + "  ".join(f"{k:>24s}" for k in METHODS))
    for kind in args.kinds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_case(kind, args.n, args.members, seed, args.complex, args.raw_klu)
            c = r["cond_inf"]
            cells = "  ".join(f"{r[k][0]:8.1e} / {r[k][1]:8.1e} #{r[k][2]:<3d}" for k in METHODS)
            print(f"{kind:11s} {seed:4d} {c[0]:8.1e} {c[1]:8.1e} {c[2]:8.1e}  {cells}", flush=True)
            if args.raw_klu:
                raw = r["raw"]
                be, m, rc, ref_rc, rg = raw["reuse"]
                print(f"{'':16s} raw KLU: fresh tol=1e-3 {raw['fresh tol=0.001']:8.1e},"
                      f" fresh tol=1 {raw['fresh tol=1']:8.1e}; reuse rule"
                      f" ({raw['fresh_count']} fresh of {args.members}) worst {be:8.1e}"
                      f" #{m}: rcond {rc:.1e} vs reference {ref_rc:.1e}, rgrowth {rg:.1e}",
                      flush=True)


if __name__ == "__main__":
    main()
