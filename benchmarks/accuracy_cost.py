"""What klujax's accuracy check costs: checked (default) vs unchecked solves, side by side.

    KLUJAX_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy_cost.py [--rounds 11] [--sizes 100,1000,10000]

For each circuit-like system of ``systems.py`` (RC ladder, 2D grid, random diagonally
dominant: matrices that need no refinement) and each path that factors with a reused
pivot order (a repeated ``solve`` with new values, a batched ``solve`` of 64 members, the
split API's ``refactor`` + ``solve_with_numeric``), it times ``KLUOptions()`` (checked)
against ``KLUOptions(check=False)`` (the plain KLU answer, what klujax 0.6 returned).
Rounds are interleaved and shuffled; each round measures every (case, variant) once, as
the median of several calls. Reported: median and [min, max] of the per-round values,
and the per-round paired ratio checked / unchecked, in wall time and in process CPU time
(run with ``KLUJAX_NUM_THREADS=1`` so that the native work is single-threaded and CPU
time measures it). Output: markdown on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import systems  # noqa: E402

jax.config.update("jax_enable_x64", True)
import klujax  # noqa: E402

CHECKED = klujax.KLUOptions()
UNCHECKED = klujax.KLUOptions(check=False)
VARIANTS = {"checked": CHECKED, "unchecked": UNCHECKED}


def make_cases(sizes: list[int], kinds: list[str], batch: int) -> list[tuple[str, object]]:
    """(name, prepare(options) -> call) for every system and path."""
    cases = []
    for kind in kinds:
        for n in sizes:
            s = systems.make_system(kind, n, batch=batch)
            Ai, Aj, Ax, b, n_ = s.Ai, s.Aj, np.asarray(s.Ax), np.asarray(s.b), s.n

            def single(opts, Ai=Ai, Aj=Aj, Ax=Ax, b=b):
                f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=opts))
                vals = [Ax[0], Ax[1]]  # alternate: every call refactors with new values
                state = {"k": 0}

                def call():
                    state["k"] ^= 1
                    return f(vals[state["k"]], b[0])
                return call

            def batched(opts, Ai=Ai, Aj=Aj, Ax=Ax, b=b):
                f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b, options=opts))
                vals = [Ax, Ax[::-1].copy()]
                state = {"k": 0}

                def call():
                    state["k"] ^= 1
                    return f(vals[state["k"]], b)
                return call

            def split(opts, Ai=Ai, Aj=Aj, Ax=Ax, b=b, n=n_):
                sym = klujax.analyze(Ai, Aj, n)
                num = klujax.factor(Ai, Aj, Ax[0], sym)
                vals = [Ax[0], Ax[1]]
                state = {"k": 0, "keep": (sym, num)}

                def call():
                    state["k"] ^= 1
                    klujax.refactor(Ai, Aj, vals[state["k"]], num, sym, options=opts)
                    return klujax.solve_with_numeric(num, b[0], sym, options=opts)
                return call

            cases += [(f"{kind}-{n_} solve (refactor)", single),
                      (f"{kind}-{n_} solve batch {batch}", batched),
                      (f"{kind}-{n_} refactor+solve_with_numeric", split)]
    return cases


def measure(call, min_reps: int, target_s: float) -> tuple[float, float]:
    """Median wall and process-CPU seconds per call."""
    jax.block_until_ready(call())  # warm-up
    walls, cpus = [], []
    t_end = time.perf_counter() + target_s
    while len(walls) < min_reps or time.perf_counter() < t_end:
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if len(walls) >= 2000:
            break
    return statistics.median(walls), statistics.median(cpus)


def fmt(v: float) -> str:
    return f"{v * 1e6:.1f} us" if v < 1e-3 else f"{v * 1e3:.2f} ms"


def spread(vals: list[float]) -> str:
    return f"{fmt(statistics.median(vals))} [{fmt(min(vals))}, {fmt(max(vals))}]"


def ratio(vals: list[float]) -> str:
    return f"{statistics.median(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--kinds", default="ladder,grid,random")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--target-ms", type=float, default=30.0)
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.rounds < 11:
        ap.error("--rounds must be >= 11 (noisy shared machines)")
    cases = make_cases([int(s) for s in a.sizes.split(",")], a.kinds.split(","), a.batch)
    calls = {(name, v): prep(opts) for name, prep in cases for v, opts in VARIANTS.items()}
    rng = random.Random(a.seed)
    wall: dict = {k: [] for k in calls}
    cpu: dict = {k: [] for k in calls}
    for r in range(a.rounds):
        keys = list(calls)
        rng.shuffle(keys)
        for k in keys:
            w, c = measure(calls[k], a.min_reps, a.target_ms / 1e3)
            wall[k].append(w)
            cpu[k].append(c)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"# Cost of the accuracy check ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{os.cpu_count()} cores, jax {jax.__version__}, "
          f"KLUJAX_NUM_THREADS={os.environ.get('KLUJAX_NUM_THREADS', 'all')}, {a.rounds} rounds)\n")
    print("| case | checked (wall) | unchecked (wall) | ratio wall | ratio CPU |")
    print("|---|---|---|---|---|")
    for name, _ in cases:
        c, u = (name, "checked"), (name, "unchecked")
        rw = [x / y for x, y in zip(wall[c], wall[u])]
        rc = [x / y for x, y in zip(cpu[c], cpu[u]) if y > 0]
        print(f"| {name} | {spread(wall[c])} | {spread(wall[u])} | {ratio(rw)} | "
              f"{ratio(rc) if rc else '-'} |")


if __name__ == "__main__":
    main()
