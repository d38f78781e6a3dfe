"""``KLUOptions``: KLU's controls and klujax's accuracy check, one frozen, hashable value."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

_ORDERINGS = {"amd": 0, "colamd": 1, "natural": 2}
_SCALES = {"none": 0, "sum": 1, "max": 2}
_METHODS = {"auto": 0, "klu": 1, "umfpack": 2}


@dataclass(frozen=True)
class KLUOptions:
    """Options of a factorization and of the accuracy check of every solve.

    Pass as ``options=`` to :func:`klujax.solve`, :func:`klujax.solve_with_symbol`,
    :func:`klujax.analyze`, :func:`klujax.factor`, :func:`klujax.refactor`,
    :func:`klujax.solve_with_numeric`, :func:`klujax.rcond`, :func:`klujax.condest`,
    :func:`klujax.slogdet` and :func:`klujax.lu`. Options are static under ``jit`` (a new
    value compiles anew) and part of every native cache key.

    Attributes:
        tol: KLU's partial pivoting tolerance in ``(0, 1]``: a diagonal entry is kept as
            pivot if it is at least ``tol`` times the largest entry of its column. The
            default (KLU's, 0.001) keeps fill low on circuit matrices; ``1.0`` is classic
            partial pivoting (more fill, smaller growth). The accuracy check below makes up
            for the default's occasional loss of digits, so change it for speed or fill,
            rarely for accuracy.
        ordering: fill-reducing column ordering of the analysis: ``"amd"`` (default, best
            for most circuit and FEM matrices), ``"colamd"`` (for very unsymmetric
            patterns), or ``"natural"`` (the given order: for matrices already ordered well,
            or to reproduce another tool's factors).
        scale: row scaling before pivoting: ``"max"`` (default: each row divided by its
            largest magnitude), ``"sum"`` (by its 1-norm) or ``"none"`` (for rows that are
            already well scaled; it saves one pass over the values).
        btf: permute to block triangular form first (default ``True``). Circuit matrices
            often split into many small blocks; turn it off only for matrices known to be
            irreducible, where it costs a little analysis time for nothing.
        check: measure the normwise backward error
            ``||b - A x||inf / (||A||inf ||x||inf + ||b||inf)`` of every solution (a sparse
            mat-vec per right-hand side), refine it, and re-factor with fresh pivots where a
            reused pivot order misses ``target``. Default ``True``. ``False`` returns the
            plain triangular solves, as KLU alone would (faster, and less accurate where a
            pivot order is reused).
        refine: at most this many steps of iterative refinement on the same factors while
            the backward error is above ``target`` (default 3; 0: measure only, then fall
            back to fresh pivots if needed). Refinement stops early once a step no longer
            halves the error.
        target: the backward error to reach (default ``1e-14``). A solution from a fresh
            factorization that still misses it after refinement is returned as is: the
            matrix is then too ill-conditioned (beyond about ``1e12``) for the guarantee.
        method: the sparse direct solver: ``"klu"`` (circuit-like matrices: little fill,
            pivot-order reuse), ``"umfpack"`` (fill-heavy matrices: multifrontal, BLAS-3;
            only in builds that have it, see :func:`klujax.methods`), or ``"auto"``
            (default): chosen per sparsity pattern from KLU's symbolic analysis (estimated
            flops per factor entry), never from the values, so a pattern keeps its backend.
            ``tol`` and ``btf`` apply to KLU only; UMFPACK picks its strategy, ordering
            (``"amd"`` and ``"colamd"`` alike: AMD, COLAMD or nested dissection) and
            pivot tolerance per pattern (docs: "Solvers"). The accuracy check is the
            same for both.
            See the "Solvers" docs page for the rule and its calibration.
    """

    tol: float = 0.001
    ordering: Literal["amd", "colamd", "natural"] = "amd"
    scale: Literal["max", "sum", "none"] = "max"
    btf: bool = True
    check: bool = True
    refine: int = 3
    target: float = 1e-14
    method: Literal["auto", "klu", "umfpack"] = "auto"

    def __post_init__(self) -> None:
        def bad(field: str, want: str) -> ValueError:
            return ValueError(f"KLUOptions: {field} must be {want}, got {getattr(self, field)!r}")

        if not isinstance(self.tol, (int, float)) or not 0 < self.tol <= 1:
            raise bad("tol", "a float in (0, 1]")
        if self.ordering not in _ORDERINGS:
            raise bad("ordering", f"one of {sorted(_ORDERINGS)}")
        if self.scale not in _SCALES:
            raise bad("scale", f"one of {sorted(_SCALES)}")
        if self.method not in _METHODS:
            raise bad("method", f"one of {sorted(_METHODS)}")
        for flag in ("btf", "check"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise bad(flag, "a bool")
        if (
            isinstance(self.refine, bool)
            or not isinstance(self.refine, (int, np.integer))
            or not 0 <= self.refine <= 100
        ):
            raise bad("refine", "an int in [0, 100]")
        if not isinstance(self.target, (int, float)) or not (
            self.target >= 0 and math.isfinite(self.target)
        ):
            raise bad("target", "a finite float >= 0")

    def as_attribute(self) -> np.ndarray:
        """The FFI attribute: ``[tol, ordering, scale, btf, check, refine, target, method]``
        (the order ``src/options.hpp`` decodes)."""
        return np.array(
            [
                self.tol,
                _ORDERINGS[self.ordering],
                _SCALES[self.scale],
                self.btf,
                self.check,
                self.refine,
                self.target,
                _METHODS[self.method],
            ],
            dtype=np.float64,
        )

    @classmethod
    def from_attribute(cls, a: np.ndarray) -> KLUOptions:
        """The inverse of ``as_attribute`` (used to re-lower a partitioned call). The
        7-field form of klujax 0.6.0 (no method) means KLU, as it did then."""
        a = np.asarray(a, np.float64).reshape(-1)
        if a.size == 1:  # a splat prints as one value
            a = np.broadcast_to(a, (8,))
        method = _METHOD_NAMES[int(a[7])] if a.size >= 8 else "klu"
        orderings = {v: k for k, v in _ORDERINGS.items()}
        scales = {v: k for k, v in _SCALES.items()}
        return cls(
            tol=float(a[0]),
            ordering=orderings[int(a[1])],  # type: ignore[arg-type]
            scale=scales[int(a[2])],  # type: ignore[arg-type]
            btf=bool(a[3]),
            check=bool(a[4]),
            refine=int(a[5]),
            target=float(a[6]),
            method=method,  # type: ignore[arg-type]
        )


_METHOD_NAMES = {v: k for k, v in _METHODS.items()}
DEFAULT_OPTIONS = KLUOptions()


def as_options(fn: str, options: KLUOptions | None) -> KLUOptions:
    """``options`` checked, with ``None`` meaning the defaults."""
    if options is None:
        return DEFAULT_OPTIONS
    if not isinstance(options, KLUOptions):
        raise TypeError(f"{fn}: options must be a klujax.KLUOptions, got {type(options).__name__}")
    if options.method == "umfpack" and "umfpack" not in _built_methods():
        raise ValueError(
            f"{fn}: options.method='umfpack' is not available: this klujax was built without "
            "UMFPACK (klujax.methods() == ('klu',); the binary wheels leave it out, see the "
            "Solvers docs page). Use method='klu' or 'auto', or build klujax from source "
            "where SuiteSparse UMFPACK is installed."
        )
    return options


@functools.cache
def _built_methods() -> tuple[str, ...]:
    from . import _klujax

    return tuple(_klujax.methods())
