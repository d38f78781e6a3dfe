#!/usr/bin/env python
"""The peer table: this repository's klujax ("ours") side by side with the JAX sparse
direct solvers a user would pick instead of it.

    benchmarks/setup_peers.sh                      # once: one venv per peer, outside the repository
    .venv/bin/python benchmarks/peers.py --quick   # ~10-15 minutes on 2 cores
    .venv/bin/python benchmarks/peers.py --quick --ours-method auto,klu,umfpack

Contenders (each a long-lived worker process under its own interpreter, see
``_peer_contenders.py``): ours (``klujax.solve``, with ``KLUOptions(method=...)`` per
``--ours-method`` where that field exists), sparsax's KLU (``lu_solve``) and UMFPACK
(``umf_solve``), umfpack-jax, pardiso-mkl-jax. spineax (cuDSS) has CUDA-only FFI targets
and is listed as not runnable on a CPU; sparsax's CHOLMOD needs SPD matrices, which the
set has none of.

Cases: ``solve_new`` (fresh values every call), ``solve_same`` (same values, new b),
``solve_b<B>`` (B members of one pattern, per matrix), ``grad_Ax`` (jax.grad of
sum(solve) w.r.t. the values). Systems: the circuit-like ones of ``systems.py``, a
power-flow Jacobian family (``tests/matrices.py``), and fill-heavy ones (``unsym``,
``fe2d``, ``fe3d``). Method as ``run.py``'s (it reuses its workers, prepare phase,
interleaved shuffled rounds and statistics): medians [IQR] over >= 11 rounds, per-round
paired ratios peer/ours, wall and process CPU time; every answer checked against
``numpy.linalg.solve`` of the dense matrix. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

# the harness (workers, phases, statistics); importing it re-executes this script under the
# repository's .venv when this Python has no NumPy
from run import (BUILD, HERE, RESULTS, ROOT, Worker, WorkerDied, case_key, fmt_r, fmt_t, fmt_tq, log,
                 machine_info, prepare_all, resolve_ours_python, run_rounds, worker_env)

import numpy as np  # noqa: E402  (run made sure it imports)

import systems  # noqa: E402

# contender -> (title, venv name under --peer-venvs)
PEERS = {
    "sparsax-klu": ("sparsax KLU", "sparsax"),
    "sparsax-umf": ("sparsax UMFPACK", "sparsax"),
    "umfpack-jax": ("umfpack-jax", "umfpack-jax"),
    "pardiso": ("pardiso-mkl-jax", "pardiso-mkl-jax"),
}
NOT_RUNNABLE = {
    "spineax": "spineax 0.0.5 (cuDSS) registers its FFI targets for platform \"CUDA\" only (spineax/cudss/solver.py) "
               "and depends on jax[cuda13] + nvidia-cudss-cu13: no CPU path, not run on this CPU-only machine",
    "sparsax CHOLMOD": "sparsax.solve (CHOLMOD) is for symmetric positive definite matrices and reads only the upper "
                       "triangle; every system here is unsymmetric, so it would solve a different matrix: not run",
}
PATHS = ["solve_new", "solve_same", "grad_Ax"]  # + solve_b<B>
PATH_DOC = {
    "solve_new": "one solve, values never seen before (call i: matrix i % 4 of the family, newly scaled)",
    "solve_same": "one solve, the same values as the previous call, a new b",
    "grad_Ax": "jit(grad(sum(solve(Ax, b)), Ax)), fresh values (as solve_new's)",
}
QUICK_SYSTEMS = ("ladder-1000,grid-1000,random-1000,powerflow-1000,unsym-1000,fe2d-3600,fe3d-2744,"
                 "ladder-1000-c128,fe2d-3600-c128")
FULL_SYSTEMS = QUICK_SYSTEMS + ",ladder-10000,grid-10000,random-10000,powerflow-5000,unsym-3000,fe2d-10000"


def parse_system(spec: str) -> tuple[str, int, bool]:
    parts = spec.split("-")
    cplx = parts[-1] == "c128"
    if parts[-1] in ("f64", "c128"):
        parts = parts[:-1]
    return parts[0], int(parts[1]), cplx


def make_system(kind: str, n: int, cplx: bool, batch: int, seed: int) -> systems.System:
    if kind != "powerflow":
        return systems.make_system(kind, n, cplx, batch=batch, seed=seed)
    # the power-flow Jacobian family of the accuracy tests (real: flat start to heavy load;
    # complex: the bus admittance matrix with a growing fault admittance)
    sys.path.insert(0, str(ROOT / "tests"))
    import matrices

    Ai, Aj, Ax, n = matrices.value_family("power_flow", n, batch, seed, complex_=cplx)
    rng = np.random.default_rng(seed + 1)
    b = rng.standard_normal((batch, n))
    if cplx:
        b = b + 1j * np.random.default_rng(seed + 2).standard_normal((batch, n))
    return systems.System("powerflow", n, cplx, np.asarray(Ai, np.int32), np.asarray(Aj, np.int32),
                          np.asarray(Ax), b)


def blas_summary(libs: list[str]) -> str:
    """The BLAS/LAPACK/OpenMP/SuiteSparse libraries of a worker, by file name."""
    names = sorted({os.path.basename(p) for p in libs})
    return ", ".join(names) if names else "(none found)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the default systems, short measurements (>= 11 rounds)")
    ap.add_argument("--systems", type=str, default=None,
                    help=f"comma list of KIND-N[-c128] (default quick: {QUICK_SYSTEMS}; full adds n=10000 ones). "
                         f"KIND: {', '.join(systems.GENERATORS)}, powerflow")
    ap.add_argument("--batch", type=int, default=64, help="members of the batched solve")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--target-ms", type=float, default=None, help="time per measurement (quick 10, full 40)")
    ap.add_argument("--min-reps", type=int, default=None, help="timed calls per measurement (quick 3, full 5)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed calls before each measurement; the number of timed calls is sized from the "
                         "last one. 2: a solve_same measurement's first call re-factors in a contender whose "
                         "value cache the other paths refilled since its last round (ours), and one warm-up "
                         "left it only min-reps timed calls, cold from the rest of the round")
    ap.add_argument("--max-call-s", type=float, default=None,
                    help="drop a peer's case whose call takes longer than 10x this in the prepare phase (quick 1, full 5)")
    ap.add_argument("--batch-cap-s", type=float, default=None,
                    help="batched case only for systems where B x ours' solve_new time is within this, and for a "
                         "peer only where B x its own is within 3x this (quick 2, full 20)")
    ap.add_argument("--contenders", type=str, default="ours," + ",".join(PEERS))
    ap.add_argument("--ours-method", type=str, default=None,
                    help="comma list of KLUOptions(method=...) values (auto, klu, umfpack): one ours worker each, "
                         "the first is the reference of the ratios; default: klujax's default options")
    ap.add_argument("--ours-python", type=str, default=None, help="python of ours (default as run.py)")
    ap.add_argument("--peer-venvs", type=str, default=os.environ.get("PEER_VENVS", str(ROOT.parent / "peer-venvs")),
                    help="directory of the peer venvs made by setup_peers.sh (default ../peer-venvs, $PEER_VENVS)")
    ap.add_argument("--resid-tol", type=float, default=1e-8,
                    help="warn above this max(relative residual, relative distance to the dense solution)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=str, default=None, help="markdown output (default benchmarks/results/peers_<date>.md)")
    opts = ap.parse_args()

    quick = opts.quick
    specs = [parse_system(s) for s in (opts.systems or (QUICK_SYSTEMS if quick else FULL_SYSTEMS)).split(",") if s]
    params = {"target_s": (opts.target_ms or (10 if quick else 40)) / 1e3,
              "min_reps": opts.min_reps or (3 if quick else 5),
              "max_reps": 5000, "warmup": opts.warmup}
    max_call = opts.max_call_s or (1.0 if quick else 5.0)
    batch_cap = opts.batch_cap_s or (2.0 if quick else 20.0)
    B = opts.batch
    if opts.rounds < 11:
        log(f"NOTE: --rounds {opts.rounds} < 11: fewer rounds than the suite's standard")
    rng = random.Random(opts.seed)
    t_start = time.perf_counter()
    info = machine_info()
    info["command"] = " ".join(shlex.quote(a) for a in sys.argv)
    (BUILD / "cases").mkdir(parents=True, exist_ok=True)

    #-- systems --#
    log(f"generating {len(specs)} systems (batch {B}) ...")
    sysinfo: dict[str, dict] = {}
    for kind, n, cplx in specs:
        s = make_system(kind, n, cplx, B, opts.seed)
        npzf = BUILD / "cases" / f"peers_{s.name}.npz"
        systems.write_npz(s, npzf)
        sysinfo[s.name] = {"kind": kind, "n": s.n, "nnz": s.nnz, "complex": cplx, "npz": npzf, "skipped": []}

    #-- workers --#
    wanted = [c for c in opts.contenders.split(",") if c]
    worker_py = str(HERE / "_worker.py")
    ours_py = resolve_ours_python(opts.ours_python)
    methods = [m for m in (opts.ours_method or "").split(",") if m] or [None]
    ours_names: list[str] = []
    workers: dict[str, Worker] = {}
    pythons: dict[str, str] = {}
    unavailable: dict[str, str] = dict(NOT_RUNNABLE)
    if "ours" in wanted:
        for m in methods:
            name = "ours" if len(methods) == 1 else f"ours:{m}"
            argv = [ours_py, worker_py, "--contender", "ours-peer"] + (["--method", m] if m else [])
            workers[name] = Worker(name, argv, worker_env())
            pythons[name] = ours_py
            ours_names.append(name)
    for name in wanted:
        if name not in PEERS:
            continue
        ptitle, venv = PEERS[name]
        py = Path(opts.peer_venvs) / venv / "bin" / "python"
        if not py.exists():
            unavailable[ptitle] = f"no venv at {py.parent.parent}: run benchmarks/setup_peers.sh {venv}"
            continue
        workers[name] = Worker(name, [str(py), worker_py, "--contender", name], worker_env())
        pythons[name] = str(py)
    versions: dict[str, dict] = {}
    for name, w in list(workers.items()):
        try:
            h = w.hello()
        except WorkerDied as e:
            h = {"ok": False, "error": str(e)}
        if not h.get("ok"):
            unavailable[title(name)] = f"worker failed to start: {h.get('error')}"
            log(f"WARNING: {name} failed to start: {h.get('error')}")
            workers.pop(name).close()
            continue
        versions[name] = h.get("versions", {})
    if not ours_names or ours_names[0] not in workers:
        log("ERROR: ours did not start; nothing to compare with")
        sys.exit(1)
    ref = ours_names[0]
    peers = [n for n in workers if n != ref]

    #-- cases: the single-matrix paths first, then the batches that fit the budget --#
    resid_rows: list[tuple[str, str, float, str]] = []
    errors: list[str] = []
    unsupported: dict[str, list[str]] = {}
    dropped: list[str] = []
    for sid, si in sysinfo.items():
        for w in workers.values():
            w.load(sid, si["npz"], si["npz"])

    def drop_slow(name: str, c: dict, r: dict) -> bool:
        # rough (every worker compiles at once): only the hopeless cases go
        if name != ref and r.get("t_call", 0.0) > 10 * max_call:
            dropped.append(f"{title(name)} {case_key(c).replace('|', ' ')}: ~{fmt_t(r['t_call'])} per call "
                           f"while compiling > 10 x --max-call-s")
            return True
        return False

    single = {name: [{"sys": sid, "path": p, "batch": 1} for sid, si in sysinfo.items() for p in PATHS
                     if not (p == "grad_Ax" and si["complex"])] for name in workers}
    log(f"preparing {sum(map(len, single.values()))} single-matrix cases on {len(workers)} workers "
        "(imports, jit compilation, checks against numpy.linalg.solve) ...")
    prepare_all(workers, single, opts.resid_tol, resid_rows, errors, unsupported, drop_slow)
    kept = {name: list(w.cases) for name, w in workers.items()}
    # the batch budget, from one quiet solve_new per contender and system (workers one at a
    # time: the prepare phase's timings ran with every worker compiling at once)
    est: dict[tuple[str, str], float] = {}
    for name, w in workers.items():
        for c in kept[name]:
            if c["path"] == "solve_new":
                r = w.measure(c, {"target_s": 0.0, "min_reps": 1, "max_reps": 1, "warmup": 1}, False)
                if r.get("ok"):
                    est[(name, c["sys"])] = float(r["wall_med"])
    batched: dict[str, list[dict]] = {name: [] for name in workers}
    for sid, si in sysinfo.items():
        t_ref = est.get((ref, sid))
        if t_ref is None:
            continue
        if B * t_ref > batch_cap:
            si["skipped"].append(f"{sid} solve_b{B} for every contender ({title(ref)}: {B} x {fmt_t(t_ref)} > "
                                 f"--batch-cap-s {batch_cap:g})")
            continue
        for name in workers:
            t1 = est.get((name, sid))
            if t1 is None:
                continue  # unsupported (or failed) single solve: the batch is too
            if B * t1 > 3 * batch_cap:
                si["skipped"].append(f"{title(name)} {sid} solve_b{B} ({B} x {fmt_t(t1)} > 3 x --batch-cap-s)")
                continue
            batched[name].append({"sys": sid, "path": f"solve_b{B}", "batch": B})
    log(f"preparing {sum(map(len, batched.values()))} batched cases ...")
    prepare_all(workers, batched, opts.resid_tol, resid_rows, errors, unsupported)
    for name, w in workers.items():
        w.cases = kept[name] + list(w.cases)
    libs = {}
    for name, w in workers.items():
        try:
            libs[name] = w.ask({"cmd": "libs"}).get("libs", [])
        except WorkerDied as e:
            errors.append(f"{name}: {e}")
    t_prep = time.perf_counter() - t_start
    log(f"prepared in {t_prep:.0f} s")

    #-- interleaved rounds --#
    res = run_rounds(workers, params, opts.rounds, rng, opts.resid_tol, resid_rows, errors, None, t_start)
    for w in workers.values():
        w.close()
    info["loadavg_end"] = os.getloadavg()
    info["elapsed_s"] = time.perf_counter() - t_start
    info["prepare_s"] = t_prep
    for si in sysinfo.values():
        si["npz"] = str(si["npz"])

    md = report(info, opts, params, B, max_call, batch_cap, sysinfo, ref, peers, versions, pythons, libs,
                unavailable, res, resid_rows, errors, unsupported, dropped)
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    out = Path(opts.out) if opts.out else RESULTS / f"peers_{stamp}.md"
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(
        {"info": info, "versions": versions, "pythons": pythons, "libs": libs, "params": params,
         "systems": sysinfo, "results": res, "residuals": resid_rows, "errors": errors,
         "unsupported": unsupported, "dropped": dropped, "unavailable": unavailable}, indent=1, default=str))
    log(f"wrote {out} and {out.with_suffix('.json')} ({info['elapsed_s']:.0f} s in all)")


#== the report ==#

def title(name: str) -> str:
    return PEERS[name][0] if name in PEERS else name


def report(info, opts, params, B, max_call, batch_cap, sysinfo, ref, peers, versions, pythons, libs,
           unavailable, res, resid_rows, errors, unsupported, dropped) -> str:
    L: list[str] = []
    w = L.append

    def vals(name: str, key: str, field: str = "wall_med") -> dict[int, float]:
        return {r["round"]: r[field] for r in res.get(name, {}).get(key, [])}

    def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
        return [a[r] / b[r] for r in a if r in b and b[r] > 0]

    tol = opts.resid_tol
    bad = {(r[0], r[1]) for r in resid_rows if not r[2] <= tol}
    paths = PATHS[:1] + [f"solve_b{B}"] + PATHS[1:]

    w(f"# klujax peer table — {info['date']}")
    w("")
    w(f"- machine: {info['cpu']}, nproc={info['nproc']} (affinity {info['affinity']}), {info['mem']}, "
      f"Linux {info['kernel']}")
    la0, la1 = info["loadavg_start"], info["loadavg_end"]
    busy = max(la0[0], la1[0]) > 0.5 * (info["nproc"] or 1) + 0.5
    w(f"- load average (1/5/15 min): start {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f}, end "
      f"{la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f}" + ("  **(machine busy: absolute times are noisy; trust the "
                                                  "paired ratios more)**" if busy else ""))
    w(f"- command: `{info['command']}`; {opts.rounds} interleaved shuffled rounds; per measurement "
      f"{params['warmup']} warm-up call(s) then >= {params['min_reps']} timed calls filling "
      f"{params['target_s'] * 1e3:.0f} ms (one timed call when a call exceeds 5x that); batch B = {B}; "
      f"elapsed {info['elapsed_s']:.0f} s (prepare/compile {info['prepare_s']:.0f} s)")
    w("")
    w("## Contenders")
    w("")
    w("| contender | versions and notes | BLAS / LAPACK / OpenMP / SuiteSparse libraries mapped in the worker |")
    w("|---|---|---|")
    for name in [ref] + peers:
        v = dict(versions.get(name, {}))
        v.pop("klujax_file", None)
        w(f"| {title(name)}{' (reference)' if name == ref else ''} | "
          + ", ".join(f"{k} {x}" for k, x in v.items()) + f"; python `{pythons.get(name)}` | "
          f"{blas_summary(libs.get(name, []))} |")
    w("")
    if unavailable:
        w("Not run:")
        w("")
        for t, why in unavailable.items():
            w(f"- **{t}**: {why}")
        w("")

    w("## Systems")
    w("")
    w("| system | n | nnz | nnz/row |")
    w("|---|---|---|---|")
    for sid, si in sysinfo.items():
        w(f"| {sid} | {si['n']} | {si['nnz']} | {si['nnz'] / si['n']:.1f} |")
    w("")

    w("## Time per call (wall)")
    w("")
    w(f"Cells: median [IQR] over rounds of the median per-call wall time (per matrix for `solve_b{B}`). "
      f"`×{title(ref)}`: median [IQR] of the per-round paired ratio peer / {title(ref)} (> 1: {title(ref)} is "
      "faster). Paths: " + "; ".join(f"`{p}`: {d}" for p, d in PATH_DOC.items())
      + f"; `solve_b{B}`: {B} members of one pattern with fresh values in one call. `—`: not supported or not "
      "measured (see Checks). ⚠: a check above the tolerance.")
    w("")
    w(f"| system | path | {title(ref)} | " + " | ".join(f"{title(p)} | ×{title(ref)}" for p in peers) + " |")
    w("|---|---|---|" + "---|---|" * len(peers))
    ratios: dict[tuple[str, str], list[float]] = {}
    for sid in sysinfo:
        for path in paths:
            key = f"{sid}|{path}|{B if path.startswith('solve_b') else 1}"
            if not any(key in res.get(c, {}) for c in [ref] + peers):
                continue
            o = vals(ref, key)

            def cell(name: str) -> str:
                c = fmt_tq(list(vals(name, key).values()))
                return c + (" ⚠" if (name, key) in bad else "")

            row = f"| {sid} | `{path}` | {cell(ref)} | "
            for p in peers:
                pr = paired(vals(p, key), o)
                if pr:
                    ratios.setdefault((p, path), []).append(float(np.median(pr)))
                row += f"{cell(p)} | {fmt_r(pr)} | "
            w(row.rstrip())
    w("")
    if ratios:
        w(f"Geometric mean over systems of the median paired ratio peer / {title(ref)} (> 1: {title(ref)} is faster; "
          "only the systems both ran):")
        w("")
        w("| peer | " + " | ".join(f"`{p}`" for p in paths) + " |")
        w("|---|" + "---|" * len(paths))
        for p in peers:
            cells = []
            for path in paths:
                r = ratios.get((p, path))
                cells.append(f"{float(np.exp(np.mean(np.log(r)))):.2f} ({len(r)})" if r else "—")
            w(f"| {title(p)} | " + " | ".join(cells) + " |")
        w("")

    w("## CPU time per call")
    w("")
    w("Process CPU time (all threads: XLA's pool, OpenMP/BLAS threads) per call, median over rounds, and "
      "cpu/wall (> 1: more than one core worked; well below 1: waiting, e.g. for a busy CPU).")
    w("")
    w("| system | path | " + " | ".join(f"{title(p)} cpu | cpu/wall" for p in [ref] + peers) + " |")
    w("|---|---|" + "---|---|" * (1 + len(peers)))
    for sid in sysinfo:
        for path in paths:
            key = f"{sid}|{path}|{B if path.startswith('solve_b') else 1}"
            if key not in res.get(ref, {}) and not any(key in res.get(p, {}) for p in peers):
                continue
            row = f"| {sid} | `{path}` | "
            for p in [ref] + peers:
                c, wl = list(vals(p, key, "cpu").values()), list(vals(p, key).values())
                row += (f"{fmt_t(float(np.median(c)))} | {np.median(c) / np.median(wl):.2f} | " if c and wl
                        else "— | — | ")
            w(row.rstrip())
    w("")

    w("## Checks")
    w("")
    w(f"Every case of every contender is checked after compilation and again in the last round: "
      f"max(||A x - b|| / ||b||, ||x - x_dense|| / ||x_dense||) with x_dense = numpy.linalg.solve of the dense "
      f"matrix (batches: every member's residual, the first two against the dense solution; `grad_Ax`: the "
      f"relative distance to -lam[Ai] x[Aj] from dense solves); tolerance {tol:g}. For n > 1500 the last round's "
      f"check is the residual alone (for `grad_Ax`: that the gradient is finite); the prepare phase's is dense.")
    w("")
    for name in [ref] + peers:
        rows = [r for r in resid_rows if r[0] == name]
        if rows:
            worst = max(rows, key=lambda r: r[2] if np.isfinite(r[2]) else float("inf"))
            nbad = sum(1 for r in rows if not r[2] <= tol)
            w(f"- {title(name)}: {len(rows)} checks, worst {worst[2]:.2e} ({worst[1]}, {worst[3]})"
              + (f", **{nbad} above the tolerance**" if nbad else ""))
    for name, key, r, phase in resid_rows:
        if not r <= tol:
            w(f"- **WRONG NUMBERS?** {title(name)} {key} ({phase}): {r:.3e}")
    for e in errors:
        w(f"- **ERROR** {e.splitlines()[0][:400]}")
    for name, items in unsupported.items():
        by_why: dict[str, list[str]] = {}
        for it in items:  # "sys|path|b (why)"
            k, _, why = it.partition(" (")
            by_why.setdefault(why.rstrip(")"), []).append(k.replace("|1", "").replace("|", " "))
        for why, ks in by_why.items():
            w(f"- not supported by {title(name)} ({why}): {', '.join(ks)}")
    skipped = [x for si in sysinfo.values() for x in si["skipped"]]
    if skipped:
        w("- batched case not run (over the budget): " + "; ".join(skipped))
    if dropped:
        w("- dropped after the prepare phase: " + "; ".join(dropped))
    w("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
