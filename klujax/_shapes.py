"""All argument validation and the canonical shapes the primitives work on.

Every public function goes through here at trace time. Canonical shapes:
``Ai, Aj: (n_nz,) int32``, ``Ax: (la, n_nz)``, ``b: (lb, n_col, n_rhs)`` with
``la, lb`` in ``{1, n_lhs}``; results are ``(n_lhs, n_col, n_rhs)``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = np.iinfo(np.int32).max

#: dtype -> primitive suffix. float32/complex64 exist only for ``jax_enable_x64=False``;
#: they are computed in double precision all the same.
DTYPE_SUFFIX = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.complex64): "c64",
    np.dtype(np.complex128): "c128",
}


def _dtype(x: Any) -> np.dtype:
    dt = getattr(x, "dtype", None)
    return np.dtype(dt) if dt is not None else np.asarray(x).dtype


def compute_dtype(fn: str, **arrays: Any) -> np.dtype:
    """The result dtype: float64 or complex128 (float32/complex64 with x64 off)."""
    is_complex = False
    for name, x in arrays.items():
        dt = _dtype(x)
        # jnp.issubdtype also knows bfloat16 and the other ml_dtypes floats: like every
        # float, they are computed in double precision.
        if dt == np.bool_ or not (
            jnp.issubdtype(dt, np.number) and not np.issubdtype(dt, np.timedelta64)
        ):
            raise TypeError(f"{fn}: {name} must be a numeric array, got dtype {dt}")
        is_complex |= np.issubdtype(dt, np.complexfloating)
    wide = np.complex128 if is_complex else np.float64
    return np.dtype(jax.dtypes.canonicalize_dtype(wide))


def as_index(fn: str, name: str, idx: Any) -> jax.Array:
    """Validates an index array and returns it as int32.

    Values that do not fit in int32 become -1, which the native code then reports as
    out of range (and names the argument), instead of wrapping to a valid index.
    """
    if not hasattr(idx, "dtype"):
        idx = np.asarray(idx)
    dt = _dtype(idx)
    if not np.issubdtype(dt, np.integer):
        raise TypeError(f"{fn}: {name} must be an integer array, got dtype {dt}")
    if np.ndim(idx) != 1:
        raise ValueError(f"{fn}: {name} must be 1D with shape (n_nz,), got shape {np.shape(idx)}")
    if isinstance(idx, np.ndarray) and idx.size and dt.itemsize >= 4:
        # Host arrays are checked before jax may narrow them to int32 (x64 off).
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi > INT32_MAX:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: {name} contains {bad}, outside [0, n_col)")
    idx = jnp.asarray(idx)
    if idx.dtype == jnp.int32:
        return idx
    if idx.dtype.itemsize < 4 or (
        idx.dtype.itemsize == 4 and np.issubdtype(idx.dtype, np.signedinteger)
    ):
        return idx.astype(jnp.int32)
    # Wider or unsigned: map anything outside int32 to -1 before narrowing.
    big = (
        (idx > INT32_MAX)
        if np.issubdtype(idx.dtype, np.unsignedinteger)
        else ((idx < 0) | (idx > INT32_MAX))
    )
    return jnp.where(big, -1, idx).astype(jnp.int32)


@dataclass(frozen=True)
class Layout:
    """How a user's (Ax, b) maps onto the canonical shapes, and back."""

    la: int
    lb: int
    n_lhs: int
    n_col: int
    n_rhs: int
    b_ndim: int
    ax_ndim: int

    def out_shape(self) -> tuple[int, ...]:
        """Shape of the result as the user sees it (the broadcast shape of b)."""
        if self.b_ndim == 3:
            return (self.n_lhs, self.n_col, self.n_rhs)
        if self.ax_ndim == 1:
            return (self.n_col,) if self.b_ndim == 1 else (self.n_col, self.n_rhs)
        return (self.n_lhs, self.n_col)

    def restore(self, x: jax.Array) -> jax.Array:
        return x.reshape(self.out_shape())


def canonical(
    fn: str, Ai: Any, Aj: Any, Ax: Any, b: Any, *, b_name: str = "b"
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, Layout]:
    """Validates (Ai, Aj, Ax, b) and returns them in canonical form plus the Layout.

    Interpretation of under-specified shapes (klujax 0.5 compatible):

    ========  ========  =================  =====================
    Ax.ndim   b.ndim    Ax                 b
    ========  ========  =================  =====================
    1         1         (n_nz,)            (n_col,)
    1         2         (n_nz,)            (n_col, n_rhs)
    1         3         (n_nz,)            (n_lhs, n_col, n_rhs)
    2         1         (n_lhs, n_nz)      (n_col,)
    2         2         (n_lhs, n_nz)      (n_lhs, n_col)
    2         3         (n_lhs, n_nz)      (n_lhs, n_col, n_rhs)
    ========  ========  =================  =====================

    A batch of 1 in either Ax or b broadcasts against the other's n_lhs.
    """
    dtype = compute_dtype(fn, Ax=Ax, **{b_name: b})
    Ai = as_index(fn, "Ai", Ai)
    Aj = as_index(fn, "Aj", Aj)
    Ax = jnp.asarray(Ax)
    b = jnp.asarray(b)
    if Ax.ndim not in (1, 2):
        raise ValueError(f"{fn}: Ax must have shape (n_nz,) or (n_lhs, n_nz), got {Ax.shape}")
    n_nz = Ax.shape[-1]
    if Ai.shape != (n_nz,) or Aj.shape != (n_nz,):
        raise ValueError(
            f"{fn}: Ai, Aj and Ax disagree on n_nz: Ai {Ai.shape}, Aj {Aj.shape}, "
            f"Ax {Ax.shape} (expected Ai, Aj of shape ({n_nz},))"
        )
    if n_nz > INT32_MAX:
        raise ValueError(f"{fn}: n_nz must be below 2^31, got {n_nz}")
    Ax2 = Ax if Ax.ndim == 2 else Ax[None]
    b3, layout = canonical_rhs(fn, b, Ax2.shape[0], Ax.ndim, b_name=b_name)
    if layout.n_col == 0 and n_nz > 0:  # XLA runs nothing for an empty result: check here
        raise ValueError(
            f"{fn}: n_col is 0 (from {b_name}.shape {b.shape}) but Ai/Aj have "
            f"{n_nz} entries: every index is out of range"
        )
    return Ai, Aj, Ax2.astype(dtype), b3.astype(dtype), layout


