"""klujax: sparse linear solves in JAX with SuiteSparse KLU through XLA FFI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

import jax.numpy as _jnp
import numpy as _np

from ._api import coalesce as coalesce, dot as dot, solve as solve
from ._diagnostics import (
    KLUFactors as KLUFactors,
    condest as condest,
    lu as lu,
    rcond as rcond,
    slogdet as slogdet,
)
from ._handles import KLUHandleManager as KLUHandleManager
from ._options import KLUOptions as KLUOptions
from ._split import (
    analyze as analyze,
    factor as factor,
    free_numeric as free_numeric,
    free_symbolic as free_symbolic,
    refactor as refactor,
    refactor_and_solve as refactor_and_solve,
    solve_with_numeric as solve_with_numeric,
    solve_with_symbol as solve_with_symbol,
    tsolve_with_numeric as tsolve_with_numeric,
    tsolve_with_symbol as tsolve_with_symbol,
)
from ._cache import cache_info as cache_info, clear_cache as clear_cache, set_cache_limit as set_cache_limit
from ._compat import KLUEffect as KLUEffect
from ._export import export_safety_checks as export_safety_checks

try:
    __version__ = _version("klujax")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0+unknown"

#: dtypes for which klujax computes in complex arithmetic.
COMPLEX_DTYPES = (_np.complex64, _np.complex128, _jnp.complex64, _jnp.complex128)

__all__ = [
    "COMPLEX_DTYPES",
    "KLUEffect",
    "KLUFactors",
    "KLUHandleManager",
    "KLUOptions",
    "__version__",
    "analyze",
    "factor",
    "free_numeric",
    "free_symbolic",
    "refactor",
    "refactor_and_solve",
    "solve_with_numeric",
    "solve_with_symbol",
    "tsolve_with_numeric",
    "tsolve_with_symbol",
    "cache_info",
    "clear_cache",
    "coalesce",
    "condest",
    "dot",
    "export_safety_checks",
    "lu",
    "rcond",
    "slogdet",
    "set_cache_limit",
    "solve",
]
