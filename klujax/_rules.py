"""JVP, transpose and batching rules, written once for every dtype of every op.

Math (A from Ai, Aj, Ax; ``op(A)`` is A or A^T by the ``transpose`` flag):

* solve: ``x = op(A)^-1 b``; JVP ``dx = op(A)^-1 (db - op(dA) x)``; transpose w.r.t.
  ``b``: ``op(A)^-T ct`` (``klu_tsolve`` on the same factorization).
* dot: ``y = A x``; JVP ``dy = dA x + A dx``; transpose w.r.t. ``x``: ``A^T ct``
  (swap Ai and Aj); w.r.t. ``Ax``: ``ct[Ai] * x[Aj]`` summed over right-hand sides.
* batching: Ax and b batched -> fold into n_lhs; only b batched -> fold into n_rhs (one
  factorization serves every batch member); only Ax batched -> fold into n_lhs and let
  the driver broadcast b.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from ._compat import ad, batching
from ._ops import DOT, SOLVE, prim

not_mapped = None  # batching.not_mapped (not exported by every jax version)


def _is_zero(t: Any) -> bool:
    return type(t) is ad.Zero


def _sum_to(x: jax.Array, lhs: int) -> jax.Array:
    """Sums a (n_lhs, ...) cotangent down to a broadcast operand's batch of ``lhs``."""
    return x.sum(axis=0, keepdims=True) if lhs == 1 and x.shape[0] != 1 else x


def matvec(Ai: jax.Array, Aj: jax.Array, Ax: jax.Array, x: jax.Array, transpose: bool = False) -> jax.Array:
    """Canonical-shape ``A x`` (or ``A^T x``) through the dot primitive."""
    if transpose:
        Ai, Aj = Aj, Ai
    return prim("dot", x.dtype).bind(Ai, Aj, Ax, x)


#== solve ==#

def _solve_jvp(primals: Any, tangents: Any, *, transpose: bool, retain: bool) -> Any:
    Ai, Aj, Ax, b = primals
    _, _, dAx, db = tangents
    p = prim("solve", Ax.dtype)
    # retain=True: the tangent solve below (and the transposed solve of reverse mode)
    # find this factorization in the cache instead of factoring again.
    x = p.bind(Ai, Aj, Ax, b, transpose=transpose, retain=True)
    if _is_zero(dAx) and _is_zero(db):
        return x, ad.Zero.from_primal_value(x)
    rhs = None if _is_zero(db) else db
    if not _is_zero(dAx):
        dAx_x = matvec(Ai, Aj, dAx, x, transpose)
        rhs = -dAx_x if rhs is None else rhs - dAx_x
    dx = p.bind(Ai, Aj, Ax, rhs, transpose=transpose, retain=True)
    if dx.shape != x.shape:  # db of batch 1 against a batched Ax broadcasts in the driver
        dx = jnp.broadcast_to(dx, x.shape)
    return x, dx


def _solve_transpose(ct: Any, Ai: Any, Aj: Any, Ax: Any, b: Any, *, transpose: bool, retain: bool) -> Any:
    if ad.is_undefined_primal(Ax):
        raise NotImplementedError("klujax.solve is not linear in Ax; it cannot be transposed w.r.t. Ax")
    if _is_zero(ct):
        return [None, None, None, ad.Zero(b.aval)]
    ct_b = prim("solve", Ax.dtype).bind(Ai, Aj, Ax, ct, transpose=not transpose, retain=retain)
    return [None, None, None, _sum_to(ct_b, b.aval.shape[0])]


#== dot ==#

def _dot_jvp(primals: Any, tangents: Any) -> Any:
    Ai, Aj, Ax, x = primals
    _, _, dAx, dx = tangents
    y = matvec(Ai, Aj, Ax, x)
    terms = []
    if not _is_zero(dAx):
        terms.append(matvec(Ai, Aj, dAx, x))
    if not _is_zero(dx):
        terms.append(matvec(Ai, Aj, Ax, dx))
    if not terms:
        return y, ad.Zero.from_primal_value(y)
    dy = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return y, jnp.broadcast_to(dy, y.shape)


