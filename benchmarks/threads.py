"""Several klujax calls at once: threads in use, wall and CPU time, throughput.

    python benchmarks/threads.py                                   # this checkout, 11 rounds
    python benchmarks/threads.py --base-python /path/venv/bin/python   # + another build, paired

K klujax batched solves run concurrently, in two ways:

* ``threads K`` (K = 1, 2, 4): K Python threads, each calling a jitted batched solve in a
  loop (JAX releases the GIL while the computation runs), in a 1-device process;
* ``single 1``: one thread, every call timed on its own; the median per call is the
  latency of one call (robust to preemption on a loaded machine), to check that the cap
  costs a single call nothing;
* ``pmap 4`` and ``shard 4``: one call over 4 host devices
  (``--xla_force_host_platform_device_count=4``, a process of its own), by ``jax.pmap``
  and by ``jax.jit`` of a batch sharded over a 4-device mesh; XLA runs the 4 per-device
  klujax calls on 4 threads at once.

Every configuration does the same total work per measurement (``--members`` solves of
the same system, in calls of ``B`` members), every call with values scaled by a new
factor (no value-keyed reuse). Measured per configuration and round: wall time, process
CPU time (all threads, the sampler's included), throughput (members / s), and the
number of runnable threads of the process (state ``R`` in ``/proc/self/task/*/stat``,
the sampler thread itself not counted) sampled at ~1 kHz by a sampler thread: its peak
and its time-average. Where the build has ``_klujax.thread_stats()`` (the thread cap),
its peak count of busy klujax threads is reported too.

Rounds (at least 11) interleave every (build, configuration) pair in a fresh shuffled
order; reported are medians [inter-quartile range] over rounds and, with
``--base-python``, the median [IQR] of per-round paired ratios (this build / base).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (kind, n, members per call)
WORKLOADS = {"ladder-1000 B=64": ("ladder", 1000, 64), "ladder-100 B=1": ("ladder", 100, 1)}
CONFIGS_1DEV = ("threads 1", "threads 2", "threads 4", "single 1")
CONFIGS_4DEV = ("pmap 4", "shard 4")


#== the worker ==#

class Sampler:
    """Counts the runnable threads of this process at ~1 kHz while running."""

    def __init__(self, period: float = 1e-3):
        self.period = period
        self.own = None
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _count(self) -> int:
        r = 0
        for tid in os.listdir("/proc/self/task"):
            if int(tid) == self.own:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rindex(b")") + 2:][:1] == b"R":
                r += 1
        return r

    def _loop(self) -> None:
        self.own = threading.get_native_id()
        while not self._stop.is_set():
            self.samples.append(self._count())
            time.sleep(self.period)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker(devices: int) -> None:
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    import klujax
    from klujax import _klujax

    sys.path.insert(0, str(HERE))
    from systems import make_system

    stats = getattr(_klujax, "thread_stats", None)
    assert len(jax.devices()) == devices, jax.devices()
    configs = CONFIGS_1DEV if devices == 1 else CONFIGS_4DEV
    cases = {}
    for wname, (kind, n, B) in WORKLOADS.items():
        s = make_system(kind, n, batch=B)
        Ai, Aj = s.Ai, s.Aj

        def solve(Ax, b, scale, Ai=Ai, Aj=Aj):
            return klujax.solve(Ai, Aj, Ax * scale, b)

        f = jax.jit(solve)
        Ax, b = np.asarray(s.Ax), np.asarray(s.b)
        for cfg in configs:
            if cfg.startswith(("threads", "single")):
                fn, args = f, (Ax, b)
            elif cfg.startswith("pmap"):
                fn = jax.pmap(solve, in_axes=(0, 0, None))
                args = (np.stack([Ax] * devices), np.stack([b] * devices))
            else:
                mesh = Mesh(np.array(jax.devices()), ("batch",))
                sh = NamedSharding(mesh, P("batch"))
                fn = f
                args = (jax.device_put(np.concatenate([Ax] * devices), sh),
                        jax.device_put(np.concatenate([b] * devices), sh))
            x = np.asarray(fn(*args, 1.0)).reshape(-1, n)
            ref = np.asarray(f(Ax, b, 1.0))
            err = float(np.abs(x - np.concatenate([ref] * (x.shape[0] // B))).max() / np.abs(ref).max())
            assert err < 1e-10, (wname, cfg, err)
            cases[(wname, cfg)] = (fn, args, B)

    counter = [0]
    lock = threading.Lock()

    def scale() -> float:
        with lock:
            counter[0] += 1
            return 1.0 + 1e-9 * counter[0]

    def measure(wname: str, cfg: str, members: int) -> dict:
        fn, args, B = cases[(wname, cfg)]
        k = int(cfg.split()[1])
        per_call = B * (k if cfg.startswith(("pmap", "shard")) else 1)
        calls = max(1, members // per_call)
        jax.block_until_ready(fn(*args, scale()))  # warm-up
        call_med = None
        if cfg.startswith("single"):  # one call at a time, each timed: the latency of one call
            times = []
            with Sampler() as smp:
                c0 = time.process_time()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(*args, scale()))
                    times.append(time.perf_counter() - t0)
                cpu = time.process_time() - c0
            wall, call_med, done = sum(times), statistics.median(times), calls * B
        elif cfg.startswith("threads"):
            per_thread = max(1, calls // k)
            barrier = threading.Barrier(k + 1)
            errors: list[BaseException] = []

            def target() -> None:
                try:
                    barrier.wait()
                    for _ in range(per_thread):
                        jax.block_until_ready(fn(*args, scale()))
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)

            ths = [threading.Thread(target=target) for _ in range(k)]
            for t in ths:
                t.start()
            if stats:
                _klujax.reset_thread_stats()
            with Sampler() as smp:
                c0, t0 = time.process_time(), time.perf_counter()
                barrier.wait()
                for t in ths:
                    t.join()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if errors:
                raise errors[0]
            done = per_thread * k * B
        else:
            if stats:
                _klujax.reset_thread_stats()
            with Sampler() as smp:
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    jax.block_until_ready(fn(*args, scale()))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            done = calls * per_call
        st = stats() if stats else {}
        smp_ = smp.samples or [0]
        return {"wall": wall, "cpu": cpu, "members": done, "thr": done / wall, "call_med": call_med,
                "run_peak": max(smp_), "run_mean": statistics.fmean(smp_), "samples": len(smp_),
                "busy_peak": st.get("peak"), "cap": st.get("cap"),
                "declined": st.get("helpers_declined"), "backed_off": st.get("helpers_backed_off")}

    print(json.dumps({"ok": True, "jax": jax.__version__, "klujax": klujax.__file__,
                      "has_stats": bool(stats)}), flush=True)
    import gc
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        gc.collect()
        gc.disable()
        try:
            out = measure(msg["workload"], msg["config"], msg["members"])
        finally:
            gc.enable()
        print(json.dumps(out), flush=True)


#== the orchestrator ==#

class Worker:
    def __init__(self, python: str, devices: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
        env["JAX_PLATFORMS"] = "cpu"
        env.pop("PYTHONPATH", None)
        if devices > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", str(devices)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(HERE))
        self.hello = json.loads(self.proc.stdout.readline())

    def ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died (rc={self.proc.poll()})")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def q(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    m = statistics.median(xs)
    if len(xs) < 2:
        return m, m, m
    qs = statistics.quantiles(xs, n=4, method="inclusive")
    return m, qs[0], qs[2]


def fq(xs: list[float], fmt: str = "{:.1f}") -> str:
    m, lo, hi = q(xs)
    return f"{fmt.format(m)} [{fmt.format(lo)}–{fmt.format(hi)}]"


def report(builds: list[str], rounds: list[dict], hello: dict) -> str:
    keys = list(rounds[0])
    out = []
    for wname in WORKLOADS:
        out.append(f"\n### {wname}\n")
        out.append("| configuration | build | wall (ms) | CPU / wall | throughput (members/ms) | "
                   "runnable threads: peak | mean | busy klujax threads: peak (cap) |")
        out.append("|---|---|---|---|---|---|---|---|")
        for cfg in CONFIGS_1DEV + CONFIGS_4DEV:
            for build in builds:
                k = f"{build}|{wname}|{cfg}"
                if k not in keys or cfg.startswith("single"):
                    continue
                rs = [r[k] for r in rounds]
                busy = [r["busy_peak"] for r in rs if r["busy_peak"] is not None]
                busy_s = f"{fq(busy, '{:.0f}')} ({rs[0]['cap']})" if busy else "—"
                out.append(f"| {cfg} | {build} | {fq([r['wall'] * 1e3 for r in rs])} | "
                           f"{fq([r['cpu'] / r['wall'] for r in rs], '{:.2f}')} | "
                           f"{fq([r['thr'] / 1e3 for r in rs])} | {fq([r['run_peak'] for r in rs], '{:.0f}')} | "
                           f"{fq([r['run_mean'] for r in rs], '{:.2f}')} | {busy_s} |")
    out.append("\n### One call at a time: median of per-call times (robust to preemption)\n")
    out.append("| workload | " + " | ".join(f"{b} (µs per call)" for b in builds)
               + (f" | paired ratio {builds[0]} / {builds[1]} |" if len(builds) == 2 else " |"))
    out.append("|---|" + "---|" * (len(builds) + (len(builds) == 2)))
    for wname in WORKLOADS:
        ks = [f"{b}|{wname}|single 1" for b in builds]
        if not all(k in keys for k in ks):
            continue
        cells = [fq([r[k]["call_med"] * 1e6 for r in rounds]) for k in ks]
        if len(builds) == 2:
            cells.append(fq([r[ks[0]]["call_med"] / r[ks[1]]["call_med"] for r in rounds], "{:.3f}"))
        out.append(f"| {wname} | " + " | ".join(cells) + " |")
    if len(builds) == 2:
        a, b = builds
        out.append(f"\n### Paired ratios {a} / {b} (per round; < 1: {a} is faster / uses less)\n")
        out.append("| workload | configuration | wall | CPU time | mean runnable threads |")
        out.append("|---|---|---|---|---|")
        for wname in WORKLOADS:
            for cfg in CONFIGS_1DEV + CONFIGS_4DEV:
                ka, kb = f"{a}|{wname}|{cfg}", f"{b}|{wname}|{cfg}"
                if ka not in keys or kb not in keys or cfg.startswith("single"):
                    continue
                ratio = {m: [r[ka][m] / r[kb][m] for r in rounds if r[kb][m]] for m in ("wall", "cpu", "run_mean")}
                out.append(f"| {wname} | {cfg} | {fq(ratio['wall'], '{:.3f}')} | {fq(ratio['cpu'], '{:.3f}')} | "
                           f"{fq(ratio['run_mean'], '{:.2f}')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--members", type=int, default=1024,
                    help="solves per measurement, every configuration (ladder-100 B=1 uses 1/8)")
    ap.add_argument("--python", default=None, help="python of the build measured (default: .venv's)")
    ap.add_argument("--base-python", default=None, help="python of a second build to pair with (e.g. main)")
    ap.add_argument("--label", default="this", help="name of the build measured")
    ap.add_argument("--base-label", default="base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.rounds < 11:
        ap.error("--rounds must be at least 11")
    py = args.python or str(ROOT / ".venv" / "bin" / "python")
    builds = {args.label: py}
    if args.base_python:
        builds[args.base_label] = args.base_python
    workers = {(b, d): Worker(p, d) for b, p in builds.items() for d in (1, 4)}
    hello = {f"{b}/{d}": w.hello for (b, d), w in workers.items()}
    print(json.dumps(hello), file=sys.stderr)
    rng = random.Random(args.seed)
    pairs = [(b, w, c) for b in builds for w in WORKLOADS for c in CONFIGS_1DEV + CONFIGS_4DEV]
    rounds = []
    load0 = os.getloadavg()
    try:
        for r in range(args.rounds):
            rng.shuffle(pairs)
            res = {}
            for b, wname, cfg in pairs:
                d = 1 if cfg in CONFIGS_1DEV else 4
                members = args.members if WORKLOADS[wname][2] > 1 else args.members // 8
                res[f"{b}|{wname}|{cfg}"] = workers[(b, d)].ask(
                    {"cmd": "measure", "workload": wname, "config": cfg, "members": members})
            rounds.append(res)
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.close()
    load1 = os.getloadavg()
    print(f"# Concurrent klujax calls ({os.cpu_count()} CPUs, {args.rounds} rounds, "
          f"{args.members} members per measurement; 1-min load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after)")
    print(report(list(builds), rounds, hello))
    if args.json:
        Path(args.json).write_text(json.dumps({"builds": builds, "hello": hello, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
