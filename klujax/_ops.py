"""The table of klujax operations and the one factory that turns it into primitives.

Each op gets one primitive per dtype (``solve_f64``, ``solve_c128``, ..., plus
``*_f32``/``*_c64`` used when ``jax_enable_x64`` is off), all sharing one abstract eval,
one FFI lowering and the rules registered in :mod:`klujax._rules`. The dtype picks the
primitive in :func:`prim` and the FFI target in :func:`target`, nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import numpy as np

from . import _klujax
from ._compat import Primitive, apply_primitive, mlir
from ._shapes import DTYPE_SUFFIX

for _name, _capsule in _klujax.registrations().items():
    jax.ffi.register_ffi_target(_name, _capsule, platform="cpu")

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
    ``params`` are static attributes forwarded to the FFI handler.
    """

    name: str
    operands: tuple[str, ...]
    abstract_eval: Callable[..., Any]
    params: tuple[str, ...] = ()
    effectful: bool = False
    per_dtype: bool = True
    primitives: dict[str, Primitive] = field(default_factory=dict, compare=False)


def _rhs_like_eval(*avals: Any, spec: OpSpec, **params: Any) -> Any:
    from ._shapes import check_canonical  # noqa: PLC0415 (keeps import order simple)

    Ai, Aj, Ax, b = (avals[spec.operands.index(r)] for r in ("index", "index2", "values", "rhs"))
    n_lhs, n_col, n_rhs = check_canonical(spec.name, Ai, Aj, Ax, b)
    return jax.core.ShapedArray((n_lhs, n_col, n_rhs), Ax.dtype)


OPS: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    OPS[spec.name] = spec
    return spec


def target(op: str, dtype: Any) -> str:
    """The FFI target name of ``op`` for ``dtype``."""
    return f"klujax_{op}_{DTYPE_SUFFIX[np.dtype(dtype)]}"


def _layouts(spec: OpSpec) -> list[Any]:
    return [RHS_LAYOUT if r == "rhs" else None for r in spec.operands]


def _lowering(ctx: Any, *args: Any, spec: OpSpec, sfx: str, **params: Any) -> Any:
    out_avals = ctx.avals_out
    result_layouts = [RHS_LAYOUT if len(a.shape) == 3 else None for a in out_avals]
    attrs = {k: np.bool_(v) if isinstance(v, bool) else v for k, v in params.items()}
    rule = jax.ffi.ffi_lowering(
        f"klujax_{spec.name}_{sfx}",
        operand_layouts=_layouts(spec),
        result_layouts=result_layouts,
        has_side_effect=spec.effectful,
    )
    return rule(ctx, *args, **attrs)


def make_primitives(spec: OpSpec) -> None:
    """Creates and registers the primitives of one op (one per dtype)."""
    suffixes = DTYPE_SUFFIX.values() if spec.per_dtype else ("",)
    for sfx in suffixes:
        name = f"{spec.name}_{sfx}" if sfx else f"{spec.name}_p"
        p = Primitive(name)
        p.def_impl(partial(apply_primitive, p))
        p.def_abstract_eval(partial(spec.abstract_eval, spec=spec))
        mlir.register_lowering(p, partial(_lowering, spec=spec, sfx=sfx), platform="cpu")
        spec.primitives[sfx] = p


def prim(op: str, dtype: Any) -> Primitive:
    """The primitive of ``op`` for ``dtype``."""
    return OPS[op].primitives[DTYPE_SUFFIX[np.dtype(dtype)]]


SOLVE = register(OpSpec("solve", ("index", "index2", "values", "rhs"), _rhs_like_eval,
                        params=("transpose", "retain")))
DOT = register(OpSpec("dot", ("index", "index2", "values", "rhs"), _rhs_like_eval))
for _spec in (SOLVE, DOT):
    make_primitives(_spec)
