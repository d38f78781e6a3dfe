"""Gradients of batched complex sweeps: grad/forward, and where the gradient's time goes.

    .venv/bin/python benchmarks/grad_sweep.py [--rounds 11] [--reps 7] [--threads 1,default]
                                              [--breakdown] [--cases demo,grid64,sweep1000]

Cases (300-node RC ladders, complex frequency sweeps, one batched ``klujax.solve``):

* ``demo``: exactly ``python -m klujax``'s step 2: the ladder of ``klujax.__main__``,
  64 frequencies, a shared ``b``, loss = far-end power summed over the sweep, gradient
  w.r.t. the real conductances ``G`` (``Ax = G + i w C``).
* ``grid64``: a complex 32x32 grid (``systems.grid2d``), 64 members, gradient w.r.t.
  ``Ax``: a sweep where the factorization, not the triangular solves, dominates.
* ``sweep1000``: ``benchmarks/systems.py``'s complex ladder with 1,000 members and a
  batched ``b``, the same loss; gradients w.r.t. ``Ax`` and w.r.t. ``(Ax, b)``.

Every timed call gets values no call has seen before (as in an optimisation loop), so the
only value-keyed cache hit is the one inside a gradient: its transposed solve finding the
forward's factorizations. Per case: ``fwd`` = ``jit(loss)``, ``grad_*`` = ``jit(grad(loss))``;
with ``--breakdown`` also the pieces (primitives bound directly): the solve alone with
``retain=False`` / ``retain=True``, solve + transposed solve (the hit), the same with the
accuracy check off, and the ``Ax`` cotangent (``ct[Ai] * x[Aj]``) alone.

Rounds are interleaved and shuffled; each round times every variant ``--reps`` times and
keeps the median. Reported: median [IQR] over rounds of wall and process CPU time, and
the paired (same round) ratios grad/fwd. Each thread setting runs in its own process
(``KLUJAX_NUM_THREADS`` is read once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _quartiles(v: list[float]) -> tuple[float, float, float]:
    if len(v) < 4:
        return min(v), statistics.median(v), max(v)
    q = statistics.quantiles(v, n=4)
    return q[0], statistics.median(v), q[2]


def _cases(names: list[str], breakdown: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import klujax
    from klujax import __main__ as demo
    from klujax._ops import bind, prim
    from klujax._options import KLUOptions

    sys.path.insert(0, str(HERE))
    import systems

    out: dict = {}
    counter = [0]

    def scale() -> float:  # a factor no call has used before
        counter[0] += 1
        return 1.0 + 1e-7 * counter[0]

    def far_end(x):
        return jnp.sum(jnp.abs(x[:, -1]) ** 2)

    if "demo" in names:
        dAi, dAj, G, C = demo.rc_ladder(300)
        omega = jnp.logspace(0, 4, 64)
        b = jnp.zeros(300, complex).at[0].set(1.0)
        Gj = jnp.asarray(G)

        def loss_G(G):
            return far_end(klujax.solve(dAi, dAj, G[None, :] + 1j * omega[:, None] * C[None, :], b))

        fwd, grad = jax.jit(loss_G), jax.jit(jax.grad(loss_G))
        v = {
            "fwd": (fwd, lambda: (Gj * scale(),)),
            "grad_G": (grad, lambda: (Gj * scale(),)),
        }
        out["demo"] = (v, lambda: grad(Gj * scale()))

    def sweep(s):  # the loss, fresh-values arguments and gradient of a batched system
        Ai, Aj = s.Ai, s.Aj
        Ax0, b0 = jnp.asarray(s.Ax), jnp.asarray(s.b)

        def loss(Ax, b):
            return far_end(klujax.solve(Ai, Aj, Ax, b))

        fresh = jax.jit(lambda Ax, b, k: (Ax * k, b * k))
        args = lambda: fresh(Ax0, b0, scale())  # noqa: E731
        return Ai, Aj, Ax0, b0, loss, args, jax.jit(jax.grad(loss))

    if "grid64" in names:  # where factorization dominates: a 32x32 grid, 64 members
        *_, gloss, gargs, ggrad = sweep(systems.grid2d(1024, complex_=True, batch=64))
        v = {"fwd": (jax.jit(gloss), gargs), "grad_Ax": (ggrad, gargs)}
        out["grid64"] = (v, lambda: ggrad(*gargs()))

    if "sweep1000" in names:
        Ai, Aj, Ax0, b0, loss, args, grad_Ax = sweep(systems.rc_ladder(300, complex_=True, batch=1000))
        v = {
            "fwd": (jax.jit(loss), args),
            "grad_Ax": (grad_Ax, args),
            "grad_Ax_b": (jax.jit(jax.grad(loss, argnums=(0, 1))), args),
        }
        if breakdown:
            P = prim("solve", jnp.complex128)
            on, off = KLUOptions(), KLUOptions(check=False)
            AiJ, AjJ = jnp.asarray(Ai), jnp.asarray(Aj)

            def solve(Ax, b, retain, o):
                return bind(P, AiJ, AjJ, Ax, b[..., None], transpose=False, retain=retain, options=o)

            def both(Ax, b, o):
                x = solve(Ax, b, True, o)
                return bind(P, AiJ, AjJ, Ax, x, x, transpose=True, retain=True, options=o)

            def cot(ct, x):
                return (jnp.take(ct, AiJ, axis=1, mode="clip") * jnp.take(x, AjJ, axis=1, mode="clip")).sum(-1)

            x3 = solve(Ax0, b0, False, on)
            v |= {
                "solve": (jax.jit(lambda A, b: solve(A, b, False, on)), args),
                "solve_retain": (jax.jit(lambda A, b: solve(A, b, True, on)), args),
                "solve+tsolve": (jax.jit(lambda A, b: both(A, b, on)), args),
                "solve_nocheck": (jax.jit(lambda A, b: solve(A, b, True, off)), args),
                "solve+tsolve_nocheck": (jax.jit(lambda A, b: both(A, b, off)), args),
                "cotangent": (jax.jit(cot), lambda: (x3 * scale(), x3)),
            }
        out["sweep1000"] = (v, lambda: grad_Ax(*args()))
    return out


def child(a: argparse.Namespace) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import klujax

    cases = _cases(a.cases.split(","), a.breakdown)
    hits = {}
    for c, (variants, one_grad) in cases.items():
        for f, mk in variants.values():
            jax.block_until_ready(f(*mk()))  # compile
        jax.block_until_ready(one_grad())
        i0 = klujax.cache_info()
        jax.block_until_ready(one_grad())
        i1 = klujax.cache_info()
        hits[c] = {k: i1[k] - i0[k] for k in ("numeric_hits", "numeric_misses", "refine_steps")}
    keys = [(c, v) for c in cases for v in cases[c][0]]
    wall: dict = {f"{c}/{v}": [] for c, v in keys}
    cpu: dict = {f"{c}/{v}": [] for c, v in keys}
    rng = random.Random(0)
    for r in range(a.rounds):
        rng.shuffle(keys)
        for c, v in keys:
            f, mk = cases[c][0][v]
            w, t = [], []
            for _ in range(a.reps):
                args = jax.block_until_ready(mk())
                w0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(*args))
                w.append(time.perf_counter() - w0)
                t.append(time.process_time() - c0)
            wall[f"{c}/{v}"].append(statistics.median(w))
            cpu[f"{c}/{v}"].append(statistics.median(t))
        print(f"  round {r + 1}/{a.rounds}", file=sys.stderr)
    return {"wall": wall, "cpu": cpu, "hits": hits}


def report(label: str, res: dict) -> None:
    wall, cpu = res["wall"], res["cpu"]
    print(f"\n## KLUJAX_NUM_THREADS={label}\n")
    print("| case / variant | wall ms median [IQR] | CPU ms median [IQR] | grad/fwd wall [IQR] | grad/fwd CPU [IQR] |")
    print("|---|---|---|---|---|")
    for k in wall:
        c = k.split("/")[0]
        w, t = _quartiles(wall[k]), _quartiles(cpu[k])
        row = f"| {k} | {w[1] * 1e3:.2f} [{w[0] * 1e3:.2f}, {w[2] * 1e3:.2f}] | {t[1] * 1e3:.2f} [{t[0] * 1e3:.2f}, {t[2] * 1e3:.2f}] |"
        if k.split("/")[1].startswith("grad"):
            rw = _quartiles([x / y for x, y in zip(wall[k], wall[f"{c}/fwd"])])
            rc = _quartiles([x / y for x, y in zip(cpu[k], cpu[f"{c}/fwd"])])
            row += f" {rw[1]:.2f} [{rw[0]:.2f}, {rw[2]:.2f}] | {rc[1]:.2f} [{rc[0]:.2f}, {rc[2]:.2f}] |"
        else:
            row += " | |"
        print(row)
    for c, h in res["hits"].items():
        print(f"\n{c}: one gradient call: {h}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", default="1,default", help="KLUJAX_NUM_THREADS settings, one process each")
    ap.add_argument("--cases", default="demo,sweep1000")
    ap.add_argument("--breakdown", action="store_true", help="also time the pieces (sweep1000)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a)))
        return
    print(f"# gradients of batched sweeps ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"{a.rounds} rounds x {a.reps} calls, fresh values every call)")
    for label in a.threads.split(","):
        env = dict(os.environ)
        env.pop("KLUJAX_NUM_THREADS", None)
        if label != "default":
            env["KLUJAX_NUM_THREADS"] = label
        cmd = [sys.executable, __file__, "--child", "--rounds", str(a.rounds), "--reps", str(a.reps),
               "--cases", a.cases] + (["--breakdown"] if a.breakdown else [])
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        report(label, json.loads(r.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
