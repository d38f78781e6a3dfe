"""Every shim for differences between supported jax versions lives here."""

from __future__ import annotations

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


klu_effect = KLUEffect()
for _registry in ("lowerable_effects", "control_flow_allowed_effects",
                  "custom_derivatives_allowed_effects", "remat_allowed_effects"):
    if hasattr(_effects, _registry):
        getattr(_effects, _registry).add_type(KLUEffect)

__all__ += ["klu_effect"]
