"""JVP, transpose and batching rules, written once for every dtype of every op.

Math (A from Ai, Aj, Ax; ``op(A)`` is A or A^T by the ``transpose`` flag):

* solve-like ops (``solve``, ``solve_with_symbol``, ``solve_with_numeric``):
  ``x = op(A)^-1 b``; JVP ``dx = op(A)^-1 (db - op(dA) x)``; transpose w.r.t. ``b``:
  ``op(A)^-T ct`` (``klu_tsolve`` on the same factorization; for plain solves the
  JVP asks the driver to *retain* the factorization so this costs no new one).
* dot: ``y = A x``; JVP ``dy = dA x + A dx``; transpose w.r.t. ``x``: ``A^T ct``
  (swap Ai and Aj); w.r.t. ``Ax``: ``ct[Ai] * x[Aj]`` summed over right-hand sides.
* batching: the "lhs" operand (``Ax`` or numeric handles) and ``b`` batched -> fold
  into n_lhs; only ``b`` batched -> fold into n_rhs (one factorization serves every
  batch member); only the lhs batched -> fold into n_lhs and let the driver broadcast b.
  Indices and symbolic handles are shared: batching over them is an error, except for
  ``solve``/``dot``, which then loop over the batch (each member its own pattern).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from ._compat import ad, batching, explicit_spec, typeof, zero_like
from ._ops import OPS, OpSpec, bind, prim

_SHARED = ("index", "index2", "symbolic")
_LHS = ("values", "numeric")


def _is_zero(t: Any) -> bool:
    return type(t) is ad.Zero


def _sum_to(x: jax.Array, lhs: int) -> jax.Array:
    """Sums a (n_lhs, ...) cotangent down to a broadcast operand's batch of ``lhs``."""
    return x.sum(axis=0, keepdims=True) if lhs == 1 and x.shape[0] != 1 else x


def _pos(spec: OpSpec, roles: tuple[str, ...] | str) -> int:
    roles = (roles,) if isinstance(roles, str) else roles
    return next(i for i, r in enumerate(spec.operands) if r in roles)


def _dtype_of(spec: OpSpec, args: Any) -> Any:
    for role in ("rhs", "values"):
        if role in spec.operands:
            return args[_pos(spec, role)].dtype
    return jax.dtypes.canonicalize_dtype(jnp.float64)  # real results (diagnostics_numeric)


def _bind(spec: OpSpec, args: Any, **params: Any) -> Any:
    if not spec.per_dtype:
        return bind(spec.primitives[""], *args, **params)
    return bind(prim(spec.name, _dtype_of(spec, args)), *args, **params)


def matvec(
    Ai: jax.Array, Aj: jax.Array, Ax: jax.Array, x: jax.Array, transpose: bool = False
) -> jax.Array:
    """Canonical-shape ``A x`` (or ``A^T x``) through the dot primitive."""
    if transpose:
        Ai, Aj = Aj, Ai
    return bind(prim("dot", x.dtype), Ai, Aj, Ax, x)


# == solve-like ops ==#


def _solve_jvp(primals: Any, tangents: Any, *, spec: OpSpec, **params: Any) -> Any:
    if "retain" in params:
        # The tangent solve below and the transposed solve of reverse mode find this
        # factorization in the native cache instead of factoring again.
        params = {**params, "retain": True}
    x = _bind(spec, primals, **params)
    ri = _pos(spec, "rhs")
    db = tangents[ri]
    rhs = None if _is_zero(db) else db
    if "values" in spec.operands and not _is_zero(tangents[_pos(spec, "values")]):
        dAx_x = matvec(
            primals[0], primals[1], tangents[_pos(spec, "values")], x, params["transpose"]
        )
        rhs = -dAx_x if rhs is None else rhs - dAx_x
    if rhs is None:
        return x, zero_like(x)
    args = list(primals)
    args[ri] = rhs
    if spec.variadic:
        # x as an ordering-only operand: the tangent solve, and the transposed solve of
        # reverse mode, run after the primal one, so they find its retained factorization
        # instead of factoring concurrently (XLA may run independent calls in parallel).
        args.append(x)
    dx = _bind(spec, args, **params)
    return x, (dx if dx.shape == x.shape else jnp.broadcast_to(dx, x.shape))


