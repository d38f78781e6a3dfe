"""Every shim for differences between supported jax versions lives here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

try:  # the stable home of apply_primitive moved around between releases
    from jax._src.dispatch import apply_primitive
except ImportError:  # pragma: no cover
    from jax.interpreters.xla import apply_primitive  # type: ignore[no-redef,attr-defined,unused-ignore]

try:
    from jax._src.core import trace_state_clean
except ImportError:  # pragma: no cover

    def trace_state_clean() -> bool:  # conservative: always keep the effect
        return False


try:  # public in newer jax; jax.experimental before (0.6)
    from jax import enable_x64
except ImportError:  # pragma: no cover
    from jax.experimental import enable_x64  # type: ignore[no-redef,attr-defined]

__all__ = [
    "Primitive",
    "ad",
    "apply_primitive",
    "batching",
    "enable_x64",
    "mlir",
    "trace_state_clean",
]

from jax._src import effects as _effects


class KLUEffect(_effects.Effect):
    """Marks primitives that allocate, mutate or free native KLU objects.

    An effectful equation is never removed by dead-code elimination nor merged with an
    identical one; the lowering also passes ``has_side_effect=True`` to XLA.
    """

    def __str__(self) -> str:
        return "KLU"

    # jax.export serializes an effect by its class's name and rebuilds it with the
    # nullary constructor, which must give an equal object.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash("klujax.KLUEffect")


# ``str(KLUEffect)`` is what serialized exports record: keep it "klujax.KLUEffect"
# whatever module defines the class.
KLUEffect.__module__ = "klujax"
klu_effect = KLUEffect()
for _registry in (
    "lowerable_effects",
    "control_flow_allowed_effects",
    "custom_derivatives_allowed_effects",
    "remat_allowed_effects",
):
    if hasattr(_effects, _registry):
        getattr(_effects, _registry).add_type(KLUEffect)

__all__ += ["KLUEffect", "klu_effect"]


# == shard_map: varying manual axes (vma) ==#
# Inside jax.shard_map (check_vma=True, the default) every aval records the mesh axes
# its value varies over: ``aval.vma`` (jax 0.6-0.9) or ``aval.mat.varying`` (0.10+).
# A primitive's result must carry the union of its operands' vma, and every operand
# must already have that union: a non-varying operand is cast with ``pvary`` first,
# whose transpose is the ``psum`` that reduces a replicated operand's cotangent.

from jax._src import core as _core  # noqa: E402
from jax.sharding import NamedSharding as _NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as _P  # noqa: E402

typeof = getattr(jax, "typeof", None) or _core.get_aval  # type: ignore[attr-defined]


def vma(aval: Any) -> frozenset:
    """The varying manual axes of an aval (empty outside shard_map)."""
    v = getattr(aval, "vma", None)
    if v is None:
        mat = getattr(aval, "mat", None)
        v = getattr(mat, "varying", None) if mat is not None else None
    return frozenset(v or ())


def _pvary(x: Any, axes: tuple) -> Any:
    return _core.pvary(x, axes)


def insert_pvary(args: Sequence[Any]) -> list[Any]:
    """Casts every operand to the union of the operands' varying manual axes."""
    vmas = [vma(typeof(a)) for a in args]
    union = frozenset().union(*vmas)
    if not union:
        return list(args)
    return [
        _pvary(a, tuple(sorted(union - v, key=str))) if union - v else a for a, v in zip(args, vmas)
    ]


def _spec(aval: Any) -> tuple:
    spec = getattr(getattr(aval, "sharding", None), "spec", None)
    return tuple(spec) if spec is not None else ()


def explicit_spec(aval: Any, dim: int) -> Any:
    """The mesh axes of ``aval``'s dimension ``dim`` in its type (explicit sharding), or None."""
    spec = _spec(aval)
    return spec[dim] if dim < len(spec) else None


def with_operand_types(
    name: str, out: Any, avals: Sequence[Any], out_spec: Sequence[Any] = ()
) -> Any:
    """``out`` (a plain ShapedArray) typed like its operands: their vma (which must agree)
    and, for explicitly sharded operands (sharding in types), the sharding ``out_spec``."""
    vmas = [vma(a) for a in avals]
    union = frozenset().union(*vmas)
    explicit = any(e is not None for e in out_spec)
    if not union and not explicit:
        return out
    if any(v != union for v in vmas):
        raise ValueError(
            f"{name}: operands vary over different manual mesh axes ({[set(v) for v in vmas]}); "
            "bind klujax primitives through klujax's functions, which insert jax.lax.pvary"
        )
    alike = [a for a in avals if vma(a) == union]
    like = next((a for a in alike if _spec(a) and not a.sharding.mesh.empty), alike[0])
    spec = [*out_spec, *[None] * (len(out.shape) - len(out_spec))][: len(out.shape)]
    sharding = _NamedSharding(like.sharding.mesh, _P(*spec))
    return like.update(shape=out.shape, dtype=out.dtype, weak_type=False, sharding=sharding)


__all__ += ["explicit_spec", "insert_pvary", "typeof", "vma", "with_operand_types"]


