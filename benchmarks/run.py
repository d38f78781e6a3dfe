#!/usr/bin/env python
"""klujax benchmark harness: ours vs klujax 0.5.2 vs scipy splu vs raw KLU (C).

    python benchmarks/run.py --quick          # ~3-5 minutes on 2 cores
    python benchmarks/run.py                  # the full set (n up to 100_000; long)

Every contender is a long-lived worker process (imports and jit compilation happen once,
in the "prepare" phase). Measurements are interleaved: each round shuffles the order of
the contenders and of the cases, and every contender measures every one of its cases
once per round. A measurement is warm-up call(s) then enough timed calls to fill
--target-ms (at least --min-reps); its value is the median per-call time. Over rounds we
report the median and the inter-quartile range, and for ratios the median of per-round
*paired* ratios (ours / other measured in the same round). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

try:
    import numpy as np
except ImportError:  # an interpreter without NumPy: rerun under the repository's venv
    _venv = ROOT / ".venv" / "bin" / "python"
    if _venv.exists() and Path(sys.executable).resolve() != _venv.resolve():
        os.execv(str(_venv), [str(_venv), *sys.argv])
    raise
BUILD = HERE / "build"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import systems  # noqa: E402

#== what is measured ==#

SINGLE_PATHS = ["solve", "solve_with_symbol", "factor", "refactor", "solve_with_numeric",
                "tsolve_with_numeric", "refactor_and_solve", "fwd_sum", "grad_Ax", "grad_b", "jacfwd_b"]
SCIPY_PATHS = {"solve", "factor", "solve_with_numeric", "tsolve_with_numeric"}
GRAD_PATHS = {"fwd_sum", "grad_Ax", "grad_b", "jacfwd_b"}
THREAD_PATHS_SINGLE = ["solve"]  # measured by the pinned ours@Ncpu workers besides the batched ones
RAW_OPS = ["analyze", "factor", "refactor", "solve", "tsolve", "afs", "fs", "rs"]
RAW_LABEL = {"analyze": "analyze", "factor": "factor", "refactor": "refactor", "solve": "solve",
             "tsolve": "tsolve", "afs": "a+f+s", "fs": "f+s", "rs": "r+s", "batch_rs": "B x (r+s)"}
# the raw KLU operation that is the physical limit of each path (None: no counterpart)
RAW_OF = {"solve": "afs", "solve_with_symbol": "fs", "factor": "factor", "refactor": "refactor",
          "solve_with_numeric": "solve", "tsolve_with_numeric": "tsolve", "refactor_and_solve": "rs"}
# extra rows: the same measurement of ours against a second raw reference
RAW_ALT = {"solve": "rs"}
PATH_LABEL = {"solve": "solve", "solve_with_symbol": "solve_with_symbol", "factor": "factor",
              "refactor": "refactor", "solve_with_numeric": "solve_with_numeric",
              "tsolve_with_numeric": "tsolve_with_numeric", "refactor_and_solve": "refactor_and_solve"}
RESID_TOL = 1e-8

OURS, OLD, SCIPY, RAW = "ours", "klujax05", "scipy", "raw"
TITLE = {OURS: "ours", OLD: "klujax 0.5.2", SCIPY: "scipy splu", RAW: "raw KLU"}
DROPPABLE = (OLD, SCIPY)  # contenders whose over-budget cases are dropped (ours and raw never are)


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def case_key(c: dict) -> str:
    return f"{c['sys']}|{c['path']}|{c.get('batch', 1)}"


#== workers ==#

class WorkerDied(RuntimeError):
    pass


class Worker:
    """A contender process speaking one JSON object per line."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: Path = BUILD):
        self.name = name
        self.argv = argv
        (BUILD / "logs").mkdir(parents=True, exist_ok=True)
        self.log_path = BUILD / "logs" / f"{name.replace('@', '_')}.log"
        self.errf = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errf,
                                     text=True, bufsize=1, env=env, cwd=str(cwd))
        self.info: dict = {}
        self.cases: list[dict] = []  # the supported, prepared cases

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise WorkerDied(self._died()) from e

    def _recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerDied(self._died())
        return json.loads(line)

    def _died(self) -> str:
        self.errf.flush()
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
        return f"worker {self.name} died (rc={self.proc.poll()}); stderr tail:\n{tail}"

    def ask(self, msg: dict) -> dict:
        self._send(json.dumps(msg))
        return self._recv()

    # the uniform interface
    def hello(self) -> dict:
        return self.ask({"cmd": "hello"})

    def load(self, sid: str, npz: Path, raw: Path) -> dict:
        return self.ask({"cmd": "load", "sys": sid, "npz": str(npz)})

    def prepare(self, case: dict) -> dict:
        return self.ask({"cmd": "prepare", "case": case})

    def measure(self, case: dict, p: dict, check: bool) -> dict:
        return self.ask({"cmd": "measure", "case": case, "target_s": p["target_s"], "min_reps": p["min_reps"],
                         "max_reps": p["max_reps"], "warmup": p["warmup"], "check": check})

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.ask({"cmd": "quit"}) if not isinstance(self, RawWorker) else self._send("quit")
                self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.errf.close()


