"""Repeated solves with unchanged values vs solve_with_numeric, and the new-values path.

    KLUJAX_NUM_THREADS=1 .venv/bin/python benchmarks/value_reuse.py [--rounds 11]

Per system (benchmarks/systems.py), interleaved and shuffled rounds of:
* ``same``: ``klujax.solve`` with the same ``Ax`` every call and a new ``b`` (value-keyed
  reuse: only the checked solve runs);
* ``numeric``: ``solve_with_numeric`` with a factorization made once (the floor);
* ``new``: ``klujax.solve`` cycling through 16 value sets (more than the 8 the cache keeps
  per pattern: every call factors, with the previous pivot order);
* ``refactor``: the split API's ``refactor`` + ``solve_with_numeric`` on the same 16
  value sets (what ``new`` should cost at most).
Reports medians [min, max] of the per-round medians (wall and process CPU) and the
paired ratios same/numeric and new/refactor.
"""

from __future__ import annotations

import argparse
import os
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


def variants(kind: str, n: int) -> dict:
    s = systems.make_system(kind, n, batch=16)
    Ai, Aj, Ax, b = s.Ai, s.Aj, np.asarray(s.Ax), np.asarray(s.b)
    f = jax.jit(lambda a, b: klujax.solve(Ai, Aj, a, b))
    sym = klujax.analyze(Ai, Aj, s.n)
    num = klujax.factor(Ai, Aj, Ax[0], sym)
    num2 = klujax.factor(Ai, Aj, Ax[0], sym)
    st = {"k": 0, "keep": (sym, num, num2)}

    def nxt() -> int:
        st["k"] = (st["k"] + 1) % 16
        return st["k"]

    def refactor():
        k = nxt()
        klujax.refactor(Ai, Aj, Ax[k], num2, sym)
        return klujax.solve_with_numeric(num2, b[k], sym)

    return {
        "same": lambda: f(Ax[0], b[nxt()]),
        "numeric": lambda: klujax.solve_with_numeric(num, b[nxt()], sym),
        "new": lambda: (lambda k: f(Ax[k], b[k]))(nxt()),
        "refactor": refactor,
    }


def measure(call, reps: int) -> tuple[float, float]:
    jax.block_until_ready(call())
    w, c = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        w.append(time.perf_counter() - w0)
        c.append(time.process_time() - c0)
    return statistics.median(w), statistics.median(c)


def q(v: list[float], scale: float = 1e6) -> str:
    return f"{statistics.median(v) * scale:.1f} [{min(v) * scale:.1f}, {max(v) * scale:.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cases", default="ladder:1000,grid:1000,random:1000,grid:10000")
    a = ap.parse_args()
    cases = {c: variants(*(lambda k, n: (k, int(n)))(*c.split(":"))) for c in a.cases.split(",")}
    keys = [(c, v) for c in cases for v in cases[c]]
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    rng = random.Random(0)
    for r in range(a.rounds):
        rng.shuffle(keys)
        for c, v in keys:
            w, t = measure(cases[c][v], a.reps)
            wall[(c, v)].append(w)
            cpu[(c, v)].append(t)
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
    print(f"# value-keyed reuse ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"KLUJAX_NUM_THREADS={os.environ.get('KLUJAX_NUM_THREADS', 'all')}, {a.rounds} rounds; us)\n")
    print("| system | same Ax | solve_with_numeric | same/numeric (CPU) | new Ax | refactor+swn | new/refactor (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for c in cases:
        r1 = [x / y for x, y in zip(cpu[(c, "same")], cpu[(c, "numeric")])]
        r2 = [x / y for x, y in zip(cpu[(c, "new")], cpu[(c, "refactor")])]
        print(f"| {c} | {q(wall[(c, 'same')])} | {q(wall[(c, 'numeric')])} | "
              f"{statistics.median(r1):.2f} [{min(r1):.2f}, {max(r1):.2f}] | {q(wall[(c, 'new')])} | "
              f"{q(wall[(c, 'refactor')])} | {statistics.median(r2):.2f} [{min(r2):.2f}, {max(r2):.2f}] |")


if __name__ == "__main__":
    main()
