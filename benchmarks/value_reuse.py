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
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import systems  # noqa: E402
from _timing import interleaved, q, ratio, setting  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--cases", default="ladder:1000,grid:1000,random:1000,grid:10000")
    a = ap.parse_args()
    cases = {c: variants(*(lambda k, n: (k, int(n)))(*c.split(":"))) for c in a.cases.split(",")}
    wall, cpu = interleaved(cases, a.rounds, a.reps)
    print(f"# value-keyed reuse ({setting()}, {a.rounds} rounds; us)\n")
    print("| system | same Ax | solve_with_numeric | same/numeric (CPU) | new Ax | refactor+swn | new/refactor (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for c in cases:
        print(f"| {c} | {q(wall[(c, 'same')])} | {q(wall[(c, 'numeric')])} | "
              f"{ratio(cpu[(c, 'same')], cpu[(c, 'numeric')])} | {q(wall[(c, 'new')])} | "
              f"{q(wall[(c, 'refactor')])} | {ratio(cpu[(c, 'new')], cpu[(c, 'refactor')])} |")


if __name__ == "__main__":
    main()