def _solve_transpose(ct: Any, *args: Any, spec: OpSpec, **params: Any) -> Any:
    ri = _pos(spec, "rhs")
    for i, a in enumerate(args):
        if i != ri and ad.is_undefined_primal(a):
            raise NotImplementedError(
                f"klujax.{spec.name} is linear in b only; it cannot be transposed w.r.t. "
                f"its {spec.operands[i]} operand"
            )
    b = args[ri]
    out: list[Any] = [None] * len(args)
    if _is_zero(ct):
        out[ri] = ad.Zero(b.aval)
        return out
    new = list(args)
    new[ri] = ct
    ct_b = _bind(spec, new, **{**params, "transpose": not params["transpose"]})
    out[ri] = _sum_to(ct_b, b.aval.shape[0])
    return out


# == dot ==#


def _dot_jvp(primals: Any, tangents: Any, *, spec: OpSpec) -> Any:
    Ai, Aj, Ax, x = primals
    _, _, dAx, dx = tangents
    y = matvec(Ai, Aj, Ax, x)
    terms = []
    if not _is_zero(dAx):
        terms.append(matvec(Ai, Aj, dAx, x))
    if not _is_zero(dx):
        terms.append(matvec(Ai, Aj, Ax, dx))
    if not terms:
        return y, zero_like(y)
    dy = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    return y, jnp.broadcast_to(dy, y.shape)


def _dot_transpose(ct: Any, Ai: Any, Aj: Any, Ax: Any, x: Any, *, spec: OpSpec) -> Any:
    if ad.is_undefined_primal(Ax) and ad.is_undefined_primal(x):
        raise NotImplementedError("klujax.dot is bilinear: transpose w.r.t. Ax or x, not both")
    if ad.is_undefined_primal(x):
        if _is_zero(ct):
            return [None, None, None, ad.Zero(x.aval)]
        return [None, None, None, _sum_to(matvec(Ai, Aj, Ax, ct, transpose=True), x.aval.shape[0])]
    if _is_zero(ct):
        return [None, None, ad.Zero(Ax.aval), None]
    # d(y[l, Ai[k], r]) / d(Ax[l, k]) = x[l, Aj[k], r]. "clip" skips the costly
    # out-of-bounds handling of a default gather (5-15x slower for small systems with
    # traced indices); an out-of-range index gives NaN instead. The forward call that
    # would have raised for it can be dead code here (the cotangent of a linear map does
    # not need its value), so this must not rely on it.
    n = ct.shape[1]
    valid = (Ai >= 0) & (Ai < n) & (Aj >= 0) & (Aj < n)
    ct_ax = (jnp.take(ct, Ai, axis=1, mode="clip") * jnp.take(x, Aj, axis=1, mode="clip")).sum(
        axis=-1
    )
    ct_ax = jnp.where(valid, ct_ax, jnp.array(jnp.nan, ct_ax.dtype))
    return [None, None, _sum_to(ct_ax, Ax.aval.shape[0]), None]


# == factor / refactor: handles are integers; values are not differentiable here ==#


def _factor_jvp(primals: Any, tangents: Any, *, spec: OpSpec, **params: Any) -> Any:
    if not _is_zero(tangents[_pos(spec, "values")]):
        raise NotImplementedError(
            f"klujax.{spec.name} is not differentiable w.r.t. Ax (its result is a handle); "
            "differentiate through klujax.solve or klujax.solve_with_symbol instead"
        )
    out = _bind(spec, primals, **params)
    return out, zero_like(out)


# == diagnostics: slogdet is differentiable (first order), rcond/condest are not ==#


def _diagnostics_jvp(primals: Any, tangents: Any, *, spec: OpSpec, **params: Any) -> Any:
    out = _bind(spec, primals, **params)
    dAx = tangents[2]
    if _is_zero(dAx):
        return out, zero_like(out)
    if params["what"] != 2:
        raise NotImplementedError("klujax.rcond and klujax.condest are not differentiable")
    Ai, Aj, Ax = primals
    # d log(det A) = tr(A^-1 dA) = sum_k dAx[k] (A^-T)[Ai[k], Aj[k]]
    G = bind(
        prim("inverse_entries", Ax.dtype),
        Ai,
        Aj,
        Ax,
        n_col=params["n_col"],
        options=params["options"],
    )
    t = (dAx * G).sum(axis=-1)
    if jnp.iscomplexobj(Ax):  # sign = exp(i Im log det), logabsdet = Re log det
        dsign, dlog = out[:, 0] * (1j * t.imag), t.real.astype(t.dtype)
    else:
        dsign, dlog = jnp.zeros_like(t), t
    return out, jnp.stack([dsign, dlog], axis=1)


