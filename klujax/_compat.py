"""Every shim for differences between supported jax versions lives here."""

from __future__ import annotations

from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

try:  # the stable home of apply_primitive moved around between releases
    from jax._src.dispatch import apply_primitive
except ImportError:  # pragma: no cover
    from jax.interpreters.xla import apply_primitive  # type: ignore[no-redef]

__all__ = ["Primitive", "ad", "apply_primitive", "batching", "mlir"]
