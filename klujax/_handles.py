"""KLUHandleManager: a pytree around a native KLU handle array."""

from __future__ import annotations

import threading
import warnings
import weakref
from typing import Any

import jax
import numpy as np

from . import _klujax

_warned = False
_warn_lock = threading.Lock()


def _free_native(kind: str, handle: np.ndarray, uses: list[weakref.ref]) -> None:
    """Free a manager's native objects once the results computed with them are ready."""
    try:
        # Outside jit JAX dispatches asynchronously: a solve with this handle may still
        # be queued. Wait for the results the manager handed out before freeing.
        pending = [r() for r in uses]
        jax.block_until_ready([x for x in pending if x is not None])
    except Exception:
        pass
    try:
        _klujax.free_handles(kind, [int(i) for i in handle.reshape(-1)])
    except Exception:
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

    def __init__(
        self, handle: Any, *, kind: str = "numeric", dtype: Any = None, owned: bool = False
    ):
        if kind not in ("symbolic", "numeric"):
            raise ValueError(
                f"KLUHandleManager: kind must be 'symbolic' or 'numeric', got {kind!r}"
            )
        self.handle = handle
        self.kind = kind
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._dtype_name = None if self.dtype is None else self.dtype.name
        self.owned = bool(owned) and not isinstance(handle, jax.core.Tracer)
        self._uses: list[weakref.ref] = []  # results computed with this handle (eager)
        self._finalizer = (
            weakref.finalize(self, _free_native, kind, np.asarray(handle).copy(), self._uses)
            if self.owned
            else None
        )

    def _track(self, out: Any) -> Any:
        """Remember an eager result computed with this handle; close() waits for it."""
        if self._finalizer is not None and not isinstance(out, jax.core.Tracer):
            self._uses[:] = [r for r in self._uses if r() is not None][-15:]
            try:
                self._uses.append(weakref.ref(out))
            except TypeError:  # pragma: no cover (not weak-referenceable)
                jax.block_until_ready(out)
        return out

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
            f"{type(h).__name__} of dtype {dt}"
        )
    return h
