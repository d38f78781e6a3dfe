"""KLU vs UMFPACK per matrix, and what ``method="auto"`` chose: the calibration of the rule.

    KLUJAX_NUM_THREADS=1 .venv/bin/python benchmarks/methods.py [--rounds 11] [--reps 3]
        [--cases ladder:1000,grid:1024,...] [--batch 16]

For every system (benchmarks/systems.py kinds at the given sizes, real and complex) it
prints KLU's fill estimates (``flops``: estimated factorization flops; ``fpe``: flops per
entry of L + U), the backend ``auto`` resolves to, and the time of a jitted
``klujax.solve`` with new values every call (factorization + solve + accuracy check), for
``method="klu"`` and ``"umfpack"``, single and batched (``--batch`` members). Rounds are
interleaved and shuffled; reported: median [IQR] of the wall time per call, the median
[IQR] of the per-round ratio umfpack/klu in wall time and in process CPU time (run with
KLUJAX_NUM_THREADS=1 so that the native work is single-threaded), and whether ``auto`` is within 10% of the better one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import systems  # noqa: E402

import klujax  # noqa: E402
from klujax import _klujax  # noqa: E402

DEFAULT_CASES = ("ladder:1000,grid:1024,grid:10000,random:1000,random:10000,unsym:300,"
                 "unsym:1000,unsym:3000,fe2d:900,fe2d:3600,fe3d:1000,fe3d:2744")


def quartiles(v: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(v, n=4) if len(v) >= 4 else [min(v), 0, max(v)]
    return q[0], statistics.median(v), q[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cases", default=DEFAULT_CASES)
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    if "umfpack" not in klujax.methods():
        sys.exit("methods.py: this klujax has no UMFPACK backend")
    print(f"klujax {klujax.__version__}, KLU {_klujax.klu_version}, BLAS {klujax.blas_library()}, "
          f"jax {jax.__version__}, rounds {a.rounds}, batch {a.batch}")
    print("\n| system | n | nnz | flops | fpe | auto | path | KLU ms [IQR] | UMFPACK ms [IQR] | "
          "UMFPACK/KLU wall [IQR] | UMFPACK/KLU CPU | auto within 10% |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in a.cases.split(","):
        kind, n = spec.split(":")
        for cplx in (False, True):
            s = systems.make_system(kind, int(n), complex_=cplx, batch=a.batch)
            Ai, Aj = s.Ai.astype(np.int32), s.Aj.astype(np.int32)
            Ax = jnp.asarray(np.asarray(s.Ax).reshape(-1, len(Ai)))
            info = _klujax.analysis_info(Ai, Aj, s.n, klujax.KLUOptions().as_attribute())
            variants = {}
            for m in ("klu", "umfpack"):
                o = klujax.KLUOptions(method=m)  # type: ignore[arg-type]
                f = jax.jit(lambda a, b, o=o: klujax.solve(Ai, Aj, a, b, options=o))
                for path, ax in (("single", Ax[0]), ("batch", Ax)):
                    b = jnp.ones(ax.shape[:-1] + (s.n,), ax.dtype)
                    ref = f(ax, b)
                    x_other = variants.get(("klu", path), (None, None, None, None))[3]
                    if x_other is not None:  # the two backends agree
                        assert float(jnp.max(jnp.abs(ref - x_other)) / jnp.max(jnp.abs(x_other))) < 1e-8
                    variants[(m, path)] = (f, ax, b, ref)
            wall = {k: [] for k in variants}
            cpu = {k: [] for k in variants}
            for r in range(a.rounds):
                keys = list(variants)
                random.shuffle(keys)
                for k in keys:
                    f, ax, b, _ = variants[k]
                    new = [ax * (1 + 1e-6 * (r * a.reps + i + 1)) for i in range(a.reps)]
                    jax.block_until_ready(new)
                    w0, c0 = time.perf_counter(), time.process_time()
                    for v in new:
                        f(v, b).block_until_ready()
                    wall[k].append((time.perf_counter() - w0) / a.reps)
                    cpu[k].append((time.process_time() - c0) / a.reps)
            fpe = info["flops"] / max(info["lu_nnz"], 1)
            for path in ("single", "batch"):
                k, u = wall[("klu", path)], wall[("umfpack", path)]
                ratio = quartiles([y / x for x, y in zip(k, u)])
                cratio = statistics.median(
                    [y / x for x, y in zip(cpu[("klu", path)], cpu[("umfpack", path)])])
                best = min(statistics.median(k), statistics.median(u))
                chosen = statistics.median(u if info["method"] == "umfpack" else k)
                qk, qu = quartiles(k), quartiles(u)
                print(f"| {kind}-{n}-{'c128' if cplx else 'f64'} | {s.n} | {info['nnz']} | "
                      f"{info['flops']:.2g} | {fpe:.0f} | {info['method']} | {path} | "
                      f"{qk[1] * 1e3:.3f} [{qk[0] * 1e3:.3f}-{qk[2] * 1e3:.3f}] | "
                      f"{qu[1] * 1e3:.3f} [{qu[0] * 1e3:.3f}-{qu[2] * 1e3:.3f}] | "
                      f"{ratio[1]:.2f} [{ratio[0]:.2f}-{ratio[2]:.2f}] | {cratio:.2f} | "
                      f"{'yes' if chosen <= 1.1 * best else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
