"""The table of klujax operations and the one factory that turns it into primitives.

Each op gets one primitive per dtype (``solve_f64``, ``solve_c128``, ..., plus
``*_f32``/``*_c64`` used when ``jax_enable_x64`` is off), all sharing one abstract eval,
one FFI lowering and the rules registered in :mod:`klujax._rules`. The dtype picks the
primitive in :func:`prim` and the FFI target in :func:`target`, nowhere else; FFI target
names come from :func:`target_name` alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import numpy as np

from . import _klujax
from ._compat import (
    Primitive,
    apply_primitive,
    enable_x64,
    explicit_spec,
    insert_pvary,
    klu_effect,
    mlir,
    multi_device_lowering,
    sdy_rule_attribute,
    trace_state_clean,
    use_shardy,
    with_operand_types,
)
from ._options import KLUOptions
from ._shapes import DTYPE_SUFFIX, check_canonical


def target_name(op_key: str, version: int) -> str:
    """The one naming scheme of klujax's FFI targets: ``klujax.<op>[_<dtype>].v<N>``.

    ``N`` is that target's own version. A versioned target never changes meaning (its
    operands, attributes, results and semantics): a new behaviour gets a new version and
    the old one stays registered, so computations exported with ``jax.export`` that call
    it keep working with later klujax releases.
    """
    return f"klujax.{op_key}.v{version}"


#: every FFI target name registered with XLA (all versions)
REGISTERED: list[str] = []
for _op_key, _version, _capsule in _klujax.registrations():
    REGISTERED.append(target_name(_op_key, _version))
    jax.ffi.register_ffi_target(REGISTERED[-1], _capsule, platform="cpu")

# Right-hand sides (and results) of shape (l, n_col, n_rhs) are laid out with rows
# fastest, then right-hand sides, then batch members: each system's columns are
# contiguous, as klu_solve wants them. XLA inserts whatever transposes are needed.
RHS_LAYOUT = (1, 2, 0)


@dataclass(frozen=True)
class OpSpec:
    """One row of the op table.

    ``operands`` names each operand's role: ``index`` (Ai/Aj, never batched or
    differentiated), ``values`` (Ax, shape (la, n_nz)), ``rhs`` (b/x, shape
    (lb, n_col, n_rhs), KLU layout), ``symbolic``/``numeric`` (uint64 handles).
    ``params`` are static attributes forwarded to the FFI handler. Effectful ops also
    take a static ``effect`` param: True (the default) inside a trace, where the
    jaxpr-level effect keeps XLA and JAX from dropping or merging the call; False for a
    top-level eager call, whose result is returned anyway, so that JAX's C++ fast dispatch
    path (which any jaxpr effect disables) applies: ~10 us instead of ~150 us a call.
    """

    name: str
    operands: tuple[str, ...]
    abstract_eval: Callable[..., Any]
    params: tuple[str, ...] = ()
    effectful: bool = False
    per_dtype: bool = True
    #: extra trailing operands that only order the op after them (``dependency=``)
    variadic: bool = False
    #: the FFI target version the lowering emits (see :func:`target_name`)
    version: int = 1
    #: what each result dimension is, for partitioning: "L" the batch (n_lhs), "R" the
    #: right-hand sides, None a dimension every device needs whole (klujax._partition)
    result_dims: tuple[str | None, ...] = ()
    primitives: dict[str, Primitive] = field(default_factory=dict, compare=False)


def _aval(shape: tuple[int, ...], dtype: Any) -> Any:
    return jax.core.ShapedArray(shape, dtype)


def _operand(avals: Any, spec: OpSpec, role: str) -> Any:
    return avals[spec.operands.index(role)]


def _check_handle(spec: OpSpec, role: str, h: Any, ndim: int | None = None) -> None:
    if h.dtype != np.uint64 or (ndim is not None and h.ndim != ndim):
        want = "a uint64 scalar" if ndim == 0 else "uint64"
        raise TypeError(f"{spec.name}: {role} handle must be {want}, got {h.dtype}{h.shape}")


def _rhs_like_eval(*avals: Any, spec: OpSpec, **params: Any) -> Any:
    """Result (n_lhs, n_col, n_rhs) of ops with operands Ai, Aj, Ax, b [, symbolic]."""
    Ai, Aj, Ax, b = (_operand(avals, spec, r) for r in ("index", "index2", "values", "rhs"))
    if "symbolic" in spec.operands:
        _check_handle(spec, "symbolic", _operand(avals, spec, "symbolic"), 0)
    n_lhs, n_col, n_rhs = check_canonical(spec.name, Ai, Aj, Ax, b)
    return _aval((n_lhs, n_col, n_rhs), Ax.dtype)


def _numeric_solve_eval(num: Any, b: Any, sym: Any, *, spec: OpSpec, **params: Any) -> Any:
    _check_handle(spec, "numeric", num, 1)
    _check_handle(spec, "symbolic", sym, 0)
    if b.ndim != 3 or np.dtype(b.dtype) not in DTYPE_SUFFIX:
        raise TypeError(
            f"{spec.name}: b must be (lb, n_col, n_rhs) float/complex, got {b.dtype}{b.shape}"
        )
    ln, lb = num.shape[0], b.shape[0]
    if ln != lb and 1 not in (ln, lb):
        raise ValueError(
            f"{spec.name}: {ln} numeric handles and a batch of {lb} in b do not broadcast"
        )
    return _aval((ln if lb == 1 else lb, *b.shape[1:]), b.dtype)


def _analyze_eval(Ai: Any, Aj: Any, *, spec: OpSpec, n_col: int, **params: Any) -> Any:
    if Ai.dtype != np.int32 or Aj.shape != Ai.shape or Ai.ndim != 1:
        raise TypeError(f"{spec.name}: Ai, Aj must be int32 vectors of one length")
    return _aval((), np.uint64)


def _factor_eval(Ai: Any, Aj: Any, Ax: Any, *rest: Any, spec: OpSpec, **params: Any) -> Any:
    for role, h in zip(spec.operands[3:], rest):
        _check_handle(spec, role, h, 0 if role == "symbolic" else 1)
    if Ax.ndim != 2 or Ax.shape[1] != Ai.shape[0]:
        raise ValueError(
            f"{spec.name}: Ax must be (la, n_nz) with n_nz={Ai.shape[0]}, got {Ax.shape}"
        )
    if spec.name == "refactor":
        num = rest[0]
        if Ax.shape[0] not in (1, num.shape[0]):
            raise ValueError(
                f"klujax.{spec.name}: Ax has {Ax.shape[0]} batch members for "
                f"{num.shape[0]} numeric handles"
            )
        return _aval(num.shape, np.uint64)
    return _aval((Ax.shape[0],), np.uint64)


def _free_eval(h: Any, *, spec: OpSpec, **params: Any) -> Any:
    _check_handle(spec, spec.operands[0], h)
    return _aval((), np.int32)


def _values_eval(Ai: Any, Aj: Any, Ax: Any, *, spec: OpSpec, n_col: int, **params: Any) -> Any:
    """Ops on (Ai, Aj, Ax (la, n_nz)) alone: diagnostics (la, 2), inverse_entries (la, n_nz)."""
    if Ai.dtype != np.int32 or Aj.shape != Ai.shape or Ai.ndim != 1:
        raise TypeError(f"{spec.name}: Ai, Aj must be int32 vectors of one length")
    if Ax.ndim != 2 or Ax.shape[1] != Ai.shape[0] or np.dtype(Ax.dtype) not in DTYPE_SUFFIX:
        raise ValueError(
            f"{spec.name}: Ax must be float/complex (la, n_nz) with "
            f"n_nz={Ai.shape[0]}, got {Ax.dtype}{Ax.shape}"
        )
    width = 2 if spec.name == "diagnostics" else Ai.shape[0]
    return _aval((Ax.shape[0], width), Ax.dtype)


def _numeric_diag_eval(num: Any, *, spec: OpSpec, dtype: Any, **params: Any) -> Any:
    _check_handle(spec, "numeric", num, 1)
    return _aval((num.shape[0], 2), np.empty(0, dtype).real.dtype)  # the primitive's real dtype


OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    OPS[spec.name] = spec
    return spec


def target(spec: OpSpec, sfx: str) -> str:
    """The FFI target a lowering of ``spec`` for dtype suffix ``sfx`` ("" if none) calls."""
    name = target_name(f"{spec.name}_{sfx}" if sfx else spec.name, spec.version)
    if name not in REGISTERED:  # a Python tree newer than the compiled extension
        raise RuntimeError(f"klujax: the native extension has no FFI target {name}; rebuild it")
    return name


def _rhs_layout(shape: tuple[int, ...]) -> Any:
    """RHS_LAYOUT for a (l, n_col, n_rhs) array; None (row-major) when n_rhs is 1.

    With one right-hand side the two layouts are the same bytes, but XLA tells them
    apart and would copy every result (and operand) between them: a row-major
    (l, n_col, 1) is a free reshape of the (l, n_col) arrays user code passes and gets.
    """
    return None if len(shape) != 3 or shape[2] == 1 else RHS_LAYOUT


def _layouts(spec: OpSpec, avals_in: Any) -> list[Any]:
    """Operand layouts: right-hand sides as KLU wants them, everything else default."""
    return [
        _rhs_layout(tuple(a.shape))
        if i < len(spec.operands) and spec.operands[i] == "rhs"
        else None
        for i, a in enumerate(avals_in)
    ]


def _attr(v: Any) -> Any:
    if isinstance(v, KLUOptions):
        return v.as_attribute()
    return np.bool_(v) if isinstance(v, bool) else np.int64(v)


def _attrs(params: dict[str, Any]) -> dict[str, Any]:
    """FFI attributes from primitive params (``effect`` is for JAX only)."""
    return {k: _attr(v) for k, v in params.items() if k != "effect"}


def _lowering(ctx: Any, *args: Any, spec: OpSpec, sfx: str, **params: Any) -> Any:
    out_avals = ctx.avals_out
    result_layouts = [_rhs_layout(tuple(a.shape)) for a in out_avals]
    attrs = _attrs(params)
    rule = jax.ffi.ffi_lowering(
        target(spec, sfx),
        operand_layouts=_layouts(spec, ctx.avals_in),
        result_layouts=result_layouts,
        has_side_effect=spec.effectful,
    )
    results = rule(ctx, *args, **attrs)
    if use_shardy() and multi_device_lowering(ctx):
        _add_sdy_rule(ctx, spec, args, results)
    return results


def _add_sdy_rule(ctx: Any, spec: OpSpec, args: Any, results: Any) -> None:
    """Shardy's sharding propagation rule for the call (see klujax/_partition.py)."""
    avals = [*ctx.avals_in, *ctx.avals_out]
    if not all(isinstance(d, int) for a in avals for d in a.shape):
        return  # symbolic shapes: no partitioning
    from ._partition import sdy_rule

    operands, result, need = sdy_rule(
        spec, [tuple(a.shape) for a in ctx.avals_in], tuple(ctx.avals_out[0].shape)
    )
    op = results[0].owner
    op = getattr(op, "operation", op)
    op.attributes["sdy.sharding_rule"] = sdy_rule_attribute(
        operands, result, need, [a.type for a in args], [r.type for r in results]
    )