def _dot_transpose(ct: Any, Ai: Any, Aj: Any, Ax: Any, x: Any) -> Any:
    if ad.is_undefined_primal(Ax) and ad.is_undefined_primal(x):
        raise NotImplementedError("klujax.dot is bilinear: transpose w.r.t. Ax or x, not both")
    if ad.is_undefined_primal(x):
        if _is_zero(ct):
            return [None, None, None, ad.Zero(x.aval)]
        return [None, None, None, _sum_to(matvec(Ai, Aj, Ax, ct, transpose=True), x.aval.shape[0])]
    if _is_zero(ct):
        return [None, None, ad.Zero(Ax.aval), None]
    # d(y[l, Ai[k], r]) / d(Ax[l, k]) = x[l, Aj[k], r]
    ct_ax = (ct[:, Ai, :] * x[:, Aj, :]).sum(axis=-1)
    return [None, None, _sum_to(ct_ax, Ax.aval.shape[0]), None]


#== batching (shared by every op with operands Ai, Aj, Ax, b) ==#

def _batch_rhs_op(args: Any, dims: Any, *, op: str, **params: Any) -> Any:
    Ai, Aj, Ax, b = args
    dAi, dAj, dAx, db = dims
    bind = lambda Ax_, b_: prim(op, Ax_.dtype).bind(Ai, Aj, Ax_, b_, **params)  # noqa: E731
    if dAi is not None or dAj is not None:
        return _batch_by_loop(args, dims, op=op, **params)
    if dAx is None:  # only b: fold the batch into n_rhs, one factorization each
        b = jnp.moveaxis(b, db, 0)
        B, lb, n, r = b.shape
        x = bind(Ax, b.transpose(1, 2, 0, 3).reshape(lb, n, B * r))
        return x.reshape(x.shape[0], n, B, r).transpose(2, 0, 1, 3), 0
    Ax = jnp.moveaxis(Ax, dAx, 0)
    B, la, nnz = Ax.shape
    b = b[None] if db is None else jnp.moveaxis(b, db, 0)
    Bb, lb, n, r = b.shape
    if la == 1 and lb > 1:  # one matrix per batch member: fold b's n_lhs into n_rhs
        x = bind(Ax.reshape(B, nnz), b.transpose(0, 2, 1, 3).reshape(Bb, n, lb * r))
        return x.reshape(B, n, lb, r).transpose(0, 2, 1, 3), 0
    L = la
    if lb == 1 and Bb == 1:
        bf = b.reshape(1, n, r)  # the driver broadcasts it over every member
    else:
        bf = jnp.broadcast_to(b, (B, L, n, r)).reshape(B * L, n, r)
    x = bind(Ax.reshape(B * L, nnz), bf)
    return x.reshape(B, L, n, r), 0


def _batch_by_loop(args: Any, dims: Any, *, op: str, **params: Any) -> Any:
    """Batched indices: each batch member has its own pattern; solve them one by one."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    moved = [
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims)
    ]
    out = jax.lax.map(lambda a: prim(op, a[2].dtype).bind(*a, **params), tuple(moved))
    return out, 0


def _register() -> None:
    for sfx, p in SOLVE.primitives.items():
        ad.primitive_jvps[p] = _solve_jvp
        ad.primitive_transposes[p] = _solve_transpose
        batching.primitive_batchers[p] = partial(_batch_rhs_op, op="solve")
    for sfx, p in DOT.primitives.items():
        ad.primitive_jvps[p] = _dot_jvp
        ad.primitive_transposes[p] = _dot_transpose
        batching.primitive_batchers[p] = partial(_batch_rhs_op, op="dot")


_register()
