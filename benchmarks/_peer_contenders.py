"""The contenders of the peer table (``peers.py``), loaded by ``_worker.py``.

Every contender answers the same four paths, each a ``jax.jit``-compiled function of the
library's *public* API (nothing of a peer is copied here):

* ``solve_new``: one solve, ``Ax`` never seen before on every call (a value-keyed cache
  of factorizations cannot help): call ``i`` takes matrix ``i % 4`` of the system's value
  family, scaled by a new factor (the same for ``grad_Ax``);
* ``solve_same``: one solve with the *same* ``Ax`` every call and a new ``b`` (what a
  value-keyed cache, ours' or sparsax's, is for);
* ``solve_b<B>``: ``B`` matrices of one pattern with different values (fresh on every
  call) and ``B`` right-hand sides in one call: ours' 2-D ``Ax``, ``jax.vmap`` of the
  peer's solve where it has a batching rule, else ``jax.lax.map`` (a sequential loop);
  times are per matrix;
* ``grad_Ax``: ``jax.grad`` of ``sum(solve(Ax, b))`` with respect to ``Ax`` (fresh ``Ax``
  every call). A library without a differentiation rule for its values gets the textbook
  adjoint as a ``jax.custom_vjp`` made here from its own solve and transposed solve
  (``x = A^-1 b``, ``lam = A^-T g``, ``dAx = -lam[i] x[j]``), labelled as such.

Checks (in the prepare phase and the last round): the relative residual of every
solution and its relative distance to ``numpy.linalg.solve`` of the dense matrix (for a
batch: the residual of every member, the dense comparison of the first two); for
``grad_Ax``, the relative distance to ``-lam[Ai] * x[Aj]`` with ``x`` and ``lam`` from
dense solves. The value returned is the largest of these. Above ``ALWAYS_DENSE_N`` only
the prepare phase's check is dense (the last round's: residuals; for ``grad_Ax``, that
the gradient is finite), to keep the last round short.

Libraries taking CSR get their values in CSR order (permuted outside the timed region, as
a user assembling CSR would have them); every check maps them back to the COO order.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import _worker
from _worker import Bench, Loaded, Unsupported, block

MAX_DENSE_N = 5000  # dense reference checks only up to this n (n^2 doubles: 200 MB)
ALWAYS_DENSE_N = 1500  # above this, only a case's first check (the prepare phase) is dense
N_DENSE_BATCH = 2  # batch members compared with the dense solution


def _dense(L: Loaded, ax: np.ndarray) -> np.ndarray:
    A = np.zeros((L.n, L.n), np.result_type(ax, np.float64))
    np.add.at(A, (L.Ai, L.Aj), ax)
    return A


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    d = float(np.linalg.norm(np.asarray(a) - ref))
    r = float(np.linalg.norm(ref))
    return d / r if r > 0 else d


def check_solution(L: Loaded, ax, x, b, dense: bool = True) -> float:
    """max(||A x - b|| / ||b||, ||x - x_dense|| / ||x_dense||) for one system, COO values
    (the residual alone when not ``dense``)."""
    ax, x, b = np.asarray(ax), np.asarray(x), np.asarray(b)
    e = L.resid(ax, x, b)
    if dense and L.n <= MAX_DENSE_N:
        e = max(e, _rel(x, np.linalg.solve(_dense(L, ax), b)))
    return e


def check_grad(L: Loaded, ax, g, b, dense: bool = True) -> float:
    """||g - g_dense|| / ||g_dense|| for d sum(A^-1 b) / dAx, COO values (without
    ``dense``: only that g is finite)."""
    ax = np.asarray(ax)
    if not dense or L.n > MAX_DENSE_N:
        return 0.0 if np.all(np.isfinite(np.asarray(g))) else float("nan")
    A = _dense(L, ax)
    x = np.linalg.solve(A, np.asarray(b))
    lam = np.linalg.solve(A.T, np.ones(L.n, A.dtype))
    return _rel(g, -lam[L.Ai] * x[L.Aj])


def first_dense(L: Loaded, check):
    """``check(args, out, dense)`` -> ``(args, out) -> float``, dense on every call for small
    systems, else on the first call only (the prepare phase; later checks are residuals)."""
    state = {"first": True}

    def chk(a, out):
        dense = state["first"] or L.n <= ALWAYS_DENSE_N
        state["first"] = False
        return check(a, out, dense)

    return chk


class PeerContender:
    """A library of the peer table. Subclasses set the class attributes and implement
    ``make_solve`` (and ``make_tsolve`` when ``native_grad`` is False)."""

    title = "?"
    csr = False  # the library takes CSR (row-major) arrays
    complex_ok = False  # it solves complex128 systems
    native_grad = True  # jax.grad works through its solve w.r.t. the values
    batching = "vmap"  # "native" (2-D Ax), "vmap" (jax.vmap of the single solve), "map" (lax.map)
    grad_note = ""
    batch_note = ""

    def __init__(self, name: str, method: str | None = None):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        self.name = name
        self.method = method
        self.jax, self.jnp = jax, jnp
        self.sys: dict[str, Any] = {}
        self.fresh = 0
        self.notes: dict[str, str] = {}
        self.setup()

    #-- to implement --#

    def setup(self) -> None:
        """Import the library (errors here are reported as the contender's failure)."""

    def lib_versions(self) -> dict[str, str]:
        return {}

    def make_solve(self, L) -> Any:
        """A traceable ``(ax, b) -> x`` for system L (values in the library's order)."""
        raise NotImplementedError

    def make_tsolve(self, L) -> Any:
        """A traceable ``(ax, b) -> x`` solving ``A^T x = b`` (for the harness adjoint)."""
        raise Unsupported(f"{self.title} has no transposed solve")

    def make_batched(self, L, solve) -> Any:
        jax = self.jax
        if self.batching == "map":
            return lambda axb, bb: jax.lax.map(lambda a: solve(a[0], a[1]), (axb, bb))
        return jax.vmap(solve)

    #-- common --#

    def versions(self) -> dict[str, str]:
        import jaxlib

        v = {"jax": self.jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
             "python": sys.version.split()[0], **self.lib_versions()}
        v.update(self.notes)
        return v

    def load(self, sid: str, path: str) -> dict:
        L = Loaded(path)
        jnp = self.jnp
        if self.csr:
            # COO is column-major (CSC order); the row-major order of the same entries is CSR
            perm = np.lexsort((L.Aj, L.Ai))
            L.perm = perm
            L.rows, L.cols = L.Ai[perm], L.Aj[perm]
            L.indptr = np.concatenate([[0], np.cumsum(np.bincount(L.Ai, minlength=L.n))]).astype(np.int32)
            L.indices = L.cols.astype(np.int32)
            L.Axl = np.ascontiguousarray(L.Ax[:, perm])
        else:
            L.perm = None
            L.rows, L.cols = L.Ai, L.Aj
            L.Axl = L.Ax
        L.dAxl = jnp.asarray(L.Axl)
        L.db = jnp.asarray(L.b)
        K = min(_worker.N_CYCLE, L.batch)
        L.ax1 = [block(jnp.asarray(L.Axl[m])) for m in range(K)]
        L.b1 = [block(jnp.asarray(L.b[m])) for m in range(K)]
        L.fns = {}
        self.sys[sid] = L
        return {"n": L.n, "nnz": int(L.Ai.shape[0]), "batch": L.batch}

    def to_coo(self, L, vals) -> np.ndarray:
        """Values (or a gradient) in the library's order -> COO order."""
        vals = np.asarray(vals)
        if L.perm is None:
            return vals
        out = np.empty_like(vals)
        out[..., L.perm] = vals
        return out

    def _next(self) -> float:
        self.fresh += 1
        return 1.0 + 1e-7 * self.fresh

    def _adjoint(self, L, solve, tsolve):
        """The harness-made reverse rule for a library without one (see the module doc)."""
        jax = self.jax
        rows, cols = self.jnp.asarray(L.rows), self.jnp.asarray(L.cols)

        @jax.custom_vjp
        def f(ax, b):
            return solve(ax, b)

        def fwd(ax, b):
            x = solve(ax, b)
            return x, (ax, x)

        def bwd(res, g):
            ax, x = res
            lam = tsolve(ax, g)
            return -lam[rows] * x[cols], lam

        f.defvjp(fwd, bwd)
        return f

    def build(self, case: dict) -> Bench:
        L = self.sys[case["sys"]]
        jax = self.jax
        path = case["path"]
        if L.complex and not self.complex_ok:
            raise Unsupported(f"{self.title} solves float64 systems only")
        if "solve" not in L.fns:
            L.fns["solve"] = self.make_solve(L)
        solve = L.fns["solve"]
        K = len(L.ax1)

        if path in ("solve_new", "solve_same"):
            f = jax.jit(solve)
            same = path == "solve_same"

            def setup(i):
                s = self._next()
                if same:  # the same Ax object every call, a new b
                    return L.ax1[0], block(L.b1[i % K] * s)
                # one of K matrices of the family, scaled by a new factor: new values
                # every call, and no row hinges on one matrix's pivoting luck
                return block(L.ax1[i % K] * s), L.b1[i % K]

            return Bench(setup, lambda a: block(f(a[0], a[1])), first_dense(
                L, lambda a, x, d: check_solution(L, self.to_coo(L, a[0]), x, a[1], d)))

        if path.startswith("solve_b"):
            B = int(case["batch"])
            if B > L.batch:
                raise Unsupported(f"system has only {L.batch} members")
            fb = jax.jit(self.make_batched(L, solve))
            axb, bb = block(L.dAxl[:B]), block(L.db[:B])

            def setup_b(i):
                return block(axb * self._next()), bb

            def check_b(a, X, dense):
                ax, X, b = self.to_coo(L, a[0]), np.asarray(X), np.asarray(a[1])
                e = L.resid(ax, X, b)
                for m in range(min(N_DENSE_BATCH, B) if dense else 0):
                    e = max(e, check_solution(L, ax[m], X[m], b[m]))
                return e

            return Bench(setup_b, lambda a: block(fb(a[0], a[1])), first_dense(L, check_b), per=B)

        if path == "grad_Ax":
            if L.complex:
                raise Unsupported("gradients are benchmarked on real systems")
            fn = solve if self.native_grad else self._adjoint(L, solve, self.make_tsolve(L))
            g = jax.jit(jax.grad(lambda ax, b: fn(ax, b).sum()))
            return Bench(lambda i: (block(L.ax1[i % K] * self._next()), L.b1[i % K]),
                         lambda a: block(g(a[0], a[1])),
                         first_dense(L, lambda a, gr, d: check_grad(L, self.to_coo(L, a[0]), self.to_coo(L, gr),
                                                                    a[1], d)))

        raise Unsupported(f"unknown path {path}")


#== the contenders ==#

class Ours(PeerContender):
    """This repository's klujax: ``klujax.solve`` (2-D ``Ax`` for a batch)."""

    title = "ours"
    complex_ok = True
    batching = "native"

    def setup(self) -> None:
        import klujax

        self.k = klujax
        self.options = None
        m = self.method
        if m:
            try:
                self.options = klujax.KLUOptions(method=m)
                self.notes["method"] = m
            except TypeError:
                self.notes["method"] = (f"requested {m!r}, but this klujax's KLUOptions has no `method` "
                                        "field: klujax's default ran")

    def lib_versions(self) -> dict[str, str]:
        return {"klujax": getattr(self.k, "__version__", "?"), "klujax_file": self.k.__file__}

    def make_solve(self, L):
        k, Ai, Aj, o = self.k, self.jnp.asarray(L.Ai), self.jnp.asarray(L.Aj), self.options
        if o is None:
            return lambda ax, b: k.solve(Ai, Aj, ax, b)
        return lambda ax, b: k.solve(Ai, Aj, ax, b, options=o)

    def make_batched(self, L, solve):
        return solve  # klujax.solve takes Ax (B, nnz), b (B, n) directly


class Sparsax(PeerContender):
    """sparsax ``lu_solve`` (KLU) or ``umf_solve`` (UMFPACK): COO, float64; jax.vmap folds
    a batch into one native call; differentiable in Ax and b."""

    backend = "lu"

    def setup(self) -> None:
        import sparsax

        self.sx = sparsax
        self.fn = sparsax.lu_solve if self.backend == "lu" else sparsax.umf_solve

    def lib_versions(self) -> dict[str, str]:
        return {"sparsax": getattr(self.sx, "__version__", "?")}

    def make_solve(self, L):
        Ai, Aj, fn = self.jnp.asarray(L.Ai), self.jnp.asarray(L.Aj), self.fn
        return lambda ax, b: fn(Ai, Aj, ax, b)


class SparsaxKLU(Sparsax):
    title = "sparsax KLU"
    backend = "lu"


class SparsaxUMF(Sparsax):
    title = "sparsax UMFPACK"
    backend = "umf"


class UmfpackJax(PeerContender):
    """umfpack-jax: the PyPI wheel ships only the native module ``umfpack_jax_cpp`` (its
    Python wrapper lives in the vajax package); we register its public FFI handlers and
    call them with ``jax.ffi.ffi_call``: CSR, float64, one right-hand side, analysis cached
    in one global slot keyed by (n, nnz), a numeric factorization on every call. No
    batching rule (``lax.map``), no derivative w.r.t. the values (harness adjoint over its
    ``umfpack_solve_transpose_f64``)."""

    title = "umfpack-jax"
    csr = True
    native_grad = False
    batching = "map"

    def setup(self) -> None:
        import umfpack_jax_cpp as m

        jax = self.jax
        self.m = m
        for t in ("umfpack_solve_f64", "umfpack_solve_transpose_f64"):
            jax.ffi.register_ffi_target(t, getattr(m, t)(), platform="cpu")
        self.notes["grad"] = "harness custom_vjp over umfpack_solve_f64 / umfpack_solve_transpose_f64"
        self.notes["batch"] = "jax.lax.map (no batching rule)"

    def lib_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"umfpack-jax": version("umfpack-jax")}

    def _call(self, L, target):
        jax = self.jax
        ip, ix = self.jnp.asarray(L.indptr), self.jnp.asarray(L.indices)

        def f(ax, b):
            return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(b.shape, b.dtype))(ip, ix, ax, b)

        return f

    def make_solve(self, L):
        return self._call(L, "umfpack_solve_f64")

    def make_tsolve(self, L):
        return self._call(L, "umfpack_solve_transpose_f64")