def _host_lowering(ctx: Any, *args: Any, spec: OpSpec, sfx: str, **params: Any) -> Any:
    """Lowering for accelerator platforms: run the CPU kernel through a host callback.

    KLU is a CPU library. On a GPU (or any non-CPU) backend the operands are copied to
    the host, solved there by the same FFI target, and copied back, so klujax works
    unchanged inside computations placed on an accelerator (at the cost of the copies).
    """
    name = target(spec, sfx)
    outs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in ctx.avals_out]
    major_to_minor = lambda lay: None if lay is None else tuple(reversed(lay))  # noqa: E731
    call = jax.ffi.ffi_call(
        name,
        outs[0],
        input_layouts=[major_to_minor(lay) for lay in _layouts(spec, ctx.avals_in)],
        output_layouts=major_to_minor(_rhs_layout(tuple(outs[0].shape))),
        has_side_effect=spec.effectful,
    )
    attrs = _attrs(params)
    kernel = jax.jit(lambda *a: call(*a, **attrs))

    def host(*arrays: Any) -> Any:
        cpu = jax.devices("cpu")[0]
        with enable_x64(True):  # callback threads do not inherit a local x64 context
            return np.asarray(kernel(*jax.device_put(arrays, cpu)))

    def fn(*xs: Any) -> Any:
        if spec.effectful:
            return jax.experimental.io_callback(host, outs[0], *xs)
        return jax.pure_callback(host, outs[0], *xs, vmap_method="sequential")

    return mlir.lower_fun(fn, multiple_results=False)(ctx, *args)