def canonical_rhs(
    fn: str, b: jax.Array, la: int, ax_ndim: int, *, b_name: str = "b", lhs_name: str = "Ax"
) -> tuple[jax.Array, Layout]:
    """b -> (lb, n_col, n_rhs) given the lhs batch ``la`` and the rank of the user's Ax."""
    if b.ndim not in (1, 2, 3):
        raise ValueError(
            f"{fn}: {b_name} must have shape (n_col,), (n_col, n_rhs), (n_lhs, n_col) or "
            f"(n_lhs, n_col, n_rhs), got {b.shape}"
        )
    if b.ndim == 1:
        b3 = b[None, :, None]
    elif b.ndim == 2:
        b3 = b[None] if ax_ndim == 1 else b[:, :, None]
    else:
        b3 = b
    lb = b3.shape[0]
    if la != lb and 1 not in (la, lb):
        raise ValueError(
            f"{fn}: n_lhs of {lhs_name} ({la}) and of {b_name} ({lb}) differ and neither is 1 "
            f"({b_name} has shape {b.shape})"
        )
    n_col, n_rhs = b3.shape[1], b3.shape[2]
    if n_col > INT32_MAX:
        raise ValueError(f"{fn}: n_col must be below 2^31, got {n_col}")
    return b3, Layout(la, lb, la if lb == 1 else lb, n_col, n_rhs, b.ndim, ax_ndim)


def check_canonical(name: str, Ai: Any, Aj: Any, Ax: Any, b: Any) -> tuple[int, int, int]:
    """Abstract-eval check of canonical operands; returns (n_lhs, n_col, n_rhs)."""
    if Ai.dtype != np.int32 or Aj.dtype != np.int32 or Ai.ndim != 1 or Aj.shape != Ai.shape:
        raise TypeError(
            f"{name}: Ai, Aj must be int32 vectors of one length, got "
            f"{Ai.dtype}{Ai.shape}, {Aj.dtype}{Aj.shape}"
        )
    if Ax.ndim != 2 or b.ndim != 3 or Ax.shape[1] != Ai.shape[0]:
        raise ValueError(
            f"{name}: expected Ax (la, n_nz) and b (lb, n_col, n_rhs), got "
            f"{Ax.shape}, {b.shape} with n_nz={Ai.shape[0]}"
        )
    if Ax.dtype != b.dtype or np.dtype(Ax.dtype) not in DTYPE_SUFFIX:
        raise TypeError(
            f"{name}: Ax and b must share a float/complex dtype, got {Ax.dtype}, {b.dtype}"
        )
    la, lb = Ax.shape[0], b.shape[0]
    if la != lb and 1 not in (la, lb):
        raise ValueError(f"{name}: batch sizes {la} (Ax) and {lb} (b) do not broadcast")
    return (la if lb == 1 else lb), b.shape[1], b.shape[2]


def canonical_values(fn: str, Ai: Any, Aj: Any, Ax: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Validates (Ai, Aj, Ax) of ops without a right-hand side; Ax -> (la, n_nz)."""
    dtype = compute_dtype(fn, Ax=Ax)
    Ai, Aj = as_index(fn, "Ai", Ai), as_index(fn, "Aj", Aj)
    Ax = jnp.asarray(Ax)
    if Ax.ndim not in (1, 2) or Ai.shape != (Ax.shape[-1],) or Aj.shape != Ai.shape:
        raise ValueError(
            f"{fn}: expected Ai, Aj (n_nz,) and Ax (n_nz,) or (n_lhs, n_nz), got "
            f"{Ai.shape}, {Aj.shape}, {Ax.shape}"
        )
    return Ai, Aj, (Ax if Ax.ndim == 2 else Ax[None]).astype(dtype)


def static_n_col(fn: str, n_col: Any) -> int:
    """``n_col`` as a Python int >= 0 (a static size: not a tracer, not 5.7)."""
    try:
        n_col = operator.index(n_col)
    except TypeError:
        raise TypeError(f"{fn}: n_col must be a static Python int, got {n_col!r}") from None
    if n_col < 0:
        raise ValueError(f"{fn}: n_col must be >= 0, got {n_col}")
    return n_col
