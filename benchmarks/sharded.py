"""A batch sharded over 2 devices against the same batch on 1 device.

    python benchmarks/sharded.py                 # 11 rounds, both thread settings
    python benchmarks/sharded.py --rounds 21 --threads 1 --json out.json

The 2 devices are the CPU split by ``--xla_force_host_platform_device_count=2``. Each
thread setting runs in its own worker process (``KLUJAX_NUM_THREADS`` is read once):

* ``1``: klujax's own worker pool has one thread, so one device uses one core. This is
  what sharding buys when each device is a core, a socket or a machine of its own: the
  expected speedup on 2 cores is ~2x on large batches.
* ``all`` (the default setting): on one device klujax already runs a batch on all
  cores, so splitting it over 2 devices of the same 2 cores cannot be faster; it shows
  what sharding costs there.

Method: every case is compiled, run and checked once for each placement (the 2-device
result must equal the 1-device one, keep the batch sharding, and its compiled HLO must
have no collective); then ``--rounds`` rounds (at least 11), each in a freshly shuffled
order of (case, placement). A measurement is the median per-call time of as many calls
as fill ``--target-ms`` (at least 3, after one warm-up call); every call scales ``Ax``
by a new factor, so no factorization cached by value is reused. Reported: per case and
placement the median over rounds and the inter-quartile range, and the median [IQR] of
the per-round paired ratio 1-device time / 2-device time (the speedup).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (system kind, n, batch sizes)
SYSTEMS = [("ladder", 1000, (8, 64, 512)), ("grid", 1024, (64, 256))]
QUICK = [("ladder", 1000, (8, 256))]
PATHS = ("solve", "grad_Ax")


#== the worker: one process, 2 devices ==#

def worker(args: argparse.Namespace) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    import klujax

    sys.path.insert(0, str(HERE))
    from systems import make_system

    devices = jax.devices()
    assert len(devices) == 2, f"expected 2 devices, got {devices}"
    mesh = Mesh(np.array(devices), ("batch",))
    placements = {"1 device": jax.sharding.SingleDeviceSharding(devices[0]),
                  "2 devices": NamedSharding(mesh, P("batch"))}
    one = jax.sharding.SingleDeviceSharding(devices[0])

    cases = {}
    for kind, n, batches in (QUICK if args.quick else SYSTEMS):
        for batch in batches:
            s = make_system(kind, n, batch=batch)
            Ai, Aj = s.Ai, s.Aj

            def solve(Ax, b, scale, Ai=Ai, Aj=Aj):
                return klujax.solve(Ai, Aj, Ax * scale, b)

            def grad_Ax(Ax, b, scale, Ai=Ai, Aj=Aj):
                return jax.grad(lambda Ax: jnp.sum(klujax.solve(Ai, Aj, Ax * scale, b) ** 2))(Ax)

            for path, fn in (("solve", solve), ("grad_Ax", grad_Ax)):
                if path not in args.paths:
                    continue
                name = f"{s.name} L={batch} {path}"
                cases[name] = {"fn": jax.jit(fn), "Ax": s.Ax, "b": s.b, "n": n, "L": batch,
                               "system": s.name, "path": path, "name": name}

    # prepare: place, compile, check
    checks = {}
    for name, c in cases.items():
        c["args"] = {}
        outs = {}
        for where, sharding in placements.items():
            Ax = jax.device_put(c["Ax"], sharding)
            b = jax.device_put(c["b"], sharding)
            c["args"][where] = (Ax, b)
            outs[where] = c["fn"](Ax, b, 1.0)
            jax.block_until_ready(outs[where])
        hlo = c["fn"].lower(*c["args"]["2 devices"], 1.0).compile().as_text()
        coll = re.findall(r"\s(all-gather|all-reduce|all-to-all|collective-permute)(?:-start)?\(", hlo)
        calls = sorted({line.split("=", 1)[1].split("custom-call(")[0].strip()
                        for line in hlo.splitlines() if "klujax." in line and "custom-call(" in line})
        x1, x2 = (np.asarray(outs[w]) for w in placements)
        err = float(np.abs(x1 - x2).max() / max(np.abs(x1).max(), 1e-300))
        checks[name] = {"collectives": coll, "calls": calls, "rel_diff": err,
                        "out_spec": str(outs["2 devices"].sharding.spec),
                        "on_one": outs["1 device"].sharding == one}
        assert err < 1e-10 and not coll, (name, checks[name])

    counter = [0]
    cpu = {f"{name}|{where}": [] for name in cases for where in placements}

    def measure(c: dict, where: str) -> float:
        Ax, b = c["args"][where]

        def call() -> None:
            counter[0] += 1
            jax.block_until_ready(c["fn"](Ax, b, 1.0 + 1e-9 * counter[0]))

        call()  # warm-up
        times = []
        start, cpu0 = time.perf_counter(), time.process_time()
        while len(times) < 3 or (time.perf_counter() - start) * 1e3 < args.target_ms:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        cpu[f"{c['name']}|{where}"].append((time.process_time() - cpu0) / (time.perf_counter() - start))
        return statistics.median(times)

    import gc
    gc.disable()
    rounds = []
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        order = [(name, where) for name in cases for where in placements]
        rng.shuffle(order)
        rounds.append({f"{name}|{where}": measure(cases[name], where) for name, where in order})
        print(f"[{args.threads}] round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    gc.enable()
    meta = {k: {kk: c[kk] for kk in ("system", "path", "n", "L")} for k, c in cases.items()}
    load = os.getloadavg()
    json.dump({"threads": args.threads, "rounds": rounds, "checks": checks, "cases": meta,
               "cpu_per_wall": {k: statistics.median(v) for k, v in cpu.items()}, "load": load,
               "jax": jax.__version__, "klujax": klujax.__version__}, sys.stdout)


#== the orchestrator ==#

def _q(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def _fmt_ms(t: tuple[float, float, float]) -> str:
    return f"{t[1] * 1e3:.2f} [{t[0] * 1e3:.2f}-{t[2] * 1e3:.2f}]"


def report(results: list[dict]) -> str:
    lines = ["| threads | case | 1 device, ms | 2 devices, ms | speedup (paired) | cpu/wall 1 dev | cpu/wall 2 dev |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        rounds = res["rounds"]
        for name in res["cases"]:
            one = [r[f"{name}|1 device"] for r in rounds]
            two = [r[f"{name}|2 devices"] for r in rounds]
            ratio = _q([a / b for a, b in zip(one, two)])
            cw = res["cpu_per_wall"]
            lines.append(f"| {res['threads']} | {name} | {_fmt_ms(_q(one))} | {_fmt_ms(_q(two))} | "
                         f"{ratio[1]:.2f}x [{ratio[0]:.2f}-{ratio[2]:.2f}] | "
                         f"{cw[name + '|1 device']:.2f} | {cw[name + '|2 devices']:.2f} |")
    lines += ["", "Checks (2 devices): per-device klujax calls, collectives in the compiled HLO, "
              "max relative difference to the 1-device result.", "",
              "| case | klujax calls (per device) | collectives | rel. diff | out spec |",
              "|---|---|---|---|---|"]
    for name, c in results[0]["checks"].items():
        lines.append(f"| {name} | {', '.join(c['calls'])} | {len(c['collectives'])} | "
                     f"{c['rel_diff']:.1e} | {c['out_spec']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--target-ms", type=float, default=150.0)
    ap.add_argument("--threads", default="1,all", help="comma list of KLUJAX_NUM_THREADS settings")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--quick", action="store_true", help="one system, two batch sizes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 11:
        ap.error("--rounds must be at least 11")
    if args.worker:
        args.paths = args.paths.split(",")
        worker(args)
        return
    results = []
    for threads in args.threads.split(","):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("KLUJAX_NUM_THREADS", None)
        if threads != "all":
            env["KLUJAX_NUM_THREADS"] = threads
        cmd = [sys.executable, __file__, "--worker", "--threads", threads, "--rounds",
               str(args.rounds), "--target-ms", str(args.target_ms), "--paths", args.paths,
               "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(out.stdout))
    loads = ", ".join(f"{r['load'][0]:.2f}" for r in results)
    print(f"# Sharded batch: 2 devices vs 1 (jax {results[0]['jax']}, klujax {results[0]['klujax']}, "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds; 1-min load average after each worker: "
          f"{loads})\n")
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
