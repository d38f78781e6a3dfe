"""lineax integration: a sparse linear operator and a KLU linear solver.

An optional part of klujax (``pip install "klujax[lineax]"``), imported explicitly:
``import klujax`` never imports lineax or equinox.

```python
import lineax as lx
import klujax.lineax as klx

op = klx.SparseOperator(Ai, Aj, Ax, n)   # or SparseOperator(A): BCOO, BCSR, scipy.sparse
x = lx.linear_solve(op, b, solver=klx.KLU()).value
```

* :class:`klujax.lineax.SparseOperator` is a ``lineax.AbstractLinearOperator`` holding a
  COO matrix. ``Ax`` is a differentiable leaf; ``Ai``/``Aj`` are integer leaves (never
  differentiated); ``n`` and the tags are static.
* :class:`klujax.lineax.KLU` is a ``lineax.AbstractLinearSolver`` for square nonsingular
  operators: a ``SparseOperator`` (also inside ``lineax.TaggedLinearOperator``), or any other
  square operator when the solver is given its sparsity ``pattern``, e.g. the
  ``FunctionLinearOperator``/``JacobianLinearOperator`` Jacobians that optimistix and
  diffrax build; the values at the pattern are then recovered from a few matrix-vector
  products with structurally orthogonal columns (a column colouring).

Design of ``init``/``compute``: ``KLU.init`` keeps the COO arrays as the solver state and
``compute`` solves through klujax's solve primitive with *retained* factorizations, the
mechanism klujax's own reverse mode uses: the first ``compute`` factors and keeps the
factorization in klujax's native cache, keyed by the bytes of ``Ax``, and every later
``compute`` with the same values (another right-hand side, lineax's tangent solve, the
transposed solve of reverse mode, the conjugate) finds it there and only runs the
triangular solves. ``klujax.cache_info()["numeric_hits"]`` counts those reuses. The
state holds no native handle, so nothing needs freeing, inside ``jit`` or out. The
cache is bounded (``klujax.set_cache_limit``) and keeps a couple of value sets per
pattern: when a factorization has been evicted, ``compute`` refactors (correct, slower).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

try:
    import equinox as eqx
    import lineax as lx
except ImportError as e:  # pragma: no cover  (exercised in a subprocess by the tests)
    raise ImportError("klujax.lineax needs lineax and equinox: pip install 'klujax[lineax]'") from e

import jax
import jax.numpy as jnp
import numpy as np

from ._api import dot
from ._formats import is_matrix, to_coo
from ._ops import prim
from ._options import KLUOptions, as_options
from ._shapes import as_index, canonical

__all__ = ["KLU", "SparseOperator"]


def _frozenset(tags: object) -> frozenset[object]:
    if isinstance(tags, Iterable) and not isinstance(tags, (str, bytes)):
        return frozenset(tags)
    return frozenset([tags])


def _float_values(Ax: Any) -> jax.Array:
    Ax = jnp.asarray(Ax)
    if not jnp.issubdtype(Ax.dtype, jnp.inexact):
        Ax = Ax.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return Ax


# == SparseOperator ==#


class SparseOperator(lx.AbstractLinearOperator):
    """A square sparse matrix in COO form as a ``lineax`` linear operator.

    ``mv`` is :func:`klujax.dot`, ``as_matrix`` the dense ``(n, n)`` matrix (duplicate
    entries add up, as everywhere in klujax), ``transpose`` swaps ``Ai`` and ``Aj``.
    Structure tags are unchecked claims, as in lineax: ``tags=lineax.symmetric_tag``
    makes ``lineax.is_symmetric`` true and ``transpose`` return the operator itself.
    Without tags every structure query answers ``False`` (except ``is_diagonal`` for a
    ``1 x 1`` operator, as for ``lineax.MatrixLinearOperator``).

    Batches of matrices over one pattern: build the operator inside ``jax.vmap``
    (``Ax`` batched, the indices shared).

    Attributes:
        Ai: ``(n_nz,)`` int32 row indices (an integer leaf: not differentiated).
        Aj: ``(n_nz,)`` int32 column indices.
        Ax: ``(n_nz,)`` values, the differentiable leaf.
        n: the matrix size (static).
        tags: lineax tags (static).
    """

    Ai: jax.Array
    Aj: jax.Array
    Ax: jax.Array
    n: int = eqx.field(static=True)
    tags: frozenset[object] = eqx.field(static=True)

    def __init__(
        self, Ai: Any, Aj: Any = None, Ax: Any = None, n: int | None = None, *, tags: object = ()
    ) -> None:
        """``SparseOperator(Ai, Aj, Ax, n)`` or ``SparseOperator(A)``.

        Args:
            Ai: ``(n_nz,)`` integer row indices, or a square sparse matrix ``A``:
                ``jax.experimental.sparse.BCOO``/``BCSR`` (2-D) or ``scipy.sparse``.
            Aj: ``(n_nz,)`` integer column indices.
            Ax: ``(n_nz,)`` values (integers are converted to floats).
            n: the number of rows and columns, a Python ``int``.
            tags: a lineax tag or a collection of them (e.g. ``lineax.symmetric_tag``).
        """
        fn = "klujax.lineax.SparseOperator"
        if is_matrix(Ai):
            if Aj is not None or Ax is not None or n is not None:
                raise TypeError(f"{fn}: pass either a sparse matrix A or (Ai, Aj, Ax, n), not both")
            Ai, Aj, Ax, n = to_coo(fn, Ai)
        elif Aj is None or Ax is None or n is None:
            missing = [k for k, v in (("Aj", Aj), ("Ax", Ax), ("n", n)) if v is None]
            raise TypeError(f"{fn}: missing argument {missing[0]}")
        if isinstance(n, jax.core.Tracer) or int(n) != n or n < 0:
            raise TypeError(f"{fn}: n must be a non-negative Python int, got {n!r}")
        Ai = as_index(fn, "Ai", Ai)
        Aj = as_index(fn, "Aj", Aj)
        Ax = _float_values(Ax)
        if Ax.ndim != 1:
            raise ValueError(
                f"{fn}: Ax must have shape (n_nz,), got {Ax.shape} (for a batch of "
                "matrices, build the operator inside jax.vmap)"
            )
        if Ai.shape != Ax.shape or Aj.shape != Ax.shape:
            raise ValueError(
                f"{fn}: Ai, Aj and Ax disagree on n_nz: {Ai.shape}, {Aj.shape}, {Ax.shape}"
            )
        self.Ai, self.Aj, self.Ax, self.n = Ai, Aj, Ax, int(n)
        self.tags = _frozenset(tags)

    def mv(self, vector: jax.Array) -> jax.Array:
        return dot(self.Ai, self.Aj, self.Ax, vector).astype(self.Ax.dtype)

    def as_matrix(self) -> jax.Array:
        return jnp.zeros((self.n, self.n), self.Ax.dtype).at[self.Ai, self.Aj].add(self.Ax)

    def transpose(self) -> SparseOperator:
        if lx.is_symmetric(self):
            return self
        return SparseOperator(self.Aj, self.Ai, self.Ax, self.n, tags=lx.transpose_tags(self.tags))

    def in_structure(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.n,), self.Ax.dtype)

    def out_structure(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.n,), self.Ax.dtype)


def _band(op: SparseOperator, offset: int) -> jax.Array:
    """The diagonal ``A[i, i + offset]`` (duplicates summed), length ``n - |offset|``."""
    size = max(op.n - abs(offset), 0)
    on = op.Aj - op.Ai == offset
    slot = jnp.where(on, jnp.minimum(op.Ai, op.Aj), size)  # `size` is out of bounds: dropped
    return jnp.zeros(size, op.Ax.dtype).at[slot].add(op.Ax, mode="drop")


def _real(op: SparseOperator) -> bool:
    return not jnp.issubdtype(op.Ax.dtype, jnp.complexfloating)


@lx.linearise.register(SparseOperator)
@lx.materialise.register(SparseOperator)
def _(op: SparseOperator) -> SparseOperator:
    return op  # already linear, and already stored (densifying would defeat the purpose)


@lx.diagonal.register(SparseOperator)
def _(op: SparseOperator) -> jax.Array:
    return _band(op, 0)


@lx.tridiagonal.register(SparseOperator)
def _(op: SparseOperator) -> tuple[jax.Array, jax.Array, jax.Array]:
    return _band(op, 0), _band(op, -1), _band(op, 1)


@lx.conj.register(SparseOperator)
def _(op: SparseOperator) -> SparseOperator:
    return SparseOperator(op.Ai, op.Aj, op.Ax.conj(), op.n, tags=op.tags)


@lx.is_symmetric.register(SparseOperator)
def _(op: SparseOperator) -> bool:
    if lx.symmetric_tag in op.tags or lx.diagonal_tag in op.tags:
        return True
    # semidefinite implies symmetric for real matrices only (Hermitian otherwise)
    semi = lx.positive_semidefinite_tag in op.tags or lx.negative_semidefinite_tag in op.tags
    return semi and _real(op)


@lx.is_diagonal.register(SparseOperator)
def _(op: SparseOperator) -> bool:
    return lx.diagonal_tag in op.tags or op.n == 1


@lx.is_tridiagonal.register(SparseOperator)
def _(op: SparseOperator) -> bool:
    return lx.tridiagonal_tag in op.tags or lx.diagonal_tag in op.tags


def _tag_query(tag: object) -> Any:
    def query(op: SparseOperator) -> bool:
        return tag in op.tags

    return query


for _query, _tag in (
    (lx.has_unit_diagonal, lx.unit_diagonal_tag),
    (lx.is_lower_triangular, lx.lower_triangular_tag),
    (lx.is_upper_triangular, lx.upper_triangular_tag),
    (lx.is_positive_semidefinite, lx.positive_semidefinite_tag),
    (lx.is_negative_semidefinite, lx.negative_semidefinite_tag),
):
    _query.register(SparseOperator)(_tag_query(_tag))


# == the sparsity pattern of a general operator ==#


def _colour_columns(Ai: np.ndarray, Aj: np.ndarray, n: int) -> np.ndarray:
    """Greedy colouring: columns that share a row get different colours."""
    by_row = np.argsort(Ai, kind="stable")
    row_ptr = np.searchsorted(Ai[by_row], np.arange(n + 1))
    cols_of_row = Aj[by_row]
    by_col = np.argsort(Aj, kind="stable")
    col_ptr = np.searchsorted(Aj[by_col], np.arange(n + 1))
    rows_of_col = Ai[by_col]
    colour = np.full(n, -1, np.int64)
    for j in range(n):
        rows = rows_of_col[col_ptr[j] : col_ptr[j + 1]]
        taken = {int(colour[k]) for i in rows for k in cols_of_row[row_ptr[i] : row_ptr[i + 1]]}
        c = 0
        while c in taken:
            c += 1
        colour[j] = c
    return colour


class _Pattern:
    """A concrete sparsity pattern and its column colouring (hashable: a static field)."""

    def __init__(self, fn: str, pattern: Any) -> None:
        if is_matrix(pattern):
            Ai, Aj, Ax, _ = to_coo(fn, pattern)
            if np.ndim(Ax) != 1:
                raise ValueError(f"{fn}: pattern must be one matrix, got a batch")
        elif isinstance(pattern, (tuple, list)) and len(pattern) == 2:
            Ai, Aj = pattern
        else:
            raise TypeError(
                f"{fn}: pattern must be (Ai, Aj) or a sparse matrix, got {type(pattern).__name__}"
            )
        if isinstance(Ai, jax.core.Tracer) or isinstance(Aj, jax.core.Tracer):
            raise TypeError(
                f"{fn}: pattern must be concrete (built outside jit): its column "
                "colouring is computed on the host"
            )
        Ai, Aj = np.asarray(Ai), np.asarray(Aj)
        for name, idx in (("Ai", Ai), ("Aj", Aj)):
            if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
                raise TypeError(
                    f"{fn}: pattern {name} must be a 1D integer array, got {idx.dtype}{idx.shape}"
                )
            if idx.size and idx.min() < 0:
                raise ValueError(f"{fn}: pattern {name} contains {idx.min()}")
        if Ai.shape != Aj.shape:
            raise ValueError(f"{fn}: pattern Ai and Aj differ in shape: {Ai.shape}, {Aj.shape}")
        # Duplicates would be counted twice (klujax sums them): keep each position once.
        ij = np.unique(np.stack([Ai, Aj], axis=1).astype(np.int32), axis=0).reshape(-1, 2)
        self.Ai, self.Aj = np.ascontiguousarray(ij[:, 0]), np.ascontiguousarray(ij[:, 1])
        self.size = int(max(self.Ai.max(initial=-1), self.Aj.max(initial=-1)) + 1)
        self.colour = _colour_columns(self.Ai, self.Aj, self.size)
        self.n_colours = int(self.colour.max(initial=-1) + 1)
        self._key = (self.Ai.tobytes(), self.Aj.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Pattern) and self._key == other._key

    def __repr__(self) -> str:
        return f"pattern(n_nz={self.Ai.size}, colours={self.n_colours})"

    def values(self, fn: str, operator: lx.AbstractLinearOperator, n: int) -> jax.Array:
        """``A[Ai, Aj]`` of ``operator`` from ``n_colours`` matrix-vector products."""
        if self.size > n:
            raise ValueError(
                f"{fn}: the pattern has an index {self.size - 1}, outside the {n} x {n} operator"
            )
        dtype = operator.in_structure().dtype
        seeds = np.zeros((self.n_colours, n))
        seeds[self.colour, np.arange(self.size)] = 1.0
        # Row c of Y is the sum of the columns of colour c; each stored entry is the only
        # one of its colour in its row.
        Y = jax.vmap(operator.mv)(jnp.asarray(seeds, dtype))
        return Y[self.colour[self.Aj], self.Ai]


# == KLU ==#


class _KLUState(eqx.Module):
    """The COO arrays of the operator and how to apply them: op(A) = conj?(A)^T?."""

    Ai: jax.Array
    Aj: jax.Array
    Ax: jax.Array
    transpose: bool = eqx.field(static=True)
    conjugate: bool = eqx.field(static=True)


@partial(jax.jit, static_argnames=("transpose", "options"))
def _retained_solve(
    Ai: jax.Array, Aj: jax.Array, Ax: jax.Array, b: jax.Array, transpose: bool, options: KLUOptions
) -> jax.Array:
    """``klujax.solve`` whose factorization stays in the native cache (keyed by ``Ax``)."""
    Ai, Aj, Ax, b3, layout = canonical("klujax.lineax.KLU", Ai, Aj, Ax, b)
    x = prim("solve", Ax.dtype).bind(
        Ai, Aj, Ax, b3, transpose=transpose, retain=True, options=options
    )
    return layout.restore(x)


def _square_vector_structure(fn: str, operator: lx.AbstractLinearOperator) -> int:
    ins, outs = operator.in_structure(), operator.out_structure()
    for name, s in (("input", ins), ("output", outs)):
        if not isinstance(s, jax.ShapeDtypeStruct) or len(s.shape) != 1:
            raise ValueError(
                f"{fn}: the operator's {name} structure must be one 1D array, got "
                f"{s} (ravel a pytree-valued problem first)"
            )
    if ins.shape != outs.shape:
        raise ValueError(
            f"{fn}: KLU solves square systems only, got an operator from "
            f"{ins.shape} to {outs.shape}"
        )
    return int(ins.shape[0])


class KLU(lx.AbstractLinearSolver):
    """Sparse LU (SuiteSparse KLU) as a ``lineax`` linear solver.

    For square nonsingular operators: ``lineax.linear_solve(op, b, solver=KLU())``.
    A singular matrix gives a non-finite solution, which lineax reports as
    ``RESULTS.singular`` (raising with ``throw=True``, its default).

    ``init`` keeps the operator's COO arrays as the state; ``compute``, and the states
    made by ``transpose`` and ``conj``, solve through klujax's solve primitive with
    retained factorizations: the first ``compute`` factors and keeps the factorization
    in klujax's native cache (keyed by the values ``Ax``), and later computes with the
    same values skip the factorization and only run triangular solves (a hit in
    ``klujax.cache_info()["numeric_hits"]``): several right-hand sides, the tangent
    solve of ``jax.jvp``, the transposed solve of ``jax.grad``, the conjugated state.
    ``A^T`` uses KLU's transposed solve and ``conj(A) x = b`` is solved as
    ``conj(A^-1 conj(b))``, both on the same factorization. The state holds no native
    handle, so it works inside ``jit``/``vmap`` with nothing to free. If the cache has
    evicted the factorization (``klujax.set_cache_limit``), ``compute`` refactors.

    Operators: a :class:`klujax.lineax.SparseOperator` (directly or inside
    ``lineax.TaggedLinearOperator``), or any square operator on a 1D array when
    ``pattern`` is given: then ``init`` recovers the values at the pattern from one
    matrix-vector product per colour of a greedy column colouring (columns that share
    no row are probed together; e.g. 3 products for a tridiagonal matrix). This is how
    the Jacobians built by ``optimistix.Newton`` or diffrax's implicit solvers
    (``FunctionLinearOperator``/``JacobianLinearOperator``) reach KLU.

    Args:
        pattern: ``(Ai, Aj)`` concrete integer arrays, or a sparse matrix (BCOO/BCSR/
            scipy.sparse) whose stored positions are the pattern. It must contain every
            structural nonzero of the operators solved (extra positions are harmless;
            a missing one gives wrong values silently). Include the diagonal for
            Jacobians of the form ``I - h J``. Not needed for a
            :class:`klujax.lineax.SparseOperator`.
        options: :class:`klujax.KLUOptions` for the factorization and the accuracy check.
    """

    pattern: _Pattern | None = eqx.field(static=True)
    options: KLUOptions = eqx.field(static=True)

    def __init__(self, pattern: Any = None, *, options: KLUOptions | None = None) -> None:
        self.pattern = None if pattern is None else _Pattern("klujax.lineax.KLU", pattern)
        self.options = as_options("klujax.lineax.KLU", options)

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]) -> _KLUState:
        del options
        fn = "klujax.lineax.KLU"
        n = _square_vector_structure(fn, operator)
        inner = operator
        while isinstance(inner, lx.TaggedLinearOperator):
            inner = inner.operator
        if isinstance(inner, SparseOperator):
            Ai, Aj, Ax = inner.Ai, inner.Aj, inner.Ax
        elif self.pattern is not None:
            Ai, Aj = jnp.asarray(self.pattern.Ai), jnp.asarray(self.pattern.Aj)
            Ax = self.pattern.values(fn, operator, n)
        else:
            raise TypeError(
                f"{fn}: got a {type(operator).__name__}; KLU solves a "
                "klujax.lineax.SparseOperator, or any square operator when given its "
                "sparsity pattern: KLU(pattern=(Ai, Aj))"
            )
        return _KLUState(Ai, Aj, Ax, transpose=False, conjugate=False)

    def compute(
        self, state: _KLUState, vector: jax.Array, options: dict[str, Any]
    ) -> tuple[jax.Array, Any, dict[str, Any]]:
        del options
        b = vector.conj() if state.conjugate else vector
        x = _retained_solve(
            state.Ai, state.Aj, state.Ax, b, transpose=state.transpose, options=self.options
        )
        if state.conjugate:
            x = x.conj()
        return x.astype(vector.dtype), lx.RESULTS.successful, {}

    def transpose(
        self, state: _KLUState, options: dict[str, Any]
    ) -> tuple[_KLUState, dict[str, Any]]:
        return (
            _KLUState(
                state.Ai,
                state.Aj,
                state.Ax,
                transpose=not state.transpose,
                conjugate=state.conjugate,
            ),
            options,
        )

    def conj(self, state: _KLUState, options: dict[str, Any]) -> tuple[_KLUState, dict[str, Any]]:
        return (
            _KLUState(
                state.Ai,
                state.Aj,
                state.Ax,
                transpose=state.transpose,
                conjugate=not state.conjugate,
            ),
            options,
        )

    def assume_full_rank(self) -> bool:  # lineax >= 0.1
        return True

    def allow_dependent_columns(self, operator: lx.AbstractLinearOperator) -> bool:  # lineax < 0.1
        return False

    def allow_dependent_rows(self, operator: lx.AbstractLinearOperator) -> bool:  # lineax < 0.1
        return False
