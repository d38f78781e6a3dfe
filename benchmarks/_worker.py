"""A benchmark worker: one Python contender in a long-lived process.

Started by ``run.py`` (never by hand) as ``python _worker.py --contender NAME``, it reads
one JSON command per line on stdin and answers one JSON line on stdout:

* ``{"cmd": "hello"}`` -> versions of the libraries this process imported.
* ``{"cmd": "load", "sys": ID, "npz": PATH}`` -> the system (see systems.write_npz).
* ``{"cmd": "prepare", "case": CASE}`` -> builds the benchmark for CASE, runs it (jit
  compilation happens here), checks its result; ``{"ok", "supported", "resid", "s",
  "t_call"}`` (``t_call``: the wall time of one call after the warm-up, for budgeting).
* ``{"cmd": "measure", "case": CASE, "target_s", "min_reps", "max_reps", "warmup",
  "check"}`` -> per-call wall time statistics (divided by the batch size for batched
  paths), process CPU time per call, and the residual of the last call when ``check``.
  The number of timed calls fills ``target_s`` (at least ``min_reps``), except that a
  call longer than 5 x ``target_s`` is timed once.
* ``{"cmd": "libs"}`` -> the shared libraries of interest mapped into this process (BLAS,
  LAPACK, MKL, OpenMP runtimes, SuiteSparse), read from ``/proc/self/maps``: which BLAS a
  contender's UMFPACK/CHOLMOD/Pardiso really uses.
* ``{"cmd": "quit"}``.

``CASE`` is ``{"sys": ID, "path": PATH, "batch": B}``. Contenders:

* ``ours``: the klujax this interpreter imports (the repository's, editable install).
* ``klujax05``: klujax 0.5.2 (run under its own venv).
* ``scipy``: ``scipy.sparse.linalg.splu``.
* the contenders of the peer table (``peers.py``): ``ours-peer`` (this repository's klujax,
  ``--method`` picks ``KLUOptions(method=...)`` where that field exists), ``sparsax-klu``,
  ``sparsax-umf``, ``umfpack-jax``, ``pardiso`` (see ``_peer_contenders.py``; each runs
  under its own venv).

Timing: ``time.perf_counter`` around each call, which ends with ``block_until_ready``
on every output (handles included); ``time.process_time`` around the same calls gives
the CPU time of all the process's threads (XLA's thread pool included). Anything a
call needs that is not part of the operation (fresh values, freeing a factorization
made by ``factor``) happens outside the timed region. The garbage collector is off
while timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import systems  # noqa: E402

N_CYCLE = 4  # single-matrix paths cycle through this many value sets / right-hand sides


@dataclass
class Bench:
    setup: Callable[[int], Any]  # rep index -> args (untimed)
    call: Callable[[Any], Any]  # args -> output, blocked until ready (timed)
    check: Callable[[Any, Any], float]  # (args, output) -> relative residual (untimed)
    teardown: Callable[[Any], None] = lambda out: None  # untimed
    per: int = 1  # divide times by this (matrices per call)


class Unsupported(Exception):
    pass


def block(o: Any) -> Any:
    """Wait for every array in o (tuples, handle managers with a .handle array)."""
    if isinstance(o, (tuple, list)):
        for e in o:
            block(e)
        return o
    h = getattr(o, "handle", None)
    if h is not None and hasattr(h, "block_until_ready"):
        h.block_until_ready()
    elif hasattr(o, "block_until_ready"):
        o.block_until_ready()
    return o


class Loaded:
    """One system, as NumPy arrays (and device arrays for the JAX contenders)."""

    def __init__(self, path: str):
        d = systems.load_npz(path)
        self.n = int(d["n"])
        self.Ai = d["Ai"].astype(np.int32)
        self.Aj = d["Aj"].astype(np.int32)
        self.Ax = d["Ax"]  # (batch, nnz)
        self.b = d["b"]  # (batch, n)
        self.batch = self.Ax.shape[0]
        self.complex = np.iscomplexobj(self.Ax)

    def resid(self, ax, x, b, transpose=False) -> float:
        return systems.rel_residual(self.Ai, self.Aj, np.asarray(ax), np.asarray(x), np.asarray(b),
                                    self.n, transpose)


#== JAX contenders (ours and klujax 0.5.2) ==#

class JaxContender:
    def __init__(self, name: str):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import klujax

        self.name = name
        self.jax, self.jnp, self.k = jax, jnp, klujax
        self.old = name == "klujax05"
        self.sys: dict[str, Any] = {}
        self.fresh = 0  # counter for fresh value sets

    def versions(self) -> dict[str, str]:
        import jaxlib

        return {"klujax": getattr(self.k, "__version__", "?"), "klujax_file": self.k.__file__,
                "jax": self.jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0]}

    def load(self, sid: str, path: str) -> dict:
        L = Loaded(path)
        jnp = self.jnp
        L.dAi, L.dAj = jnp.asarray(L.Ai), jnp.asarray(L.Aj)
        L.dAx, L.db = jnp.asarray(L.Ax), jnp.asarray(L.b)
        K = min(N_CYCLE, L.batch)
        L.ax1 = [block(jnp.asarray(L.Ax[m])) for m in range(K)]
        L.b1 = [block(jnp.asarray(L.b[m])) for m in range(K)]
        L.sym = None
        L.sliced = {}
        self.sys[sid] = L
        return {"n": L.n, "nnz": int(L.Ai.shape[0]), "batch": L.batch}

    def _sym(self, L):
        if L.sym is None:
            L.sym = self.k.analyze(L.dAi, L.dAj, L.n)
        return L.sym

    def _fresh_ax(self, L):
        # a value set never seen before (defeats any value-keyed cache across calls)
        self.fresh += 1
        return block(L.ax1[0] * (1.0 + 1e-7 * self.fresh))

    def _free(self, h):
        if h is None or self.old:
            return  # klujax 0.5.2: the KLUNumeric object frees itself when dropped (synchronously)
        # ours: free now and wait, so that no asynchronous free overlaps the next timed call
        block(self.k.free_numeric(h))

    def build(self, case: dict) -> Bench:
        L = self.sys[case["sys"]]
        k, jax = self.k, self.jax
        path = case["path"]
        K = len(L.ax1)
        Ai, Aj, n = L.dAi, L.dAj, L.n

        def cyc(i):
            return L.ax1[i % K], L.b1[i % K]

        def chk_solve(args, x):
            return L.resid(args[0], x, args[1])

        if path == "solve":
            return Bench(cyc, lambda a: block(k.solve(Ai, Aj, a[0], a[1])), chk_solve)

        if path.startswith("solve_b"):
            B = int(case["batch"])
            if B > L.batch:
                raise Unsupported(f"system has only {L.batch} members")
            if B not in L.sliced:
                L.sliced[B] = (block(L.dAx[:B]), block(L.db[:B]))
            axb, bb = L.sliced[B]
            return Bench(lambda i: (axb, bb), lambda a: block(k.solve(Ai, Aj, a[0], a[1])),
                         lambda a, x: L.resid(L.Ax[:B], x, L.b[:B]), per=B)

        if path == "solve_with_symbol":
            sym = self._sym(L)
            return Bench(cyc, lambda a: block(k.solve_with_symbol(Ai, Aj, a[0], a[1], sym)), chk_solve)

        if path == "factor":
            sym = self._sym(L)

            def chk_factor(a, h):
                x = block(k.solve_with_numeric(h, L.b1[0], sym))
                return L.resid(a[0], x, L.b1[0])

            return Bench(cyc, lambda a: block(k.factor(Ai, Aj, a[0], sym)), chk_factor,
                         teardown=self._free)

        if path in ("refactor", "solve_with_numeric", "tsolve_with_numeric", "refactor_and_solve"):
            sym = self._sym(L)
            if not hasattr(L, "num") or L.num is None:
                L.num = block(k.factor(Ai, Aj, L.ax1[0], sym))
            if path == "refactor":
                # refactor member i % K into the same numeric object
                def chk_refactor(a, num):
                    x = block(k.solve_with_numeric(num, L.b1[0], sym))
                    return L.resid(a[0], x, L.b1[0])

                def do_refactor(a):
                    out = k.refactor(Ai, Aj, a[0], L.num, sym)
                    if not self.old and out is not L.num:
                        L.num = out
                    return block(out)

                return Bench(cyc, do_refactor, chk_refactor)
            if path == "refactor_and_solve":
                def ras(a):
                    out = k.refactor_and_solve(Ai, Aj, a[0], a[1], L.num, sym)
                    return block(out[0] if isinstance(out, tuple) else out)

                return Bench(cyc, ras, chk_solve)
            # solves with a fixed factorization: restore member 0 first (refactor moves it)
            block(k.refactor(Ai, Aj, L.ax1[0], L.num, sym))
            fn = k.solve_with_numeric if path == "solve_with_numeric" else k.tsolve_with_numeric
            tr = path == "tsolve_with_numeric"

            def setup_numeric(i):
                return L.ax1[0], L.b1[i % K]

            def run_numeric(a):
                return block(fn(L.num, a[1], sym))

            # other paths may have refactored L.num: restore member 0 before each measure
            def reset():
                block(k.refactor(Ai, Aj, L.ax1[0], L.num, sym))

            bench = Bench(setup_numeric, run_numeric,
                          lambda a, x: L.resid(a[0], x, a[1], transpose=tr))
            bench.reset = reset  # type: ignore[attr-defined]
            return bench

        if path in ("fwd_sum", "grad_Ax", "grad_b", "jacfwd_b"):
            if L.complex:
                raise Unsupported("gradient paths are benchmarked on real systems")
            b0 = L.b1[0]
            f = lambda ai, aj, ax, b: k.solve(ai, aj, ax, b).sum()  # noqa: E731
            fns = getattr(L, "gradfns", None)
            if fns is None:
                fns = L.gradfns = {
                    "fwd_sum": jax.jit(f),
                    "grad_Ax": jax.jit(jax.grad(f, argnums=2)),
                    "grad_b": jax.jit(jax.grad(f, argnums=3)),
                    "jacfwd_b": jax.jit(jax.jacfwd(lambda ai, aj, ax, b: k.solve(ai, aj, ax, b), argnums=3)),
                }
            fn = fns[path]

            def setup_fresh(i):
                return self._fresh_ax(L), b0

            def run(a):
                return block(fn(Ai, Aj, a[0], a[1]))

            def ref_x(ax):
                x = np.asarray(block(k.solve(Ai, Aj, ax, b0)))
                return x, L.resid(ax, x, b0)

            def ref_lam(ax):
                lam = np.asarray(block(fns["grad_b"](Ai, Aj, ax, b0)))
                return lam, L.resid(ax, lam, np.ones(n), transpose=True)

            if path == "fwd_sum":
                def chk(a, s):
                    x, r = ref_x(a[0])
                    return max(r, abs(float(s) - x.sum()) / max(abs(x.sum()), 1e-300))
            elif path == "grad_b":
                def chk(a, g):
                    return L.resid(a[0], np.asarray(g), np.ones(n), transpose=True)
            elif path == "grad_Ax":
                def chk(a, g):
                    x, r1 = ref_x(a[0])
                    lam, r2 = ref_lam(a[0])
                    ref = -lam[L.Ai] * x[L.Aj]
                    e = np.linalg.norm(np.asarray(g) - ref) / max(np.linalg.norm(ref), 1e-300)
                    return max(r1, r2, float(e))
            else:
                if n > int(case.get("jac_max_n", 1000)):
                    raise Unsupported("jacfwd only on small systems")

                def chk(a, J):
                    AJ = systems.matvec(L.Ai, L.Aj, np.asarray(a[0]), np.asarray(J), n)
                    return float(np.linalg.norm(AJ - np.eye(n)) / math.sqrt(n))

            return Bench(setup_fresh, run, chk)

        raise Unsupported(f"unknown path {path}")


#== scipy.sparse.linalg.splu ==#

class ScipyContender:
    def __init__(self, name: str):
        import scipy
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        self.name = name
        self.scipy, self.sp, self.spla = scipy, sp, spla
        self.sys: dict[str, Any] = {}

    def versions(self) -> dict[str, str]:
        return {"scipy": self.scipy.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}

    def load(self, sid: str, path: str) -> dict:
        L = Loaded(path)
        # Ai/Aj are column-major sorted and unique: Ax rows are already CSC data arrays
        L.indptr = np.concatenate([[0], np.cumsum(np.bincount(L.Aj, minlength=L.n))]).astype(np.int32)
        L.indices = L.Ai.copy()
        L.lu0 = None
        self.sys[sid] = L
        return {"n": L.n, "nnz": int(L.Ai.shape[0]), "batch": L.batch}

    def build(self, case: dict) -> Bench:
        L = self.sys[case["sys"]]
        sp, spla = self.sp, self.spla
        path = case["path"]
        K = min(N_CYCLE, L.batch)
        n = L.n

        def mat(vals):
            return sp.csc_matrix((vals, L.indices, L.indptr), shape=(n, n))

        def cyc(i):
            return L.Ax[i % K], L.b[i % K]

        def chk_solve(a, x):
            return L.resid(a[0], x, a[1])

        if path == "solve":
            return Bench(cyc, lambda a: spla.splu(mat(a[0])).solve(a[1]), chk_solve)
        if path.startswith("solve_b"):
            B = int(case["batch"])
            if B > L.batch:
                raise Unsupported(f"system has only {L.batch} members")
            axb, bb = L.Ax[:B], L.b[:B]

            def loop(a):
                return np.stack([spla.splu(mat(a[0][m])).solve(a[1][m]) for m in range(B)])

            return Bench(lambda i: (axb, bb), loop, lambda a, x: L.resid(axb, x, bb), per=B)
        if path == "factor":
            return Bench(cyc, lambda a: spla.splu(mat(a[0])),
                         lambda a, lu: L.resid(a[0], lu.solve(L.b[0]), L.b[0]))
        if path in ("solve_with_numeric", "tsolve_with_numeric"):
            if L.lu0 is None:
                L.lu0 = spla.splu(mat(L.Ax[0]))
            tr = "T" if path == "tsolve_with_numeric" else "N"
            return Bench(lambda i: (L.Ax[0], L.b[i % K]), lambda a: L.lu0.solve(a[1], trans=tr),
                         lambda a, x: L.resid(a[0], x, a[1], transpose=tr == "T"))
        raise Unsupported(f"scipy has no {path}")


#== the loop ==#

def measure(bench: Bench, target_s: float, min_reps: int, max_reps: int, warmup: int,
            check: bool) -> dict:
    if hasattr(bench, "reset"):
        bench.reset()
    gc.collect(1)  # a full collection costs ~0.1 s with jax loaded; the young generations suffice
    gc.disable()
    try:
        i = 0
        t_last = 0.0
        for _ in range(max(1, warmup)):
            args = bench.setup(i)
            t0 = time.perf_counter()
            out = bench.call(args)
            t_last = time.perf_counter() - t0
            bench.teardown(out)
            i += 1
        reps = int(min(max_reps, max(min_reps, math.ceil(target_s / max(t_last, 1e-9)))))
        if t_last > 5 * target_s > 0:
            reps = 1  # a long call: one timed call per round (the rounds give the spread)
        walls = np.empty(reps)
        cpu = 0.0
        resid = None
        for r in range(reps):
            args = bench.setup(i)
            c0 = time.process_time()
            t0 = time.perf_counter()
            out = bench.call(args)
            t1 = time.perf_counter()
            c1 = time.process_time()
            walls[r] = t1 - t0
            cpu += c1 - c0
            if check and r == reps - 1:
                resid = float(bench.check(args, out))
            bench.teardown(out)
            i += 1
    finally:
        gc.enable()
    walls /= bench.per
    return {"ok": True, "reps": reps, "wall_med": float(np.median(walls)), "wall_min": float(walls.min()),
            "wall_max": float(walls.max()), "cpu": cpu / reps / bench.per, "resid": resid}


LIB_PATTERN = re.compile(r"blas|lapack|mkl|gomp|iomp|omp\.so|tbb|umfpack|cholmod|klu|suitesparse|amd|"
                         r"gfortran|pardiso", re.I)


def mapped_libs() -> list[str]:
    """The shared objects of interest mapped into this process (from /proc/self/maps)."""
    seen: dict[str, None] = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and ".so" in parts[5] and LIB_PATTERN.search(os.path.basename(parts[5])):
                    seen.setdefault(parts[5], None)
    except OSError as e:
        return [f"(cannot read /proc/self/maps: {e})"]
    return list(seen)


def make_contender(name: str, method: str | None):
    if name == "scipy":
        return ScipyContender(name)
    if name in ("ours", "klujax05"):
        return JaxContender(name)
    # the peer table's contenders; they reuse this module's Bench/Loaded/Unsupported, so make
    # "import _worker" there resolve to this very module (run as __main__), not a second copy
    sys.modules.setdefault("_worker", sys.modules[__name__])
    import _peer_contenders

    return _peer_contenders.make(name, method)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contender", required=True,
                    choices=["ours", "klujax05", "scipy", "ours-peer", "sparsax-klu", "sparsax-umf",
                             "umfpack-jax", "pardiso"])
    ap.add_argument("--method", default=None, help="ours-peer: KLUOptions(method=...) where that field exists")
    opts = ap.parse_args()
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol

    def reply(d: dict) -> None:
        out.write(json.dumps(d) + "\n")
        out.flush()

    try:
        C = make_contender(opts.contender, opts.method)
    except Exception as e:  # noqa: BLE001
        reply({"ok": False, "error": f"import failed: {e!r}", "trace": traceback.format_exc()})
        return
    benches: dict[str, Bench | None] = {}

    def key(case: dict) -> str:
        return json.dumps(case, sort_keys=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg["cmd"]
            if cmd == "quit":
                reply({"ok": True})
                break
            if cmd == "hello":
                reply({"ok": True, "versions": C.versions(), "pid": os.getpid(),
                       "affinity": sorted(os.sched_getaffinity(0))})
            elif cmd == "libs":
                reply({"ok": True, "libs": mapped_libs()})
            elif cmd == "load":
                reply({"ok": True, **C.load(msg["sys"], msg["npz"])})
            elif cmd == "prepare":
                case = msg["case"]
                t0 = time.perf_counter()
                try:
                    b = C.build(case)
                except Unsupported as e:
                    benches[key(case)] = None
                    reply({"ok": True, "supported": False, "why": str(e)})
                    continue
                benches[key(case)] = b
                r = measure(b, 0.0, 1, 1, 1, check=True)  # compiles (warm-up), one timed call, check
                reply({"ok": True, "supported": True, "resid": r["resid"], "s": time.perf_counter() - t0,
                       "t_call": r["wall_med"] * b.per})
            elif cmd == "measure":
                b = benches.get(key(msg["case"]))
                if b is None:
                    reply({"ok": False, "error": "case not prepared or unsupported"})
                    continue
                reply(measure(b, msg["target_s"], msg["min_reps"], msg["max_reps"], msg["warmup"],
                              bool(msg.get("check"))))
            else:
                reply({"ok": False, "error": f"unknown command {cmd}"})
        except Exception as e:  # noqa: BLE001
            reply({"ok": False, "error": repr(e), "trace": traceback.format_exc()})


if __name__ == "__main__":
    main()
