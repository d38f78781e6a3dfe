"""One process of tests/test_multiprocess.py: ``python multiprocess_worker.py ID N PORT OUT``.

Joins a ``jax.distributed`` job of N processes (coordinator on 127.0.0.1:PORT, CPU
devices, two per process), builds its own share of a global batch, solves and
differentiates the globally sharded batch with klujax, and pickles the shards it holds
to OUT. Nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import pickle
import sys
import warnings

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # gradients' all-reduce


def main(pid: int, nproc: int, port: int, out: str) -> None:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                               initialization_timeout=60)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P
    from multiprocess_system import AXIS, L, N, system

    import klujax

    mesh = Mesh(np.array(jax.devices()), (AXIS,))  # all devices of all processes
    batch = NamedSharding(mesh, P(AXIS))
    Ai, Aj, Ax, b = system()
    share = slice(pid * L // nproc, (pid + 1) * L // nproc)  # this process's members only
    Ax_g = jax.make_array_from_process_local_data(batch, Ax[share], (L, Ax.shape[1]))
    b_g = jax.make_array_from_process_local_data(batch, b[share], (L, N))
    A1 = jax.device_put(Ax[:1], NamedSharding(mesh, P()))  # one matrix, replicated

    def loss(Ax: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum(klujax.solve(Ai, Aj, Ax, b) ** 2)

    def split(Ax: jax.Array, b: jax.Array) -> jax.Array:
        sym = klujax.analyze(Ai, Aj, N)
        num = klujax.factor(Ai, Aj, Ax, sym)
        x = klujax.solve_with_numeric(num, b, sym)
        freed = klujax.free_numeric(num, dependency=x)
        klujax.free_symbolic(sym, dependency=(x, freed))
        return x

    results = {
        "x": jax.jit(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b))(Ax_g, b_g),
        "grad": jax.jit(jax.grad(loss, argnums=(0, 1)))(Ax_g, b_g),
        "value_and_grad_replicated_Ax": jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(A1, b_g),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # handles made inside jit are not owned
        results["split"] = jax.jit(split)(Ax_g, b_g)

    def shards(a: jax.Array) -> list:
        return [(tuple((s.start, s.stop) for s in sh.index), np.asarray(sh.data), str(a.sharding.spec))
                for sh in a.addressable_shards]

    local = {k: [shards(a) for a in jax.tree_util.tree_leaves(v)] for k, v in results.items()}
    local["live"] = klujax._klujax.live_handles()
    local["devices"] = (jax.local_device_count(), jax.device_count())
    with open(out, "wb") as f:
        pickle.dump(local, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
