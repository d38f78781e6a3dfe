"""What jax.export needs to know about klujax's FFI targets."""

from __future__ import annotations

from typing import Any

from ._ops import REGISTERED


def export_safety_checks() -> list[Any]:
    """The ``jax.export.DisabledSafetyCheck`` s that klujax's FFI targets need.

    ``jax.export`` refuses custom calls it does not know to be stable. klujax's targets
    are versioned (``klujax.<op>_<dtype>.v<N>``) and a versioned target never changes
    meaning, so an exported computation that calls them keeps working with later klujax
    releases (which import, and so register, the same targets)::

        exp = jax.export.export(jax.jit(f), disabled_checks=klujax.export_safety_checks())(*args)
        blob = exp.serialize()
        # ... in another process, after `import klujax`:
        jax.export.deserialize(blob).call(*args)

    Returns:
        One ``DisabledSafetyCheck.custom_call(name)`` per registered klujax target (every
        op, dtype and version).
    """
    from jax import export  # imported on use: jax 0.6's jax.export needs absl-py

    return [export.DisabledSafetyCheck.custom_call(name) for name in REGISTERED]