# KLUJAX_FORCE_HOST_CALLBACK=1 uses the accelerator path on the CPU too (for testing it).
_HOST_PLATFORMS = ("cuda", "rocm", "tpu") + (
    ("cpu",) if os.environ.get("KLUJAX_FORCE_HOST_CALLBACK") == "1" else ()
)


#: the meaning of each dimension of an operand, by role: "L" the batch (n_lhs), "R" the
#: right-hand sides, None a dimension every device needs whole (see klujax._partition)
ROLE_DIMS = {
    "index": (None,),
    "index2": (None,),
    "values": ("L", None),
    "rhs": ("L", None, "R"),
    "numeric": ("L",),
    "symbolic": (),
}


def labels(spec: OpSpec, in_shapes: Any, out_shape: tuple) -> tuple[list, tuple]:
    """The factor ("L", "R" or None) of each dimension of each operand and of the result.

    Ordering-only operands (``dependency=``) get None instead of a tuple. A batch
    dimension of size 1 is broadcast, so it is not the L factor.
    """

    def of(dims: tuple, shape: tuple) -> tuple:
        if len(dims) != len(shape):  # e.g. a symbolic handle flattened to (1,) for free
            return (None,) * len(shape)
        return tuple(None if f == "L" and shape[d] == 1 else f for d, f in enumerate(dims))

    ins = [
        of(ROLE_DIMS[spec.operands[i]], tuple(shape)) if i < len(spec.operands) else None
        for i, shape in enumerate(in_shapes)
    ]
    return ins, of(spec.result_dims, tuple(out_shape))


