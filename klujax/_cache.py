"""Controls for the native cache of pattern analyses and factorizations, and what the
native build has."""

from __future__ import annotations

import os

from . import _klujax


def cache_info() -> dict[str, int]:
    """Counts and bytes of the native cache.

    Keys: ``patterns`` (analysed sparsity patterns), ``numeric_sets`` (kept
    factorizations, one per batched ``Ax`` block), ``spares`` (numeric objects kept for
    refactoring), ``bytes``, ``limit_bytes``, hit/miss counters, and the process-wide
    counters of the accuracy check: ``refine_steps`` (iterative refinement steps taken),
    ``refactor_fallbacks`` (reused pivot orders that missed the backward-error target
    and were replaced by a fresh factorization) and ``tightenings`` (UMFPACK
    factorizations with loose pivoting replaced by strict ones: an answer missed the
    target, needed refinement in 16 calls, or were singular). ``plain_factors``: UMFPACK factorizations
    copied into klujax's own arrays after 8 solved columns, for faster repeated solves
    (docs/solvers.md). ``recycled_bytes``: large work blocks
    that SuiteSparse freed and klujax keeps for the next factorization (at most
    ``KLUJAX_RECYCLE_MB``, default 64 MiB; 0 turns recycling off; see
    docs/performance.md).
    """
    info = dict(_klujax.cache_info())
    info["recycled_bytes"] = int(_klujax.recycle_info()["bytes"])
    return info


def clear_cache() -> None:
    """Free every cached analysis and factorization (handles of the split API are kept),
    and the recycled work blocks."""
    _klujax.clear_cache()


def set_cache_limit(megabytes: float) -> None:
    """Bound the native cache (default 256 MiB, or ``KLUJAX_CACHE_MB``); 0 disables it."""
    if megabytes < 0:
        raise ValueError(f"set_cache_limit: megabytes must be >= 0, got {megabytes}")
    _klujax.set_cache_limit(int(megabytes * 2**20))


def methods() -> tuple[str, ...]:
    """The solver backends of this build, for ``KLUOptions(method=...)``.

    ``"klu"`` always; ``"umfpack"`` when klujax was built with UMFPACK (source builds
    where SuiteSparse UMFPACK is found; not the binary wheels, which stay
    LGPL-2.1-or-later). ``"auto"`` picks among these.
    """
    return tuple(_klujax.methods())


def blas_library() -> str:
    """Path of the BLAS library UMFPACK computes with in this process ("" if none is
    loaded): its speed on fill-heavy matrices depends on it (an optimized BLAS such as
    OpenBLAS is 2-3x faster than the reference BLAS)."""
    path = str(_klujax.blas_library())
    return os.path.realpath(path) if path else ""
