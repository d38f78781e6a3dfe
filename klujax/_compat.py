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
    from jax.interpreters.xla import apply_primitive  # type: ignore[no-redef]

try:
    from jax._src.core import trace_state_clean
except ImportError:  # pragma: no cover
    def trace_state_clean() -> bool:  # conservative: always keep the effect
        return False

try:  # public in newer jax; jax.experimental before (0.6)
    from jax import enable_x64
except ImportError:  # pragma: no cover
    from jax.experimental import enable_x64  # type: ignore[no-redef]

__all__ = ["Primitive", "ad", "apply_primitive", "batching", "enable_x64", "mlir",
           "trace_state_clean"]

from jax._src import effects as _effects  # noqa: E402


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
for _registry in ("lowerable_effects", "control_flow_allowed_effects",
                  "custom_derivatives_allowed_effects", "remat_allowed_effects"):
    if hasattr(_effects, _registry):
        getattr(_effects, _registry).add_type(KLUEffect)

__all__ += ["KLUEffect", "klu_effect"]


#== shard_map: varying manual axes (vma) ==#
# Inside jax.shard_map (check_vma=True, the default) every aval records the mesh axes
# its value varies over: ``aval.vma`` (jax 0.6-0.9) or ``aval.mat.varying`` (0.10+).
# A primitive's result must carry the union of its operands' vma, and every operand
# must already have that union: a non-varying operand is cast with ``pvary`` first,
# whose transpose is the ``psum`` that reduces a replicated operand's cotangent.

from jax._src import core as _core  # noqa: E402
from jax.sharding import NamedSharding as _NamedSharding, PartitionSpec as _P  # noqa: E402

typeof = getattr(jax, "typeof", None) or _core.get_aval


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
    return [_pvary(a, tuple(sorted(union - v, key=str))) if union - v else a
            for a, v in zip(args, vmas)]


def with_operand_types(name: str, out: Any, avals: Sequence[Any]) -> Any:
    """``out`` (a plain ShapedArray) given the operands' vma; they must agree."""
    vmas = [vma(a) for a in avals]
    union = frozenset().union(*vmas)
    if not union:
        return out
    if any(v != union for v in vmas):
        raise ValueError(
            f"{name}: operands vary over different manual mesh axes ({[set(v) for v in vmas]}); "
            "bind klujax primitives through klujax's functions, which insert jax.lax.pvary")
    like = next(a for a in avals if vma(a) == union)
    sharding = _NamedSharding(like.sharding.mesh, _P(*([None] * len(out.shape))))
    return like.update(shape=out.shape, dtype=out.dtype, weak_type=False, sharding=sharding)


__all__ += ["insert_pvary", "typeof", "vma", "with_operand_types"]


try:  # public with check_vma from jax 0.7; jax.experimental (check_rep) before
    from jax import shard_map as _shard_map_new

    def shard_map(f: Any, *, mesh: Any, in_specs: Any, out_specs: Any, check: bool = True) -> Any:
        """``jax.shard_map`` with its default checks (``check_vma``)."""
        return _shard_map_new(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                              check_vma=check)
except ImportError:  # pragma: no cover (jax 0.6)
    from jax.experimental.shard_map import shard_map as _shard_map_old

    def shard_map(f: Any, *, mesh: Any, in_specs: Any, out_specs: Any, check: bool = True) -> Any:
        """``jax.experimental.shard_map.shard_map`` with its default checks (``check_rep``)."""
        return _shard_map_old(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                              check_rep=check)

__all__ += ["shard_map"]