def _inverse_entries_jvp(primals: Any, tangents: Any, *, spec: OpSpec, **params: Any) -> Any:
    if not _is_zero(tangents[2]):
        raise NotImplementedError("klujax.slogdet is differentiable to first order only")
    out = _bind(spec, primals, **params)
    return out, zero_like(out)


# == batching ==#


def _shared_batched_error(spec: OpSpec, dims: Any) -> None:
    for role, d in zip(spec.operands, dims):
        if role in _SHARED and d is not None:
            name = {"index": "Ai", "index2": "Aj"}.get(role, "the symbolic handle")
            raise ValueError(
                f"klujax.{spec.name}: cannot vmap over {name}; the sparsity pattern (and its "
                "symbolic analysis) is shared by every batch member. Batch Ax, b or the "
                "numeric handles instead."
            )


def _only_ordering_batched(spec: OpSpec, dims: Any) -> bool:
    """Whether only trailing ordering operands are batched (``dependency=``, or the primal
    x that a tangent or transposed solve waits for, as in vmap of grad w.r.t. b with an
    unbatched cotangent). They carry no values, so the op runs once, unbatched."""
    return all(d is None for d in dims[: len(spec.operands)])


def _lhs_sharded_inside(x: jax.Array) -> bool:
    """Whether (B, l, ...) is explicitly sharded along l but not along the vmapped B.

    A reshape of (B, l) into B * l keeps a sharding of B (the major dimension) but not
    one of l alone, so such a batch is folded l-major instead.
    """
    aval = typeof(x)
    return explicit_spec(aval, 0) is None and explicit_spec(aval, 1) is not None


def _merge(x: jax.Array, swap: bool) -> jax.Array:
    """(B, l, ...) -> (B * l, ...), or l-major (l * B, ...) with ``swap``."""
    # explicit sizes: -1 cannot be inferred when a trailing dimension is 0 (n_nz = 0)
    return (jnp.swapaxes(x, 0, 1) if swap else x).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _unmerge(x: jax.Array, B: int, l: int, swap: bool) -> jax.Array:
    """The inverse of :func:`_merge`: (B * l, ...) or (l * B, ...) -> (B, l, ...)."""
    if swap:
        return jnp.swapaxes(x.reshape(l, B, *x.shape[1:]), 0, 1)
    return x.reshape(B, l, *x.shape[1:])


