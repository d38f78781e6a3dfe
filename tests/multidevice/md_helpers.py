"""Systems, meshes and dense references shared by the multi-device tests."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from helpers import make_system, random_array  # tests/helpers.py

N = 7          # matrix size
L = 8          # batch members (2 per device)
R = 4          # right-hand sides (1 per device when sharded)
AXIS = "batch"


def mesh(n: int = 4) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), (AXIS,))


def put(x: Any, m: Mesh, spec: P) -> jax.Array:
    return jax.device_put(x, NamedSharding(m, spec))


def system(dtype: Any = np.float64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ai, Aj and Ax (L, n_nz) of L nonsingular systems of one pattern."""
    return make_system(N, n_lhs=L, dtype=dtype, seed=seed)


def rhs(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 1) -> np.ndarray:
    return random_array(shape, dtype, seed)


def dense(Ai: Any, Aj: Any, Ax: Any) -> jax.Array:
    """Differentiable dense (..., N, N) matrices; duplicates add up."""
    Ax = jnp.asarray(Ax)
    return jnp.zeros((*Ax.shape[:-1], N, N), Ax.dtype).at[..., Ai, Aj].add(Ax)


def ref_solve(Ai: Any, Aj: Any, Ax: Any, b: Any) -> jax.Array:
    """jnp.linalg.solve with klujax's shapes: Ax (la, n_nz), b (lb, N) or (lb, N, r)."""
    A = dense(Ai, Aj, Ax)
    n_lhs = max(A.shape[0], b.shape[0])
    A = jnp.broadcast_to(A, (n_lhs, N, N))
    b = jnp.broadcast_to(b, (n_lhs, *b.shape[1:]))
    if b.ndim == 2:
        return jnp.linalg.solve(A, b[..., None])[..., 0]
    return jnp.linalg.solve(A, b)


def ref_dot(Ai: Any, Aj: Any, Ax: Any, x: Any) -> jax.Array:
    A = dense(Ai, Aj, Ax)
    if x.ndim == 2:
        return (A @ x[..., None])[..., 0]
    return A @ x


def close(a: Any, b: Any, tol: float = 1e-10) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    err = float(np.abs(a - b).max(initial=0.0))
    assert err <= tol * scale, f"max abs error {err:.3g} (scale {scale:.3g})"
