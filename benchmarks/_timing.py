"""Timing helpers shared by the small in-process benchmarks (value_reuse.py, umfpack_raw.py)."""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from typing import Any, Callable

import jax


def measure(call: Callable[[], Any], reps: int) -> tuple[float, float]:
    """One warm-up call, then the medians of ``reps`` calls' wall and process CPU time (s)."""
    jax.block_until_ready(call())
    w, c = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        w.append(time.perf_counter() - w0)
        c.append(time.process_time() - c0)
    return statistics.median(w), statistics.median(c)


def q(v: list[float], scale: float = 1e6) -> str:
    """median [min, max] of per-round values, scaled (default: s -> us)."""
    return f"{statistics.median(v) * scale:.1f} [{min(v) * scale:.1f}, {max(v) * scale:.1f}]"


def ratio(a: list[float], b: list[float]) -> str:
    """median [min, max] of the per-round ratios a/b."""
    r = [x / y for x, y in zip(a, b)]
    return f"{statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}]"


def interleaved(cases: dict[Any, dict[str, Callable[[], Any]]], rounds: int, reps: int,
                seed: int = 0) -> tuple[dict, dict]:
    """Every (case, variant) measured once per round, in a new shuffled order each round.

    Returns ``wall, cpu``: {(case, variant): [per-round median, ...]}.
    """
    keys = [(c, v) for c in cases for v in cases[c]]
    wall: dict = {k: [] for k in keys}
    cpu: dict = {k: [] for k in keys}
    rng = random.Random(seed)
    for r in range(rounds):
        rng.shuffle(keys)
        for c, v in keys:
            w, t = measure(cases[c][v], reps)
            wall[(c, v)].append(w)
            cpu[(c, v)].append(t)
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
    return wall, cpu


def setting() -> str:
    """Date, cores and klujax's thread setting, for a report's title line."""
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
            f"KLUJAX_NUM_THREADS={os.environ.get('KLUJAX_NUM_THREADS', 'all')}")