def _out_spec(spec: OpSpec, avals: Any, out: Any) -> list[Any]:
    """The result's sharding in types, from explicitly sharded operands' L and R dimensions
    (numeric handles first: they never move)."""
    ins, res = labels(spec, [a.shape for a in avals], out.shape)
    order = sorted(range(len(spec.operands)), key=lambda i: spec.operands[i] != "numeric")
    axes = {}
    for i in order:
        for d, f in enumerate(ins[i]):
            if f and f not in axes and explicit_spec(avals[i], d) is not None:
                axes[f] = explicit_spec(avals[i], d)
    return [axes.get(f) if f else None for f in res]


def _abstract_eval(*avals: Any, spec: OpSpec, name: str, dtype: Any, **params: Any) -> Any:
    """The op's own shape rule, plus what every op shares: the operands' vma and the
    batch sharding of explicitly sharded operands."""
    out = spec.abstract_eval(*avals[: len(spec.operands)], spec=spec, dtype=dtype, **params)
    return with_operand_types(name, out, avals, _out_spec(spec, avals, out))


def bind(p: Primitive, *args: Any, **params: Any) -> Any:
    """Binds a klujax primitive; under shard_map, casts the operands to one vma first.

    A replicated operand (say ``Ax``) used with a sharded one (``b``) is ``pvary``-ed, so
    that reverse mode reduces its cotangent across the mesh axis (pvary's transpose is a
    psum), exactly as for jax.numpy's own operations.
    """
    return p.bind(*insert_pvary(args), **params)