def _batch_by_loop(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    """Batched indices (solve/dot only): each member has its own pattern; loop."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    moved = tuple(
        jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
        for a, d in zip(args, dims)
    )
    return jax.lax.map(lambda a: _bind(spec, a, **params), moved), 0


def _batch_solve_like(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    if spec.name in ("solve", "dot") and (dims[0] is not None or dims[1] is not None):
        return _batch_by_loop(args, dims, spec=spec, **params)
    _shared_batched_error(spec, dims)
    li, ri = _pos(spec, _LHS), _pos(spec, "rhs")
    V, b, dV, db = args[li], args[ri], dims[li], dims[ri]
    if _only_ordering_batched(spec, dims):
        return _bind(spec, args, **params), None

    def bind(V_: Any, b_: Any) -> Any:
        new = list(args)
        new[li], new[ri] = V_, b_
        return _bind(spec, new, **params)

    if dV is None:  # only b: fold the batch into n_rhs, one factorization each
        b = jnp.moveaxis(b, db, 0)
        B, lb, n, r = b.shape
        x = bind(V, b.transpose(1, 2, 0, 3).reshape(lb, n, B * r))
        return x.reshape(x.shape[0], n, B, r).transpose(2, 0, 1, 3), 0
    V = jnp.moveaxis(V, dV, 0)
    B, la, core = V.shape[0], V.shape[1], tuple(V.shape[2:])
    b = b[None] if db is None else jnp.moveaxis(b, db, 0)
    Bb, lb, n, r = b.shape
    if la == 1 and lb > 1:  # one matrix per batch member: fold b's n_lhs into n_rhs
        x = bind(V.reshape(B, *core), b.transpose(0, 2, 1, 3).reshape(Bb, n, lb * r))
        return x.reshape(B, n, lb, r).transpose(0, 2, 1, 3), 0
    swap = _lhs_sharded_inside(V)
    if lb == 1 and Bb == 1:
        bf = b.reshape(1, n, r)  # the driver broadcasts it over every member
    else:
        bf = _merge(jnp.broadcast_to(b, (B, la, n, r)), swap)
    x = bind(_merge(V, swap), bf)
    return _unmerge(x, B, la, swap), 0


def _batch_factor(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    _shared_batched_error(spec, dims)
    if _only_ordering_batched(spec, dims):
        return _bind(spec, args, **params), None
    vi = _pos(spec, "values")
    Ax, dAx = args[vi], dims[vi]
    new = list(args)
    if spec.name == "factor":
        Ax = jnp.moveaxis(Ax, dAx, 0)
        B, la, _nnz = Ax.shape
        swap = _lhs_sharded_inside(Ax)
        new[vi] = _merge(Ax, swap)
        return _unmerge(_bind(spec, new, **params), B, la, swap), 0
    ni = _pos(spec, "numeric")
    num, dnum = args[ni], dims[ni]
    if dnum is None:
        raise ValueError(
            "klujax.refactor: Ax is batched but the numeric handles are not; each handle "
            "holds one factorization, so vmap over the numeric handles as well"
        )
    num = jnp.moveaxis(num, dnum, 0)
    B, ln = num.shape
    if dAx is None:
        Ax = jnp.broadcast_to(Ax, (B, *Ax.shape))
    else:
        Ax = jnp.moveaxis(Ax, dAx, 0)
    Ax = jnp.broadcast_to(Ax, (B, ln, Ax.shape[-1]))
    swap = _lhs_sharded_inside(num)
    new[vi], new[ni] = _merge(Ax, swap), _merge(num, swap)
    return _unmerge(_bind(spec, new, **params), B, ln, swap), 0


def _batch_values(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    """Ops on (Ai, Aj, Ax) alone: fold a batch of Ax into its n_lhs."""
    if dims[0] is not None or dims[1] is not None:
        return _batch_by_loop(args, dims, spec=spec, **params)
    Ax = jnp.moveaxis(args[2], dims[2], 0)
    B, la, nnz = Ax.shape
    out = _bind(spec, (args[0], args[1], Ax.reshape(B * la, nnz)), **params)
    return out.reshape(B, la, *out.shape[1:]), 0


def _batch_numeric_diag(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    num = jnp.moveaxis(args[0], dims[0], 0)
    out = _bind(spec, (num.reshape(-1),), **params)
    return out.reshape(*num.shape, 2), 0


def _batch_free(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    return _bind(spec, (args[0].reshape(-1), *args[1:]), **params), None


def _batch_analyze(args: Any, dims: Any, *, spec: OpSpec, **params: Any) -> Any:
    _shared_batched_error(spec, dims)
    raise AssertionError("unreachable")  # pragma: no cover


_RULES = {
    "solve": (_solve_jvp, _solve_transpose, _batch_solve_like),
    "solve_with_symbol": (_solve_jvp, _solve_transpose, _batch_solve_like),
    "solve_with_numeric": (_solve_jvp, _solve_transpose, _batch_solve_like),
    "dot": (_dot_jvp, _dot_transpose, _batch_solve_like),
    "factor": (_factor_jvp, None, _batch_factor),
    "refactor": (_factor_jvp, None, _batch_factor),
    "analyze": (None, None, _batch_analyze),
    "diagnostics": (_diagnostics_jvp, None, _batch_values),
    "inverse_entries": (_inverse_entries_jvp, None, _batch_values),
    "diagnostics_numeric": (None, None, _batch_numeric_diag),
    "free_symbolic": (None, None, _batch_free),
    "free_numeric": (None, None, _batch_free),
}


def _register() -> None:
    for name, (jvp, transpose, batch) in _RULES.items():
        spec = OPS[name]
        for p in spec.primitives.values():
            if jvp is not None:
                ad.primitive_jvps[p] = partial(jvp, spec=spec)
            if transpose is not None:
                ad.primitive_transposes[p] = partial(transpose, spec=spec)
            batching.primitive_batchers[p] = partial(batch, spec=spec)


_register()
