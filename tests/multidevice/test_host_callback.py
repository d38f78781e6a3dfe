"""The accelerator path (a host callback around the CPU kernel), forced on the CPU with
KLUJAX_FORCE_HOST_CALLBACK=1, keeps working under sharding: jit with batch-sharded
inputs (the callback is not partitioned: it is correct, not fast), shard_map, the
split API and gradients. Runs in a fresh process (the variable is read at import)."""

from __future__ import annotations

from helpers import run_python

CODE = """
import json, warnings
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import klujax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from klujax._compat import shard_map
from md_helpers import AXIS, L, N, dense, ref_solve, rhs, system

warnings.simplefilter("ignore")
assert jax.device_count() == 4
mesh = Mesh(np.array(jax.devices()), (AXIS,))
Ai, Aj, Ax = system()
b = rhs((L, N))
Axs, bs = (jax.device_put(a, NamedSharding(mesh, P(AXIS))) for a in (Ax, b))
err = {}

def check(name, got, want):
    err[name] = max(float(np.abs(np.asarray(g) - np.asarray(w)).max())
                    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)))

solve = lambda Ax, b: klujax.solve(Ai, Aj, Ax, b)
loss = lambda f: (lambda Ax, b: jnp.sum(f(Ax, b) ** 2))
ref = lambda Ax, b: ref_solve(Ai, Aj, Ax, b)
check("jit", jax.jit(solve)(Axs, bs), ref(Ax, b))
check("grad", jax.jit(jax.grad(loss(solve), argnums=(0, 1)))(Axs, bs),
      jax.grad(loss(ref), argnums=(0, 1))(Ax, b))

def split(Ax, b):
    sym = klujax.analyze(Ai, Aj, N)
    num = klujax.factor(Ai, Aj, Ax, sym)
    x = klujax.solve_with_numeric(num, b, sym)
    freed = klujax.free_numeric(num, dependency=x)
    klujax.free_symbolic(sym, dependency=(x, freed))
    return x

check("split", jax.jit(split)(Axs, bs), ref(Ax, b))
sm = lambda f: shard_map(f, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P(AXIS))
check("shard_map", jax.jit(sm(solve))(Axs, bs), ref(Ax, b))
total = lambda Ax, b: jax.lax.psum(loss(solve)(Ax, b), AXIS)
check("shard_map_grad", jax.jit(sm(jax.grad(total, argnums=1)))(Axs, bs),
      jax.grad(loss(ref), argnums=1)(Ax, b))
print(json.dumps({"err": err, "live": klujax._klujax.live_handles()}))
"""


def test_host_callback_under_sharding() -> None:
    import os

    out = run_python(CODE, KLUJAX_FORCE_HOST_CALLBACK="1",
                     XLA_FLAGS="--xla_force_host_platform_device_count=4",
                     PYTHONPATH=os.path.dirname(os.path.dirname(__file__)) + os.pathsep
                     + os.path.dirname(__file__))
    assert set(out["err"]) == {"jit", "grad", "split", "shard_map", "shard_map_grad"}
    for name, e in out["err"].items():
        assert e < 1e-10, (name, e)
    assert out["live"] == {"symbolic": 0, "numeric": 0}