def make_primitives(spec: OpSpec) -> None:
    """Creates and registers the primitives of one op (one per dtype)."""
    suffixes = DTYPE_SUFFIX.values() if spec.per_dtype else ("",)
    for sfx in suffixes:
        name = f"{spec.name}_{sfx}" if sfx else f"{spec.name}_p"
        p = Primitive(name)
        p.def_impl(partial(apply_primitive, p))
        dtype = next((d for d, x in DTYPE_SUFFIX.items() if x == sfx), np.dtype(np.float64))
        evaluate = partial(_abstract_eval, spec=spec, name=name, dtype=dtype)
        if spec.effectful:
            p.def_effectful_abstract_eval(
                lambda *a, _e=evaluate, effect=True, **k: (
                    _e(*a, **k),
                    {klu_effect} if effect else set(),
                )
            )
        else:
            p.def_abstract_eval(evaluate)
        mlir.register_lowering(p, partial(_lowering, spec=spec, sfx=sfx), platform="cpu")
        for platform in _HOST_PLATFORMS:
            mlir.register_lowering(
                p, partial(_host_lowering, spec=spec, sfx=sfx), platform=platform
            )
        spec.primitives[sfx] = p


def prim(op: str, dtype: Any) -> Primitive:
    """The primitive of ``op`` for ``dtype``."""
    return OPS[op].primitives[DTYPE_SUFFIX[np.dtype(dtype)]]


_IJ = ("index", "index2")
_OPT = "options"  # a KLUOptions, passed to the handler as one f64 array attribute
_LNR = ("L", None, "R")  # results (n_lhs, n_col, n_rhs)
SOLVE = register(
    OpSpec(
        "solve",
        (*_IJ, "values", "rhs"),
        _rhs_like_eval,
        params=("transpose", "retain", _OPT),
        variadic=True,
        result_dims=_LNR,
    )
)
DOT = register(OpSpec("dot", (*_IJ, "values", "rhs"), _rhs_like_eval, result_dims=_LNR))
ANALYZE = register(
    OpSpec("analyze", _IJ, _analyze_eval, params=("n_col", _OPT), effectful=True, per_dtype=False)
)
FACTOR = register(
    OpSpec(
        "factor",
        (*_IJ, "values", "symbolic"),
        _factor_eval,
        params=(_OPT,),
        effectful=True,
        result_dims=("L",),
    )
)
REFACTOR = register(
    OpSpec(
        "refactor",
        (*_IJ, "values", "numeric", "symbolic"),
        _factor_eval,
        params=(_OPT,),
        effectful=True,
        variadic=True,
        result_dims=("L",),
    )
)
SOLVE_WITH_SYMBOL = register(
    OpSpec(
        "solve_with_symbol",
        (*_IJ, "values", "rhs", "symbolic"),
        _rhs_like_eval,
        params=("transpose", "retain", _OPT),
        variadic=True,
        result_dims=_LNR,
    )
)
SOLVE_WITH_NUMERIC = register(
    OpSpec(
        "solve_with_numeric",
        ("numeric", "rhs", "symbolic"),
        _numeric_solve_eval,
        params=("transpose", _OPT),
        result_dims=_LNR,
    )
)
#: what = 0: rcond, 1: condest, 2: slogdet (sign, log|det|); result (la, 2)
DIAGNOSTICS = register(
    OpSpec(
        "diagnostics",
        (*_IJ, "values"),
        _values_eval,
        params=("n_col", "what", _OPT),
        result_dims=("L", None),
    )
)
DIAGNOSTICS_NUMERIC = register(
    OpSpec(
        "diagnostics_numeric",
        ("numeric",),
        _numeric_diag_eval,
        params=("what",),
        result_dims=("L", None),
    )
)
#: A^-T at the pattern (the gradient of log|det A| w.r.t. Ax); result (la, n_nz)
INVERSE_ENTRIES = register(
    OpSpec(
        "inverse_entries",
        (*_IJ, "values"),
        _values_eval,
        params=("n_col", _OPT),
        result_dims=("L", None),
    )
)
FREE_SYMBOLIC = register(
    OpSpec(
        "free_symbolic", ("symbolic",), _free_eval, effectful=True, per_dtype=False, variadic=True
    )
)
FREE_NUMERIC = register(
    OpSpec("free_numeric", ("numeric",), _free_eval, effectful=True, per_dtype=False, variadic=True)
)
for _spec in OPS.values():
    make_primitives(_spec)


def effect_needed() -> bool:
    """Whether an effectful op is being traced (True) or called eagerly at top level."""
    return not trace_state_clean()


def handle_prim(op: str) -> Primitive:
    """The dtype-free primitive of ``op`` (``analyze_p``, ``free_*_p``)."""
    return OPS[op].primitives[""]
