"""Two processes on this machine (jax.distributed with a 127.0.0.1 coordinator, two CPU
devices each) solve and differentiate a globally sharded batch, each holding only its
share; their results agree with this single process's and with dense references.

The test starts and stops its own processes and is bounded in time."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import socket
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hardening_helpers import RUNTIME_ERRORS, run_python
from multiprocess_system import L, N, system

import klujax

HERE = pathlib.Path(__file__).parent
TIMEOUT = 240  # seconds for the whole job


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_job(tmp: pathlib.Path, nproc: int = 2) -> list[dict]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "XLA_")) and k != "KLUJAX_FORCE_HOST_CALLBACK"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    outs = [tmp / f"out{i}.pkl" for i in range(nproc)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "multiprocess_worker.py"), str(i),
                               str(nproc), str(port), str(outs[i])], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(nproc)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:  # never leave a worker behind (timeout, failure of the other)
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n" + "\n".join(
            log[-6000:] for log in logs)
    results = []
    for out in outs:
        with open(out, "rb") as f:
            results.append(pickle.load(f))
    return results


def _assemble(results: list[dict], key: str, leaf: int, shape: tuple) -> np.ndarray:
    """The global array from the shards every process holds (each element written once
    per replica; all replicas must agree)."""
    full = np.full(shape, np.nan)
    for r in results:
        for index, data, _ in r[key][leaf]:
            sl = tuple(slice(a, b) for a, b in index)
            seen = ~np.isnan(full[sl])
            assert np.allclose(full[sl][seen], data[seen], rtol=1e-12, atol=1e-14)
            full[sl] = data
    assert not np.isnan(full).any()
    return full


def test_two_processes_agree_with_one(tmp_path: Any) -> None:
    results = _run_job(tmp_path)
    assert [r["devices"] for r in results] == [(2, 4), (2, 4)]
    for r in results:
        assert r["live"] == {"symbolic": 0, "numeric": 0}  # every process freed its handles
        # each process holds only its share of the batch: two shards of L / 4 members
        assert [d.shape[0] for _, d, _ in r["x"][0]] == [L // 4, L // 4]
        assert "batch" in r["x"][0][0][2]

    Ai, Aj, Ax, b = system()
    loss = lambda Ax, b: jnp.sum(klujax.solve(Ai, Aj, Ax, b) ** 2)  # noqa: E731
    one = {  # the same computations in this single process
        "x": klujax.solve(Ai, Aj, Ax, b),
        "grad": jax.grad(loss, argnums=(0, 1))(Ax, b),
        "value_and_grad_replicated_Ax": jax.value_and_grad(loss, argnums=(0, 1))(Ax[:1], b),
        "split": klujax.solve(Ai, Aj, Ax, b),
    }
    A = np.zeros((L, N, N))
    for m in range(L):
        np.add.at(A[m], (Ai, Aj), Ax[m])
    x_dense = np.linalg.solve(A, b[..., None])[..., 0]
    for key, want in one.items():
        leaves = jax.tree_util.tree_leaves(want)
        for i, w in enumerate(leaves):
            got = _assemble(results, key, i, np.shape(w))
            np.testing.assert_allclose(got, np.asarray(w), rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(_assemble(results, "x", 0, (L, N)), x_dense, rtol=1e-10)


def test_the_documented_script_runs(tmp_path: Any) -> None:
    """docs/scaling_out.md's two-process script, run as the page says (it starts and
    stops its own two processes)."""
    page = (HERE.parent / "docs" / "scaling_out.md").read_text()
    code = re.search(r"<!-- script: multiprocess -->\n```python\n(.*?)```", page, re.S).group(1)
    script = tmp_path / "two_processes.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT + 60)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert "process 0: solved members 0..31" in proc.stdout
    assert "process 1: solved members 32..63" in proc.stdout


def test_a_handle_from_another_process_is_refused() -> None:
    """Handle ids are salted per process: a foreign handle is unknown, never another object."""
    foreign = run_python("""
        import json, numpy as np, klujax
        sym = klujax.analyze(np.array([0, 1]), np.array([0, 1]), 2)
        num = klujax.factor(np.array([0, 1]), np.array([0, 1]), np.array([1.0, 2.0]), sym)
        print(json.dumps({"sym": int(sym.handle), "num": int(num.handle)}))
    """)
    Ai, Aj = np.array([0, 1]), np.array([0, 1])
    with klujax.analyze(Ai, Aj, 2) as sym, klujax.factor(Ai, Aj, np.array([1.0, 2.0]), sym) as num:
        with pytest.raises(RUNTIME_ERRORS, match="not a live numeric handle"):
            klujax.solve_with_numeric(np.uint64(foreign["num"]), np.ones(2), sym).block_until_ready()
        with pytest.raises(RUNTIME_ERRORS, match="not a live symbolic handle"):
            klujax.solve_with_numeric(num, np.ones(2), np.uint64(foreign["sym"])).block_until_ready()
