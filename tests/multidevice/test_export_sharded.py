"""A jax.export of a batch-sharded solve (4 devices): deserialized in a fresh process,
it still partitions (klujax's import registers the partitioners of its targets)."""

from __future__ import annotations

import pickle
from typing import Any

import jax
import numpy as np
import pytest
from helpers import run_python
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from md_helpers import AXIS, L, N, close, ref_solve, rhs, system

import klujax

export = pytest.importorskip("jax.export")
pytest.importorskip("flatbuffers")

CHILD = """
import json, pickle, re
import jax
import numpy as np
jax.config.update("jax_enable_x64", True)
from jax import export
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import klujax

with open({path!r}, "rb") as f:
    blob, Ax, b = pickle.load(f)
mesh = Mesh(np.array(jax.devices()), ("batch",))
S = NamedSharding(mesh, P("batch"))
Ax, b = jax.device_put(Ax, S), jax.device_put(b, S)
call = jax.jit(export.deserialize(bytearray(blob)).call)
x = call(Ax, b)
text = call.lower(Ax, b).compile().as_text()
np.save({path!r} + ".npy", np.asarray(x))
print(json.dumps({{
    "spec": str(x.sharding.spec),
    "collectives": re.findall(r"\\s(all-gather|all-reduce|all-to-all|collective-permute)\\(", text),
    "calls": [l.split("=", 1)[1].split("custom-call(")[0].strip()
              for l in text.splitlines() if "klujax." in l and "custom-call(" in l],
}}))
"""


def test_sharded_export_partitions_after_deserialization(tmp_path: Any) -> None:
    Ai, Aj, Ax = system()
    b = rhs((L, N))
    mesh = Mesh(np.array(jax.devices()[:4]), (AXIS,))
    S = NamedSharding(mesh, P(AXIS))
    f = jax.jit(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), in_shardings=(S, S), out_shardings=S)
    exp = export.export(f, disabled_checks=klujax.export_safety_checks())(
        jax.device_put(Ax, S), jax.device_put(b, S))
    assert exp.nr_devices == 4
    path = str(tmp_path / "job.pkl")
    with open(path, "wb") as fh:
        pickle.dump((bytes(exp.serialize()), Ax, b), fh)
    out = run_python(CHILD.format(path=path), XLA_FLAGS="--xla_force_host_platform_device_count=4")
    close(np.load(path + ".npy"), ref_solve(Ai, Aj, Ax, b))
    assert AXIS in out["spec"]
    assert out["collectives"] == []
    assert out["calls"] and all(c.startswith(f"f64[{L // 4},") for c in out["calls"]), out["calls"]

