"""klujax: sparse linear solves in JAX with SuiteSparse KLU through XLA FFI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

import jax.numpy as _jnp
import numpy as _np

from ._api import coalesce as coalesce
from ._api import dot as dot
from ._api import solve as solve
from ._cache import blas_library as blas_library
from ._cache import cache_info as cache_info
from ._cache import clear_cache as clear_cache
from ._cache import methods as methods
from ._cache import set_cache_limit as set_cache_limit
from ._compat import KLUEffect as KLUEffect
from ._diagnostics import (
    KLUFactors as KLUFactors,
)
from ._diagnostics import (
    condest as condest,
)
from ._diagnostics import (
    lu as lu,
)
from ._diagnostics import (
    rcond as rcond,
)
from ._diagnostics import (
    slogdet as slogdet,
)
from ._export import export_safety_checks as export_safety_checks
from ._handles import KLUHandleManager as KLUHandleManager
from ._options import KLUOptions as KLUOptions
from ._split import (
    analyze as analyze,
)
from ._split import (
    factor as factor,
)
from ._split import (
    free_numeric as free_numeric,
)
from ._split import (
    free_symbolic as free_symbolic,
)
from ._split import (
    refactor as refactor,
)
from ._split import (
    refactor_and_solve as refactor_and_solve,
)
from ._split import (
    solve_with_numeric as solve_with_numeric,
)
from ._split import (
    solve_with_symbol as solve_with_symbol,
)
from ._split import (
    tsolve_with_numeric as tsolve_with_numeric,
)
from ._split import (
    tsolve_with_symbol as tsolve_with_symbol,
)

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
    "blas_library",
    "cache_info",
    "clear_cache",
    "coalesce",
    "condest",
    "dot",
    "export_safety_checks",
    "factor",
    "free_numeric",
    "free_symbolic",
    "lu",
    "methods",
    "rcond",
    "refactor",
    "refactor_and_solve",
    "set_cache_limit",
    "slogdet",
    "solve",
    "solve_with_numeric",
    "solve_with_symbol",
    "tsolve_with_numeric",
    "tsolve_with_symbol",
]