class RawWorker(Worker):
    """klu_raw --serve: a line protocol, JSON answers (see klu_raw.c)."""

    def __init__(self, name: str, exe: Path):
        super().__init__(name, [str(exe), "--serve"])
        self.ids: dict[str, int] = {}
        self.info = self._recv()  # the ready line

    def hello(self) -> dict:
        return {"ok": True, "versions": {"klu": self.info.get("klu_version", "?")}}

    def load(self, sid: str, npz: Path, raw: Path) -> dict:
        i = self.ids.setdefault(sid, len(self.ids))
        self._send(f"load {i} {raw}")
        return self._recv()

    def _run(self, case: dict, target_s: float, min_reps: int, max_reps: int, warmup: int) -> dict:
        op = case["path"]
        self._send(f"run {self.ids[case['sys']]} {op} {target_s * 1e9:.0f} {min_reps} {max_reps} "
                   f"{case.get('batch', 1)} {warmup}")
        r = self._recv()
        if not r.get("ok"):
            return r
        return {"ok": True, "reps": r["reps"], "wall_med": r["wall_med_ns"] * 1e-9, "wall_min": r["wall_min_ns"] * 1e-9,
                "wall_max": r["wall_max_ns"] * 1e-9, "cpu": r["cpu_med_ns"] * 1e-9, "resid": r["resid"]}

    def prepare(self, case: dict) -> dict:
        r = self._run(case, 0.0, 1, 1, 1)
        if not r.get("ok"):
            return {"ok": True, "supported": False, "why": r.get("error")}
        return {"ok": True, "supported": True, "resid": r["resid"], "est": r["wall_med"],
                "t_call": r["wall_med"] * case.get("batch", 1)}

    def measure(self, case: dict, p: dict, check: bool) -> dict:
        return self._run(case, p["target_s"], p["min_reps"], p["max_reps"], p["warmup"])