class Pardiso(PeerContender):
    """pardiso-mkl-jax ``solve`` (oneMKL Pardiso, REAL_NONSYMMETRIC): CSR, float64; every
    call analyses, factors and solves (phase 13); its vmap rule analyses once per batch and
    factors each member; no derivative rule (harness adjoint over ``solve(transpose=True)``)."""

    title = "pardiso-mkl-jax"
    csr = True
    native_grad = False

    def setup(self) -> None:
        import pardiso_mkl_jax as pm

        self.pm = pm
        self.mt = pm.MatrixType.REAL_NONSYMMETRIC
        self.notes["grad"] = ("harness custom_vjp over solve / solve(transpose=True) (its own: 'The FFI call "
                              "to `pardiso_mkl_jax_solve_once` cannot be differentiated')")

    def lib_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"pardiso-mkl-jax": version("pardiso-mkl-jax"), "mkl": version("mkl")}

    def _call(self, L, transpose):
        pm, mt = self.pm, self.mt
        ip, ix = self.jnp.asarray(L.indptr), self.jnp.asarray(L.indices)
        return lambda ax, b: pm.solve(ip, ix, ax, b, matrix_type=mt, transpose=transpose)

    def make_solve(self, L):
        return self._call(L, False)

    def make_tsolve(self, L):
        return self._call(L, True)


CONTENDERS = {"ours-peer": Ours, "sparsax-klu": SparsaxKLU, "sparsax-umf": SparsaxUMF,
              "umfpack-jax": UmfpackJax, "pardiso": Pardiso}


def make(name: str, method: str | None) -> PeerContender:
    return CONTENDERS[name](name, method)
