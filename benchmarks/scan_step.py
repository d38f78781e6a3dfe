"""Per-step cost of klujax inside a jitted ``lax.scan`` against raw KLU (C) per step.

    python benchmarks/scan_step.py                 # 11 rounds, n = 100 and 1000, f64 and c128
    python benchmarks/scan_step.py --rounds 21 --json out.json

A transient-like recurrence of ``--steps`` (1000) steps, jitted once; every step's right-hand
side depends on the previous solution, ``b_t = b + 1e-9 x_{t-1}``, so XLA cannot hoist
the solve out of the loop. Cases per system (RC ladder, ``benchmarks/systems.py``):

* ``solve_with_numeric``: the split API, analysed and factored once outside the loop;
  per step one ``solve_with_numeric(num, b_t, sym)``. Raw counterpart: ``klu_solve``
  (the copy of b included), op ``solve`` of ``klu_raw.c``.
* ``solve, new values``: ``solve(Ai, Aj, Ax * (1 + 1e-6 t), b_t)``: values change at every
  step (a pattern-cache hit, a refactorization). Raw counterpart: ``klu_refactor`` +
  ``klu_solve`` (op ``rs``).
* ``solve, same values``: ``solve(Ai, Aj, Ax, b_t)``: unchanged values (value-keyed
  reuse: no refactorization). Raw counterpart: ``klu_solve``.
* the same three with ``options=KLUOptions(check=False)``: no accuracy check (klujax
  measures the backward error of every solution with a sparse mat-vec and refines it
  while above 1e-14; raw KLU does neither), so the difference of the two rows is the
  check's cost and the ``check=False`` row is klujax's overhead proper;
* ``loop only``: the same scan with ``x_t = 0.5 b_t`` instead of a solve: the cost of
  XLA's loop and the recurrence's vector arithmetic, which is in every klujax figure.

A ``n = 1`` system (one entry) separates fixed per-call costs from the work: there KLU does
nothing, so the klujax per-step figure is XLA's custom-call dispatch plus klujax's own
per-call overhead (handle or pattern lookup, options decode, value check, copies).
``lapack 1x1`` (``jnp.linalg.solve`` of a 1x1 matrix per step: two of jaxlib's own FFI
custom calls, getrf + getrs) is a reference for XLA's dispatch of a trivial FFI call.

Rounds (at least 11) run every (system, case) measurement, klujax and raw, in a fresh
shuffled order. A klujax measurement is the median of several timed scan calls (after
one warm-up), divided by the step count; a raw one is ``klu_raw --serve``'s median per
call. Reported: medians [IQR] over rounds, and the median [IQR] of the per-round paired
difference klujax per step - raw per step, in microseconds, against the target
(<= raw + 3 us).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import systems  # noqa: E402
from run import BUILD, RawWorker, build_raw  # noqa: E402  (the raw KLU driver and its protocol)

TARGET_US = 3.0
RAW_OF = {"solve_with_numeric": "solve", "solve, new values": "rs", "solve, same values": "solve"}
RAW_OF.update({k + ", check=False": v for k, v in RAW_OF.items()})


def one_by_one(complex_: bool) -> systems.System:
    dt = np.complex128 if complex_ else np.float64
    return systems.System("one", 1, complex_, np.array([0], np.int32), np.array([0], np.int32),
                          np.array([[2.0]], dt), np.array([[1.0]], dt))


def make_cases(s: systems.System, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    import klujax

    Ai, Aj, n = s.Ai, s.Aj, s.n
    Ax, b = jnp.asarray(s.Ax[0]), jnp.asarray(s.b[0])
    ts = jnp.arange(steps, dtype=jnp.float64)
    sym = klujax.analyze(Ai, Aj, n)
    num = klujax.factor(Ai, Aj, Ax, sym)

    def scan(step):
        @jax.jit
        def run(Ax, b, ts):
            return lax.scan(lambda x, t: (step(Ax, b + 1e-9 * x, t),) * 2, jnp.zeros_like(b), ts)[0]
        return run

    fns = {}
    for check in (True, False):
        o = None if check else klujax.KLUOptions(check=False)
        sfx = "" if check else ", check=False"
        fns["solve_with_numeric" + sfx] = scan(lambda Ax, bt, t, o=o: klujax.solve_with_numeric(num, bt, sym, options=o))
        fns["solve, new values" + sfx] = scan(lambda Ax, bt, t, o=o: klujax.solve(Ai, Aj, Ax * (1 + 1e-6 * t), bt,
                                                                                options=o))
        fns["solve, same values" + sfx] = scan(lambda Ax, bt, t, o=o: klujax.solve(Ai, Aj, Ax, bt, options=o))
    fns["loop only"] = scan(lambda Ax, bt, t: 0.5 * bt)
    if n == 1:
        fns["lapack 1x1"] = scan(lambda Ax, bt, t: jnp.linalg.solve(Ax.reshape(1, 1), bt[:, None])[:, 0])
    out, refine = {}, {}
    for name, f in fns.items():
        x = np.asarray(f(Ax, b, ts))
        r0 = klujax.cache_info()["refine_steps"]
        jax.block_until_ready(f(Ax, b, ts))
        refine[name] = (klujax.cache_info()["refine_steps"] - r0) / steps
        if name != "loop only":
            # bounded: the coupling 1e-9 x_{t-1} only makes each step depend on the last
            assert np.all(np.isfinite(x)), (s.name, name)
        out[name] = (f, (Ax, b, ts))
    # all solves agree (same values: the same recurrence)
    ref = np.asarray(fns["solve_with_numeric"](Ax, b, ts))
    same = np.asarray(fns["solve, same values"](Ax, b, ts))
    assert np.allclose(ref, same, rtol=1e-10, atol=0), s.name
    return {"fns": out, "handles": (sym, num), "refine": refine}


def measure(f, args, steps: int, target_s: float, min_reps: int = 3) -> tuple[float, float]:
    """(wall, CPU) per step: medians over timed scan calls. The process CPU time is the
    robust figure on a loaded machine: a whole scan (up to ~100 ms) is preempted where a
    raw call of a few microseconds, whose median is taken per call, is not."""
    import jax

    jax.block_until_ready(f(*args))
    times, cpus = [], []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < target_s:
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(times) / steps, statistics.median(cpus) / steps


def q(xs):
    xs = sorted(xs)
    m = statistics.median(xs)
    if len(xs) < 2:
        return m, m, m
    a = statistics.quantiles(xs, n=4, method="inclusive")
    return m, a[0], a[2]


def fq(xs, d=2) -> str:
    m, lo, hi = q(xs)
    return f"{m:.{d}f} [{lo:.{d}f}–{hi:.{d}f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--dtypes", default="f64,c128")
    ap.add_argument("--kind", default="ladder", help="system kind for n > 1 (ladder, grid, random)")
    ap.add_argument("--target-ms", type=float, default=40.0, help="time per klujax measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every measurement here")
    args = ap.parse_args()
    if args.rounds < 11:
        ap.error("--rounds must be at least 11")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import klujax

    exe = build_raw()
    if exe is None:
        sys.exit("klu_raw.c could not be compiled (SuiteSparse KLU headers and libraries needed)")
    raw = RawWorker("raw-scan", exe)
    (BUILD / "cases").mkdir(parents=True, exist_ok=True)
    sysd, work = {}, []
    for n in (int(v) for v in args.sizes.split(",")):
        for d in args.dtypes.split(","):
            s = one_by_one(d == "c128") if n == 1 else systems.make_system(args.kind, n, d == "c128", batch=1,
                                                                           seed=args.seed)
            rawf = BUILD / "cases" / f"scan-{s.name}.bin"
            systems.write_raw(s, rawf)
            r = raw.load(s.name, rawf.with_suffix(".npz"), rawf)
            assert r.get("ok"), r
            sysd[s.name] = make_cases(s, args.steps)
            for case in sysd[s.name]["fns"]:
                work.append((s.name, case))
            for op in sorted(set(RAW_OF.values())):
                work.append((s.name, f"raw {op}"))
    raw_p = {"target_s": args.target_ms / 1e3 / 4, "min_reps": 200, "max_reps": 200000, "warmup": 20}
    rng = random.Random(args.seed)
    rounds = []
    load0 = os.getloadavg()
    for r in range(args.rounds):
        rng.shuffle(work)
        res = {}
        for sid, case in work:
            if case.startswith("raw "):
                m = raw.measure({"sys": sid, "path": case[4:], "batch": 1}, raw_p, False)
                assert m.get("ok"), m
                res[f"{sid}|{case}"] = (m["wall_med"], m["cpu"])
            else:
                f, a = sysd[sid]["fns"][case]
                res[f"{sid}|{case}"] = measure(f, a, args.steps, args.target_ms / 1e3)
        rounds.append(res)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    raw.close()
    load1 = os.getloadavg()
    us = 1e6
    print(f"# Per step in a jitted lax.scan of {args.steps} steps vs raw KLU per call "
          f"(jax {jax.__version__}, klujax {klujax.__version__}, {os.cpu_count()} CPUs, {args.rounds} rounds; "
          f"1-min load average {load0[0]:.2f} before, {load1[0]:.2f} after)\n")
    print("Medians [IQR] over rounds, in µs per step; `diff`: the per-round paired difference klujax - raw; "
          "wall and CPU time (klujax: process CPU per scan / steps; raw: thread CPU per call).\n")
    print("| system | case | raw op | klujax wall | raw wall | diff wall | klujax CPU | raw CPU | diff CPU | "
          f"target (diff <= {TARGET_US:g}) | refine steps / step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sid in sysd:
        for case in sysd[sid]["fns"]:
            ours = [rd[f"{sid}|{case}"] for rd in rounds]
            ow, oc = [o[0] * us for o in ours], [o[1] * us for o in ours]
            op = RAW_OF.get(case)
            if op is None:
                print(f"| {sid} | {case} | — | {fq(ow)} | — | — | {fq(oc)} | — | — | — | — |")
                continue
            rw = [rd[f"{sid}|raw {op}"] for rd in rounds]
            rww, rwc = [r[0] * us for r in rw], [r[1] * us for r in rw]
            dw = [a - b for a, b in zip(ow, rww, strict=True)]
            dc = [a - b for a, b in zip(oc, rwc, strict=True)]
            met = lambda d: "met" if q(d)[0] <= TARGET_US else "**missed**"  # noqa: E731
            print(f"| {sid} | {case} | {op} | {fq(ow)} | {fq(rww)} | {fq(dw)} | {fq(oc)} | {fq(rwc)} | "
                  f"{fq(dc)} | wall {met(dw)}, CPU {met(dc)} | {sysd[sid]['refine'][case]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "load": [load0, load1]}, indent=1))


if __name__ == "__main__":
    main()