def build_raw(force: bool = False) -> Path | None:
    src = HERE / "klu_raw.c"
    exe = BUILD / "klu_raw"
    if exe.exists() and not force and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe
    BUILD.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O2", str(src), "-I/usr/include/suitesparse", "-lklu", "-lamd", "-lcolamd", "-lbtf",
           "-lsuitesparseconfig", "-lm", "-o", str(exe)]
    log("compiling raw KLU driver:", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        log("WARNING: could not compile klu_raw.c; the raw KLU contender is skipped\n" + r.stderr)
        return None
    return exe


def worker_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["JAX_ENABLE_X64"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def resolve_ours_python(arg: str | None) -> str:
    if arg:
        return arg
    probe = [sys.executable, "-c", "import klujax, sys; sys.stdout.write(klujax.__file__)"]
    r = subprocess.run(probe, capture_output=True, text=True, cwd=str(BUILD), env=worker_env())
    if r.returncode == 0 and Path(r.stdout).resolve().is_relative_to(ROOT / "klujax"):
        return sys.executable
    venv_py = ROOT / ".venv" / "bin" / "python"
    if venv_py.exists():
        return str(venv_py)
    return sys.executable


def resolve_old_python(arg: str | None, setup: bool) -> str | None:
    path = Path(arg) if arg else HERE / ".venv-klujax05" / "bin" / "python"
    if path.exists():
        return str(path)
    if not setup:
        log(f"NOTE: {path} not found: klujax 0.5.2 is skipped (pass --setup-old to create that venv, "
            "or --old-python PATH)")
        return None
    venv = path.parent.parent if arg else HERE / ".venv-klujax05"
    log(f"creating {venv} with klujax==0.5.2 ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "klujax==0.5.2"], check=True)
    return str(venv / "bin" / "python")


#== machine info ==#

def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu, "mem": mem,
            "kernel": platform.release(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg()}


#== statistics ==#

def q(vals: list[float]) -> tuple[float, float, float]:
    a = np.asarray(vals, float)
    return float(np.median(a)), float(np.percentile(a, 25)), float(np.percentile(a, 75))


def fmt_t(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _unit(s: float) -> tuple[float, str]:
    return (1e6, "µs") if s < 1e-3 else (1e3, "ms") if s < 1 else (1.0, "s")


def fmt_tq(vals: list[float] | None) -> str:
    """median [q1–q3] in the median's unit."""
    if not vals:
        return "—"
    m, lo, hi = q(vals)
    f, u = _unit(m)
    d = 1 if m * f < 100 else 0
    return f"{m * f:.{d}f} [{lo * f:.{d}f}–{hi * f:.{d}f}] {u}"


def fmt_r(vals: list[float] | None) -> str:
    if not vals:
        return "—"
    m, lo, hi = q(vals)
    return f"**{m:.2f}** [{lo:.2f}–{hi:.2f}]"


#== the two phases every harness here shares ==#

def prepare_all(workers: dict[str, Worker], cases: dict[str, list[dict]], tol: float,
                resid_rows: list, errors: list[str], unsupported: dict[str, list[str]],
                drop: Any = None) -> None:
    """Prepare (compile + check) every worker's cases, all workers in parallel (a thread
    each); sets ``w.cases`` to the prepared, supported cases that ``drop(name, case, reply)``
    does not reject. Appends ``(name, case key, resid, "prepare")`` to resid_rows."""

    def prep(name: str) -> None:
        w = workers[name]
        ok_cases = []
        for c in cases.get(name, []):
            try:
                r = w.prepare(c)
            except WorkerDied as e:
                errors.append(f"{name}: {e}")
                break
            if not r.get("ok"):
                errors.append(f"{name} {case_key(c)}: prepare failed: {r.get('error')}")
                continue
            if not r.get("supported"):
                unsupported.setdefault(name, []).append(f"{case_key(c)} ({r.get('why')})")
                continue
            resid_rows.append((name, case_key(c), float(r["resid"]), "prepare"))
            if not float(r["resid"]) <= tol:  # a wrong answer: an error, never a footnote
                log(f"WRONG ANSWER: residual {float(r['resid']):.2e} for {name} {case_key(c)}")
                errors.append(f"{name} {case_key(c)}: WRONG ANSWER, residual {float(r['resid']):.2e}")
            if drop is not None and drop(name, c, r):
                continue
            ok_cases.append(c)
        w.cases = ok_cases

    threads = [threading.Thread(target=prep, args=(name,)) for name in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run_rounds(workers: dict[str, Worker], params: dict, rounds: int, rng: random.Random, tol: float,
               resid_rows: list, errors: list[str], after_round: Any = None,
               t_start: float | None = None) -> dict[str, dict[str, list[dict]]]:
    """``rounds`` interleaved rounds: each shuffles the order of the workers and of each
    worker's cases, and every worker measures each of its cases once (with a check in the
    last round). Returns ``{name: {case key: [measurement per round]}}``;
    ``after_round(rnd, res, alive)`` may prune ``w.cases``."""
    t_start = time.perf_counter() if t_start is None else t_start
    res: dict[str, dict[str, list[dict]]] = {name: {} for name in workers}
    alive = dict(workers)
    for rnd in range(rounds):
        order = list(alive)
        rng.shuffle(order)
        t0 = time.perf_counter()
        last = rnd == rounds - 1
        for name in order:
            w = alive.get(name)
            if w is None:
                continue
            cs = list(w.cases)
            rng.shuffle(cs)
            for c in cs:
                try:
                    r = w.measure(c, params, check=last)
                except WorkerDied as e:
                    errors.append(f"{name}: {e}")
                    alive.pop(name, None)
                    break
                if not r.get("ok"):
                    errors.append(f"{name} {case_key(c)} round {rnd}: {r.get('error')}")
                    continue
                r["round"] = rnd
                res[name].setdefault(case_key(c), []).append(r)
                if last and r.get("resid") is not None:
                    resid_rows.append((name, case_key(c), float(r["resid"]), "last round"))
                    if not float(r["resid"]) <= tol:
                        log(f"WRONG ANSWER: residual {float(r['resid']):.2e} for {name} {case_key(c)}")
                        errors.append(f"{name} {case_key(c)} round {rnd}: WRONG ANSWER, "
                                      f"residual {float(r['resid']):.2e}")
        if after_round is not None:
            after_round(rnd, res, alive)
        log(f"round {rnd + 1}/{rounds}: {time.perf_counter() - t0:.1f} s "
            f"(order {', '.join(order)}; total {time.perf_counter() - t_start:.0f} s)")
    return res


#== the run ==#

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, short measurements (still >= 11 rounds)")
    ap.add_argument("--sizes", type=str, default=None, help="comma list of n (default quick 100,1000,10000; full adds 100000)")
    ap.add_argument("--kinds", type=str, default=",".join(systems.KINDS), help="ladder,grid,random")
    ap.add_argument("--dtypes", type=str, default="f64,c128", help="f64,c128")
    ap.add_argument("--complex-kinds", type=str, default=None,
                    help="kinds that get c128 systems (default: quick ladder only, full all)")
    ap.add_argument("--batches", type=str, default="64,256", help="n_lhs of the batched solves")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=str, default="1",
                    help="CPU counts for extra pinned workers of ours (taskset -c 0..k-1) measuring the batched "
                         "solves; counts >= nproc are the unpinned main worker. '' disables")
    ap.add_argument("--target-ms", type=float, default=None, help="time per measurement (quick 8, full 40)")
    ap.add_argument("--min-reps", type=int, default=None, help="timed calls per measurement at least (quick 3, full 5)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls before each measurement (quick 1, full 2)")
    ap.add_argument("--batch-cap-ms", type=float, default=None,
                    help="skip a batched case when n_lhs x raw (refactor+solve) exceeds this (quick 20, full 2000)")
    ap.add_argument("--max-call-s", type=float, default=None,
                    help="skip a case whose raw estimate, or one call of a contender, exceeds this "
                         "(quick 0.25, full 5)")
    ap.add_argument("--jac-max-n", type=int, default=None, help="jacfwd only for n <= this (quick 100, full 1000)")
    ap.add_argument("--contenders", type=str, default="ours,klujax05,scipy,raw")
    ap.add_argument("--ours-python", type=str, default=None, help="python of ours (default: this one if it imports "
                    "the repository's klujax, else the repository's .venv)")
    ap.add_argument("--old-python", type=str, default=None,
                    help="python of a venv with klujax 0.5.2 (default benchmarks/.venv-klujax05/bin/python)")
    ap.add_argument("--setup-old", action="store_true", help="create benchmarks/.venv-klujax05 if it is missing")
    ap.add_argument("--resid-tol", type=float, default=RESID_TOL, help="warn above this ||Ax-b||/||b||")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=str, default=None, help="markdown output (default benchmarks/results/<date>.md)")
    opts = ap.parse_args()

    quick = opts.quick
    sizes = [int(s) for s in (opts.sizes or ("100,1000,10000" if quick else "100,1000,10000,100000")).split(",")]
    kinds = [k for k in opts.kinds.split(",") if k]
    dtypes = [d for d in opts.dtypes.split(",") if d]
    batches = [int(b) for b in opts.batches.split(",") if b]
    params = {"target_s": (opts.target_ms or (8 if quick else 40)) / 1e3,
              "min_reps": opts.min_reps or (3 if quick else 5),
              "max_reps": 5000, "warmup": opts.warmup or (1 if quick else 2)}
    batch_cap = (opts.batch_cap_ms or (20 if quick else 2000)) / 1e3
    max_call = opts.max_call_s or (0.25 if quick else 5.0)
    jac_max_n = opts.jac_max_n or (100 if quick else 1000)
    if opts.rounds < 11:
        log(f"NOTE: --rounds {opts.rounds} < 11: fewer rounds than the suite's standard")
    wanted = set(opts.contenders.split(","))
    rng = random.Random(opts.seed)
    t_start = time.perf_counter()
    info = machine_info()
    info["command"] = " ".join(shlex.quote(a) for a in sys.argv)
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "cases").mkdir(exist_ok=True)

    #-- workers --#
    workers: dict[str, Worker] = {}
    nproc = len(os.sched_getaffinity(0))
    exe = build_raw() if RAW in wanted else None
    if exe:
        workers[RAW] = RawWorker(RAW, exe)
    #-- systems and cases --#
    ckinds = (opts.complex_kinds or ("ladder" if quick else ",".join(kinds))).split(",")
    specs = [(k, n, d == "c128") for n in sizes for k in kinds for d in dtypes if d == "f64" or k in ckinds]
    sysinfo: dict[str, dict] = {}
    raw_est: dict[str, dict[str, float]] = {}
    log(f"generating {len(specs)} systems and estimating costs with raw KLU ...")
    for kind, n, cplx in specs:
        s = systems.make_system(kind, n, cplx, batch=4, seed=opts.seed)
        sid = s.name
        rawf = BUILD / "cases" / f"{sid}.bin"
        npzf = BUILD / "cases" / f"{sid}.npz"
        systems.write_raw(s, rawf)
        est: dict[str, float] = {}
        if RAW in workers:
            workers[RAW].load(sid, npzf, rawf)
            for op in ("rs", "afs", "fs"):
                r = workers[RAW].measure({"sys": sid, "path": op, "batch": 1},
                                         {"target_s": 0.003, "min_reps": 3, "max_reps": 100, "warmup": 1}, False)
                est[op] = r.get("wall_med", float("nan"))
        else:  # no raw driver: a crude nnz-based guess (10 ns per stored entry and call)
            est = {op: 1e-8 * s.nnz * 20 for op in ("rs", "afs", "fs")}
        raw_est[sid] = est
        allowed_b = [B for B in batches if B * est["rs"] <= batch_cap]
        bmax = max([4] + allowed_b)
        if bmax > 4:
            s = systems.make_system(kind, n, cplx, batch=bmax, seed=opts.seed)
            systems.write_raw(s, rawf)
        systems.write_npz(s, npzf)
        sysinfo[sid] = {"kind": kind, "n": s.n, "nnz": s.nnz, "complex": cplx, "batch": s.batch,
                        "batches": allowed_b, "skipped": [], "est": est, "files": (npzf, rawf)}
        if RAW in workers:
            workers[RAW].load(sid, npzf, rawf)

    # the Python workers start only now, so that the raw estimates above ran on a quiet machine
    worker_py = str(HERE / "_worker.py")
    ours_py = resolve_ours_python(opts.ours_python)
    if OURS in wanted:
        workers[OURS] = Worker(OURS, [ours_py, worker_py, "--contender", "ours"], worker_env())
    if OLD in wanted:
        old_py = resolve_old_python(opts.old_python, opts.setup_old)
        if old_py:
            workers[OLD] = Worker(OLD, [old_py, worker_py, "--contender", "klujax05"], worker_env())
    if SCIPY in wanted:
        workers[SCIPY] = Worker(SCIPY, [ours_py, worker_py, "--contender", "scipy"], worker_env())
    pinned: list[str] = []
    if OURS in wanted and shutil.which("taskset"):
        for t in sorted({int(x) for x in opts.threads.split(",") if x.strip()}):
            if 1 <= t < nproc:
                name = f"ours@{t}cpu"
                cpus = sorted(os.sched_getaffinity(0))[:t]
                extra = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()} \
                    if t == 1 else {}
                workers[name] = Worker(name, ["taskset", "-c", ",".join(map(str, cpus)), ours_py, worker_py,
                                              "--contender", "ours"], worker_env(extra))
                pinned.append(name)
    elif opts.threads.strip():
        log("NOTE: taskset not found: no 1-CPU comparison")
    versions: dict[str, dict] = {}
    for name, w in list(workers.items()):
        try:
            h = w.hello()
        except WorkerDied as e:
            log(f"WARNING: {e}")
            workers.pop(name)
            continue
        if not h.get("ok"):
            log(f"WARNING: contender {name} failed to start: {h.get('error')}")
            workers.pop(name)
            continue
        versions[name] = h.get("versions", {})
        versions[name]["affinity"] = h.get("affinity")
    if OLD in versions:
        f = versions[OLD].get("klujax_file", "")
        if Path(f).resolve().is_relative_to(ROOT / "klujax"):
            log("ERROR: the klujax 0.5.2 worker imported the repository's klujax; dropping it")
            workers.pop(OLD).close()
    if OURS in versions and not Path(versions[OURS].get("klujax_file", "/")).resolve().is_relative_to(ROOT):
        log(f"WARNING: ours imports klujax from {versions[OURS].get('klujax_file')}, not from {ROOT}")
    old_dist = None
    if OLD in workers:
        r = subprocess.run([workers[OLD].argv[0], "-c", "import importlib.metadata as m; print(m.version('klujax'))"],
                           capture_output=True, text=True, cwd=str(BUILD), env=worker_env())
        old_dist = r.stdout.strip() or "?"
        versions[OLD]["klujax_dist"] = old_dist

    cases: dict[str, list[dict]] = {name: [] for name in workers}
    for sid, si in sysinfo.items():
        npzf, rawf = si.pop("files")
        est, allowed_b, cplx, kind = si["est"], si["batches"], si["complex"], si["kind"]
        for name, w in workers.items():
            if name != RAW:
                w.load(sid, npzf, rawf)
        # single-matrix paths, skipping those whose raw estimate is too long
        for path in SINGLE_PATHS:
            if path in GRAD_PATHS:
                if cplx or (path == "jacfwd_b" and si["n"] > jac_max_n):
                    continue
                e = 3 * est["fs"]
            else:
                e = est.get(RAW_OF.get(path, "afs"), est["afs"])
            if not e <= max_call:
                sysinfo[sid]["skipped"].append(path)
                continue
            case = {"sys": sid, "path": path, "batch": 1}
            if path == "jacfwd_b":
                case["jac_max_n"] = jac_max_n
            for name in (OURS, OLD):
                if name in workers:
                    cases[name].append(dict(case))
            if SCIPY in workers and path in SCIPY_PATHS:
                cases[SCIPY].append(dict(case))
            for name in pinned:
                if path in THREAD_PATHS_SINGLE:
                    cases[name].append(dict(case))
        for B in allowed_b:
            case = {"sys": sid, "path": f"solve_b{B}", "batch": B}
            # scipy has no batching: its Python loop's per-matrix time does not depend on B,
            # so only the smallest batch is measured
            for name in [OURS, OLD, *pinned] + ([SCIPY] if B == min(allowed_b) else []):
                if name in workers:
                    cases[name].append(dict(case))
        skipped_b = [B for B in batches if B not in allowed_b]
        if skipped_b:
            sysinfo[sid]["skipped"] += [f"solve_b{B}" for B in skipped_b]
        if RAW in workers:
            for op in RAW_OPS:
                cases[RAW].append({"sys": sid, "path": op, "batch": 1})
            for B in allowed_b:
                cases[RAW].append({"sys": sid, "path": "batch_rs", "batch": B})

    #-- prepare (compile + check), all workers in parallel --#
    log(f"preparing {sum(len(v) for v in cases.values())} cases on {len(workers)} workers "
        f"(imports, jit compilation, residual checks) ...")
    resid_rows: list[tuple[str, str, float, str]] = []  # (contender, case, resid, phase)
    errors: list[str] = []
    unsupported: dict[str, list[str]] = {}
    too_slow: list[str] = []

    def drop_prepared(name: str, c: dict, r: dict) -> bool:
        # a comparison contender hopelessly over budget (the timing here is rough: every
        # worker is compiling at once) is dropped now; the rest is judged after round 1
        if name in DROPPABLE and r.get("t_call", 0.0) > 10 * max_call:
            too_slow.append(f"{TITLE.get(name, name)} {case_key(c).replace('|', ' ')} "
                            f"(~{fmt_t(r['t_call'])} per call while compiling)")
            return True
        return False

    prepare_all(workers, cases, opts.resid_tol, resid_rows, errors, unsupported, drop_prepared)
    t_prep = time.perf_counter() - t_start
    log(f"prepared in {t_prep:.0f} s")

    #-- interleaved rounds --#
    def after_round(rnd: int, res: dict, alive: dict) -> None:
        if rnd != 0:
            return
        # comparison contenders (never ours or raw KLU) whose call exceeds the budget stop here
        for name in DROPPABLE:
            w = alive.get(name)
            if w is None:
                continue
            keep = []
            for c in w.cases:
                rs = res[name].get(case_key(c), [])
                t_call = rs[0]["wall_med"] * c.get("batch", 1) if rs else 0.0
                if t_call > max_call:
                    too_slow.append(f"{TITLE.get(name, name)} {case_key(c).replace('|', ' ')} "
                                    f"({fmt_t(t_call)} per call in round 1)")
                    res[name].pop(case_key(c), None)
                else:
                    keep.append(c)
            w.cases = keep

    res = run_rounds(workers, params, opts.rounds, rng, opts.resid_tol, resid_rows, errors, after_round, t_start)
    for w in workers.values():
        w.close()
    info["loadavg_end"] = os.getloadavg()
    info["elapsed_s"] = time.perf_counter() - t_start
    info["prepare_s"] = t_prep

    md = report(info, versions, opts, params, sysinfo, res, resid_rows, errors, unsupported, too_slow, pinned,
                nproc, batch_cap, max_call, jac_max_n)
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    out = Path(opts.out) if opts.out else RESULTS / f"{stamp}.md"
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(
        {"info": info, "versions": versions, "params": params, "systems": sysinfo, "results": res,
         "residuals": resid_rows, "errors": errors, "unsupported": unsupported}, indent=1, default=str))
    log(f"wrote {out} and {out.with_suffix('.json')} ({info['elapsed_s']:.0f} s in all)")