try:  # public with check_vma from jax 0.7; jax.experimental (check_rep) before
    from jax import shard_map as _shard_map_new

    def shard_map(f: Any, *, mesh: Any, in_specs: Any, out_specs: Any, check: bool = True) -> Any:
        """``jax.shard_map`` with its default checks (``check_vma``)."""
        return _shard_map_new(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check)
except ImportError:  # pragma: no cover (jax 0.6)
    from jax.experimental.shard_map import shard_map as _shard_map_old

    def shard_map(f: Any, *, mesh: Any, in_specs: Any, out_specs: Any, check: bool = True) -> Any:
        """``jax.experimental.shard_map.shard_map`` with its default checks (``check_rep``)."""
        return _shard_map_old(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=check)


__all__ += ["shard_map"]


# == custom call partitioning (klujax/_partition.py) ==#
# The machinery under jax.experimental.custom_partitioning, the same from jax 0.6 to 0.10.

from jax._src import sharding_impls as _sharding_impls  # noqa: E402
from jax._src.lib import xla_client as xc  # noqa: E402
from jax._src.lib.mlir import ir  # noqa: E402


def multi_device_lowering(ctx: Any) -> bool:
    """Whether a lowering is for a computation that XLA will partition (several devices)."""
    axis_context = ctx.module_context.axis_context
    return (
        isinstance(axis_context, _sharding_impls.ShardingContext) and axis_context.num_devices > 1
    )


def use_shardy() -> bool:
    return bool(getattr(jax.config, "jax_use_shardy_partitioner", False))


def hlo_sharding(tiles: list[int], replicas: int, devices: list[int]) -> Any:
    """An HloSharding tiling the dimensions ``tiles`` ways, each tile on ``replicas`` devices."""
    op = xc.OpSharding()
    op.type = xc.OpSharding.Type.OTHER
    op.tile_assignment_dimensions = list(tiles) + ([replicas] if replicas > 1 else [])
    op.tile_assignment_devices = list(devices)
    op.replicate_on_last_tile_dim = replicas > 1
    return xc.HloSharding.from_proto(op)


def build_partitioned_module(closed_jaxpr: Any) -> bytes:
    """The per-device computation a custom call partitioner returns, as MLIR bytecode."""
    from jax._src.interpreters import mlir as _mlir

    module = _mlir.build_mlir_module_helper(
        closed_jaxpr,
        name="klujax_partitioned",
        platforms=["cpu"],
        backend=None,
        axis_context=_sharding_impls.ShardingContext(1),
    )
    return _mlir.module_to_bytecode(module)


def _is(a: Any, cls: Any) -> bool:
    check = getattr(cls, "isinstance", None)  # older MLIR bindings: Cls.isinstance(attr)
    return bool(check(a)) if check is not None else isinstance(a, cls)


def decode_ffi_attributes(backend_config: bytes | str) -> dict[str, Any]:
    """The attributes of an FFI custom call (HLO keeps them as an MLIR dictionary)."""
    import numpy as np

    text = backend_config.decode() if isinstance(backend_config, bytes) else backend_config
    out: dict[str, Any] = {}
    with mlir.make_ir_context():
        attrs = ir.DictAttr(ir.Attribute.parse(text))
        for i in range(len(attrs)):
            named = attrs[i]
            a = named.attr
            if _is(a, ir.BoolAttr):
                v: Any = ir.BoolAttr(a).value
            elif _is(a, ir.IntegerAttr):
                v = ir.IntegerAttr(a).value
            elif _is(a, ir.FloatAttr):
                v = ir.FloatAttr(a).value
            elif _is(a, ir.DenseFPElementsAttr):
                v = np.array(ir.DenseFPElementsAttr(a))
            else:
                raise ValueError(f"klujax: cannot decode FFI attribute {named.name} = {a}")
            out[named.name] = v
    return out


def sdy_rule_attribute(
    operands: tuple,
    results: tuple,
    need_replication: tuple,
    operand_types: list,
    result_types: list,
) -> Any:
    """An ``sdy.sharding_rule`` attribute (Shardy's sharding propagation rule)."""
    import inspect

    from jax._src.custom_partitioning_sharding_rule import (
        SdyShardingRule,
        sdy_sharding_rule_to_mlir,
    )

    if "need_replication_factors" in inspect.signature(SdyShardingRule).parameters:
        rule = SdyShardingRule(operands, results, need_replication_factors=need_replication)
    else:  # jax 0.6: no factor kinds (and Shardy is off by default); the partitioner
        rule = SdyShardingRule(operands, results)  # still replicates what it must
    return sdy_sharding_rule_to_mlir(rule, operand_types, result_types)


__all__ += [
    "build_partitioned_module",
    "decode_ffi_attributes",
    "hlo_sharding",
    "multi_device_lowering",
    "sdy_rule_attribute",
    "use_shardy",
    "xc",
]


def zero_like(x: Any) -> Any:
    """The symbolic zero tangent of a primal value (``ad.Zero.from_primal_value``)."""
    return ad.Zero.from_primal_value(x)  # type: ignore[attr-defined]
