"""KLUHandleManager: a pytree around a native KLU handle array."""

from __future__ import annotations

import threading
import warnings
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._ops import handle_prim

_warned = False
_warn_lock = threading.Lock()


def _free_native(kind: str, handle: np.ndarray) -> None:
    try:
        # x64 on locally: with it off, jax would narrow the uint64 ids to uint32.
        with jax.enable_x64(True):
            handle_prim(f"free_{kind}").bind(jnp.asarray(handle.reshape(-1), dtype=jnp.uint64))
    except Exception:  # noqa: BLE001  (finalizers must never raise, e.g. at shutdown)
        pass


def warn_unowned(kind: str) -> None:
    """Warn (once per process) that a handle born inside ``jit`` is not owned."""
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"klujax: a {kind} handle created inside jax.jit cannot be freed by Python. Free it "
        f"inside the same function with klujax.free_{kind}(handle, dependency=result), or "
        "use klujax.solve / klujax.solve_with_symbol, which manage factorizations for you.",
        stacklevel=3,
    )


@jax.tree_util.register_pytree_node_class
class KLUHandleManager:
    """Owns a native KLU symbolic or numeric object (or a batch of numeric objects).

    Attributes:
        handle: the uint64 handle array: ``()`` for a symbolic analysis or a numeric
            factorization of a 1D ``Ax``; ``(n_lhs,)`` for a batched factorization.
        kind: ``"symbolic"`` or ``"numeric"``.
        dtype: the dtype the numeric object was factored in (``None`` for symbolic).
        owned: whether this object frees the native one when closed, used as a context
            manager, or garbage collected.

    As a pytree its leaf is ``handle`` and its aux data ``(kind, dtype)``; a manager
    rebuilt from leaves (inside ``jit``, ``vmap``, ``tree_map``) never owns, so only the
    manager Python created outside ``jit`` frees the object, exactly once.
    """

    def __init__(self, handle: Any, *, kind: str = "numeric", dtype: Any = None, owned: bool = False):
        if kind not in ("symbolic", "numeric"):
            raise ValueError(f"KLUHandleManager: kind must be 'symbolic' or 'numeric', got {kind!r}")
        self.handle = handle
        self.kind = kind
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._dtype_name = None if dtype is None else self.dtype.name
        self.owned = bool(owned) and not isinstance(handle, jax.core.Tracer)
        self._finalizer = (
            weakref.finalize(self, _free_native, kind, np.asarray(handle).copy()) if self.owned else None
        )

    # -- ownership --
    def close(self) -> None:
        """Free the native object now (idempotent; no-op for a non-owning manager)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def _disown(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    @property
    def closed(self) -> bool:
        return self.owned and self._finalizer is None

    def __enter__(self) -> KLUHandleManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- pytree --
    def tree_flatten(self) -> tuple[tuple[Any], tuple[str, Any]]:
        return (self.handle,), (self.kind, self._dtype_name)

    @classmethod
    def tree_unflatten(cls, aux: tuple[str, Any], children: Any) -> KLUHandleManager:
        return cls(children[0], kind=aux[0], dtype=aux[1], owned=False)

    def __repr__(self) -> str:
        own = "owned" if self.owned else "borrowed"
        if self.closed:
            own = "closed"
        return f"KLUHandleManager({self.kind}, handle={self.handle!r}, {own})"


def handle_array(fn: str, name: str, h: Any, kind: str) -> jax.Array:
    """The uint64 handle array of a manager or raw array, checked for kind and dtype."""
    if isinstance(h, KLUHandleManager):
        if h.kind != kind:
            raise TypeError(f"{fn}: {name} is a {h.kind} handle, expected a {kind} one")
        if h.closed:
            raise ValueError(f"{fn}: {name} was already freed")
        h = h.handle
    dt = getattr(h, "dtype", None)
    if dt != np.uint64:
        raise TypeError(
            f"{fn}: {name} must be a KLUHandleManager or a uint64 handle array, got "
            f"{type(h).__name__} of dtype {dt}")
    return h