#== the report ==#

def report(info, versions, opts, params, sysinfo, res, resid_rows, errors, unsupported, too_slow, pinned,
           nproc, batch_cap, max_call, jac_max_n) -> str:
    L: list[str] = []
    w = L.append

    def vals(name: str, key: str, field: str = "wall_med") -> dict[int, float]:
        return {r["round"]: r[field] for r in res.get(name, {}).get(key, [])}

    def series(name: str, key: str, field: str = "wall_med") -> list[float]:
        return list(vals(name, key, field).values())

    def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
        return [a[r] / b[r] for r in a if r in b and b[r] > 0]

    contenders = [c for c in (OURS, OLD, SCIPY, RAW) if c in res]
    tol = opts.resid_tol
    bad_resid = {(r[0], r[1]) for r in resid_rows if not r[2] <= tol}

    def mark(name: str, key: str, cell: str) -> str:
        return cell + " ⚠ residual" if (name, key) in bad_resid else cell
    w(f"# klujax benchmarks — {info['date']}")
    w("")
    w(f"- machine: {info['cpu']}, nproc={info['nproc']} (affinity {info['affinity']}), {info['mem']}, "
      f"Linux {info['kernel']}")
    la0, la1 = info["loadavg_start"], info["loadavg_end"]
    w(f"- load average (1/5/15 min): start {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, "
      f"end {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}" + ("  **(machine busy: numbers are noisy)**"
                                                          if max(la0[0], la1[0]) > 0.5 * (info['nproc'] or 1) + 0.5 else ""))
    for name in contenders + pinned:
        v = versions.get(name, {})
        w(f"- {TITLE.get(name, name)}: " + ", ".join(f"{k} {v[k]}" for k in v if k not in ("affinity",))
          + (f", CPUs {v['affinity']}" if v.get("affinity") else ""))
    w(f"- command: `{info['command']}`; {opts.rounds} interleaved rounds; per measurement "
      f"{params['warmup']} warm-up call(s) then >= {params['min_reps']} timed calls filling "
      f"{params['target_s'] * 1e3:.0f} ms; batched cases only where n_lhs x raw r+s <= {batch_cap * 1e3:.0f} ms; "
      f"jacfwd for n <= {jac_max_n}")
    w(f"- elapsed {info['elapsed_s']:.0f} s (prepare/compile {info['prepare_s']:.0f} s)")
    w("")
    w("Cells: median over rounds [inter-quartile range] of the median per-call wall time (per matrix "
      "for `solve_bN`). Ratios: median [IQR] over rounds of the *paired* per-round ratio; < 1 means "
      "ours is faster. `raw op`: the raw KLU loop each path is compared with (a = analyze, f = factor, "
      "r = refactor, s = solve).")
    w("")

    #-- main table --#
    w("## Time per call")
    w("")
    w("| system | path | ours | klujax 0.5.2 | scipy splu | raw KLU | raw op | ours/raw | ours/0.5.2 | ours/scipy |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    notable: list[tuple[float, str]] = []
    for sid, si in sysinfo.items():
        for path in [p for p in SINGLE_PATHS if p not in GRAD_PATHS] + [f"solve_b{B}" for B in si["batches"]]:
            key = f"{sid}|{path}|{int(path[7:]) if path.startswith('solve_b') else 1}"
            if not any(key in res.get(c, {}) for c in contenders):
                continue
            raw_ops = [("batch_rs", int(path[7:]))] if path.startswith("solve_b") else \
                [(RAW_OF[path], 1)] + ([(RAW_ALT[path], 1)] if path in RAW_ALT else [])
            o = vals(OURS, key)
            for i, (rop, rb) in enumerate(raw_ops):
                rkey = f"{sid}|{rop}|{rb}"
                rv = vals(RAW, rkey)
                cells = [mark(c, key, fmt_tq(series(c, key))) for c in (OURS, OLD, SCIPY)] if i == 0 \
                    else ["″", "″", "″"]
                ratios = [fmt_r(paired(o, rv))]
                ratios += [fmt_r(paired(o, vals(OLD, key))), fmt_r(paired(o, vals(SCIPY, key)))] if i == 0 else ["", ""]
                label = f"`{path}`" + (" (cached pattern)" if i > 0 else "")
                w(f"| {sid} | {label} | " + " | ".join(cells) + f" | {mark(RAW, rkey, fmt_tq(list(rv.values())))} | "
                  f"{RAW_LABEL[rop]}{f' (B={rb})' if rop == 'batch_rs' else ''} | " + " | ".join(ratios) + " |")
                pr = paired(o, rv)
                if pr:
                    notable.append((float(np.median(pr)), f"{sid} `{path}` vs raw {RAW_LABEL[rop]}: ours "
                                    f"{fmt_t(np.median(list(o.values())))} vs {fmt_t(np.median(list(rv.values())))}"))
    w("")

    #-- CPU --#
    w("## CPU time per call")
    w("")
    w("Process CPU time (all threads, `time.process_time`) per call for the Python contenders; thread CPU "
      "time (`CLOCK_THREAD_CPUTIME_ID`) for raw KLU. `cpu/wall` > 1 means more than one core was busy.")
    w("")
    w("| system | path | ours cpu | ours cpu/wall | klujax 0.5.2 cpu | scipy cpu | raw cpu (op) |")
    w("|---|---|---|---|---|---|---|")
    for sid, si in sysinfo.items():
        for path in [p for p in SINGLE_PATHS] + [f"solve_b{B}" for B in si["batches"]]:
            b = int(path[7:]) if path.startswith("solve_b") else 1
            key = f"{sid}|{path}|{b}"
            if key not in res.get(OURS, {}):
                continue
            oc, ow = series(OURS, key, "cpu"), series(OURS, key)
            rop = ("batch_rs", b) if path.startswith("solve_b") else (RAW_OF.get(path), 1)
            rc = series(RAW, f"{sid}|{rop[0]}|{rop[1]}", "cpu") if rop[0] else []
            w(f"| {sid} | `{path}` | {fmt_t(np.median(oc))} | {np.median(oc) / np.median(ow):.2f} | "
              f"{fmt_t(np.median(series(OLD, key, 'cpu'))) if series(OLD, key) else '—'} | "
              f"{fmt_t(np.median(series(SCIPY, key, 'cpu'))) if series(SCIPY, key) else '—'} | "
              f"{fmt_t(np.median(rc)) + ' (' + RAW_LABEL[rop[0]] + ')' if rc else '—'} |")
    w("")

    #-- gradients --#
    w("## Gradients (real systems)")
    w("")
    w("`fwd` = `jit(sum(solve(Ai, Aj, Ax, b)))`, `grad_Ax` / `grad_b` = `jit(grad(...))` of it; every call gets "
      "values never seen before (so no factorization can be reused across calls). Ratios are per-round "
      "paired grad/fwd of the same contender. `jacfwd_b`: `jit(jacfwd(solve, argnums=b))`.")
    w("")
    w("| system | ours fwd | ours grad_Ax | grad_Ax/fwd | ours grad_b | grad_b/fwd | 0.5.2 fwd | 0.5.2 grad_Ax/fwd | "
      "0.5.2 grad_b/fwd | grad_Ax ours/0.5.2 | jacfwd_b ours | jacfwd_b 0.5.2 | jacfwd ours/0.5.2 |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sid, si in sysinfo.items():
        k = {p: f"{sid}|{p}|1" for p in GRAD_PATHS}
        if k["fwd_sum"] not in res.get(OURS, {}):
            continue
        of, og, ob = vals(OURS, k["fwd_sum"]), vals(OURS, k["grad_Ax"]), vals(OURS, k["grad_b"])
        lf, lg, lb = vals(OLD, k["fwd_sum"]), vals(OLD, k["grad_Ax"]), vals(OLD, k["grad_b"])
        oj, lj = vals(OURS, k["jacfwd_b"]), vals(OLD, k["jacfwd_b"])
        w(f"| {sid} | {fmt_tq(list(of.values()))} | {fmt_tq(list(og.values()))} | {fmt_r(paired(og, of))} | "
          f"{fmt_tq(list(ob.values()))} | {fmt_r(paired(ob, of))} | {fmt_tq(list(lf.values()))} | "
          f"{fmt_r(paired(lg, lf))} | {fmt_r(paired(lb, lf))} | {fmt_r(paired(og, lg))} | "
          f"{fmt_tq(list(oj.values()))} | {fmt_tq(list(lj.values()))} | {fmt_r(paired(oj, lj))} |")
    w("")

    #-- threads --#
    if pinned:
        w("## Threads: ours on all CPUs vs pinned")
        w("")
        w(f"The pinned workers run `taskset -c 0..k-1` (1 CPU also with "
          f"`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`); the main worker may use all {nproc} CPUs. "
          "Speedup = per-round paired pinned/all (> 1: all CPUs are faster).")
        w("")
        w("| system | path | ours all CPUs | cpu/wall | " + " | ".join(
            f"{p} | {p} cpu/wall | speedup all vs {p}" for p in pinned) + " | raw KLU (1 thread) |")
        w("|---|---|---|---|" + "---|---|---|" * len(pinned) + "---|")
        for sid, si in sysinfo.items():
            for path in THREAD_PATHS_SINGLE + [f"solve_b{B}" for B in si["batches"]]:
                b = int(path[7:]) if path.startswith("solve_b") else 1
                key = f"{sid}|{path}|{b}"
                if key not in res.get(OURS, {}):
                    continue
                o = vals(OURS, key)
                row = f"| {sid} | `{path}` | {fmt_tq(list(o.values()))} | " \
                      f"{np.median(series(OURS, key, 'cpu')) / np.median(list(o.values())):.2f} | "
                for p in pinned:
                    pv = vals(p, key)
                    cw = (np.median(series(p, key, "cpu")) / np.median(list(pv.values()))) if pv else float("nan")
                    row += f"{fmt_tq(list(pv.values()))} | {cw:.2f} | {fmt_r(paired(pv, o))} | "
                rop = f"{sid}|batch_rs|{b}" if path.startswith("solve_b") else f"{sid}|afs|1"
                row += f"{fmt_tq(series(RAW, rop))} |"
                w(row)
        w("")

    #-- raw reference --#
    if RAW in res:
        w("## Raw KLU reference (C, single thread, wall per call; median over rounds)")
        w("")
        w("| system | n | nnz | analyze | factor | refactor | solve | tsolve | a+f+s | f+s | r+s | "
          + " | ".join(f"B x (r+s) per matrix, B={B}" for B in sorted({b for s in sysinfo.values() for b in s['batches']})) + " |")
        bs = sorted({b for s in sysinfo.values() for b in s["batches"]})
        w("|---|---|---|" + "---|" * (8 + len(bs)))
        for sid, si in sysinfo.items():
            cells = [fmt_t(np.median(series(RAW, f"{sid}|{op}|1"))) if series(RAW, f"{sid}|{op}|1") else "—" for op in RAW_OPS]
            cells += [fmt_t(np.median(series(RAW, f"{sid}|batch_rs|{B}"))) if series(RAW, f"{sid}|batch_rs|{B}") else "—" for B in bs]
            w(f"| {sid} | {si['n']} | {si['nnz']} | " + " | ".join(cells) + " |")
        w("")

    #-- checks --#
    w("## Checks")
    w("")
    bad = [r for r in resid_rows if not r[2] <= tol]
    if resid_rows:
        worst = max(resid_rows, key=lambda r: r[2] if np.isfinite(r[2]) else float("inf"))
        w(f"- residuals checked: {len(resid_rows)} (every contender and case after compilation, and again in the "
          f"last round); tolerance {tol:g}; worst {worst[2]:.2e} ({worst[0]} {worst[1]})")
    for name, key, r, phase in bad:
        w(f"- **WARNING residual** {name} {key} ({phase}): {r:.3e}")
    for e in errors:
        w(f"- **ERROR** {e.splitlines()[0]}")
    skipped = {sid: si["skipped"] for sid, si in sysinfo.items() if si["skipped"]}
    if skipped:
        w("- not measured, over the budget by the raw KLU estimate (--batch-cap-ms / --max-call-s): " + "; ".join(
            f"{sid}: {', '.join(v)}" for sid, v in skipped.items()))
    if too_slow:
        w(f"- dropped (klujax 0.5.2 / scipy only), one call took longer than --max-call-s {max_call:g} s: "
          + "; ".join(too_slow))
    w("")

    #-- notable --#
    if notable:
        notable.sort(reverse=True)
        w("## Where ours is furthest from raw KLU (median paired ratio)")
        w("")
        for ratio, text in notable[:12]:
            w(f"- {ratio:.2f}x — {text}")
        w("")
        slower = []
        for name in (OLD, SCIPY):
            for key in res.get(OURS, {}):
                pr = paired(vals(OURS, key), vals(name, key))
                if pr and np.median(pr) > 1.05:
                    slower.append((float(np.median(pr)), f"{key.replace('|', ' ')}: ours/{TITLE[name]} = "
                                   f"{np.median(pr):.2f} ({fmt_t(np.median(series(OURS, key)))} vs "
                                   f"{fmt_t(np.median(series(name, key)))})"))
        if slower:
            w("## Where ours is slower than klujax 0.5.2 or scipy (median paired ratio > 1.05)")
            w("")
            for _, text in sorted(slower, reverse=True):
                w(f"- {text}")
            w("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
