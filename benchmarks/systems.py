"""Circuit-like sparse test systems for the klujax benchmarks.

Every generator returns a :class:`System`: a fixed sparsity pattern in COO form (unique
entries, sorted column-major so that it is also the CSC order) and a *batch* of value
sets with one right-hand side each:

* real systems: a parameter sweep. Member ``m`` scales the diagonal (the shunt
  conductances) by ``1 + 0.5 m / SWEEP``; member 0 is the nominal matrix.
* complex systems: a frequency sweep ``A(w_m) = G + i w_m C`` with ``C`` a diagonal of
  node capacitances and ``w_m = 10 ** (-2 + 4 m / (SWEEP - 1))``.

Member ``m`` does not depend on the batch size asked for (``SWEEP = 256`` points), so a
system generated with a small batch is a prefix of the same system with a larger one.

Kinds:

* ``ladder``: an RC ladder (tridiagonal) with a few bridging resistors between nodes 7
  apart every 10th node, so that ordering is not trivial.
* ``grid``: a 2D ``m x m`` resistor grid, 5-point Laplacian plus a diagonal shift (the
  shunt conductance), slightly non-symmetric (transposed solves differ). ``n`` is
  rounded to the nearest square ``m**2``.
* ``random``: random, diagonally dominant, 3-10 entries per column; 90 % of the
  off-diagonal entries are within 50 rows of the diagonal (circuits are mostly local),
  10 % anywhere.

Fill-heavy kinds (not circuit-like: their LU factors are much denser than the matrix,
which is where supernodal/multifrontal solvers such as UMFPACK overtake KLU):

* ``unsym``: random unsymmetric, 4 off-diagonal entries per row at uniformly random
  columns (5 stored entries per row with the diagonal), the diagonal strictly dominant
  (so the matrix is nonsingular); no locality at all, hence heavy fill.
* ``fe2d``: a 2D finite-element-like 9-point stencil (every node coupled to its 8
  neighbours of the ``m x m`` grid, bilinear-element pattern), slightly non-symmetric
  values plus a diagonal shift; ``n`` rounded to the nearest square.
* ``fe3d``: the 3D analogue, a 27-point stencil on an ``m x m x m`` grid (trilinear
  hexahedral elements); ``n`` rounded to the nearest cube.

The module has no dependency beyond NumPy, so both benchmark venvs can import it.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

KINDS = ("ladder", "grid", "random")  # the circuit-like kinds (run.py's default)
FILL_KINDS = ("unsym", "fe2d", "fe3d")  # fill-heavy kinds (peers.py)
SWEEP = 256


@dataclasses.dataclass
class System:
    kind: str
    n: int
    complex: bool
    Ai: np.ndarray  # (nnz,) int32 row indices, column-major order, unique
    Aj: np.ndarray  # (nnz,) int32 column indices
    Ax: np.ndarray  # (batch, nnz) float64 or complex128
    b: np.ndarray  # (batch, n) float64 or complex128

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.n}-{'c128' if self.complex else 'f64'}"

    @property
    def nnz(self) -> int:
        return int(self.Ai.shape[0])

    @property
    def batch(self) -> int:
        return int(self.Ax.shape[0])

    @property
    def Ap(self) -> np.ndarray:
        """CSC column pointers (Ai is already in CSC order)."""
        return np.concatenate([[0], np.cumsum(np.bincount(self.Aj, minlength=self.n))]).astype(np.int32)


def _finish(kind: str, n: int, rows, cols, vals, diag_g, cap, complex_: bool, batch: int,
            seed: int) -> System:
    """Assemble G (off-diagonals + diagonal conductances), sweep values, sort, dedupe."""
    rows = np.concatenate([np.asarray(rows, np.int64), np.arange(n)])
    cols = np.concatenate([np.asarray(cols, np.int64), np.arange(n)])
    is_diag = np.zeros(rows.shape[0], bool)
    is_diag[-n:] = True
    vals = np.concatenate([np.asarray(vals, np.float64), np.asarray(diag_g, np.float64)])
    # unique (row, col), column-major; duplicates add up
    key = cols * n + rows
    order = np.argsort(key, kind="stable")
    key, rows, cols, vals, is_diag = key[order], rows[order], cols[order], vals[order], is_diag[order]
    uniq, start, inv = np.unique(key, return_index=True, return_inverse=True)
    G = np.zeros(uniq.shape[0])
    np.add.at(G, inv, vals)
    Ai = rows[start].astype(np.int32)
    Aj = cols[start].astype(np.int32)
    diag_pos = np.flatnonzero(Ai == Aj)
    assert diag_pos.shape[0] == n

    m = np.arange(batch)
    if complex_:
        w = 10.0 ** (-2.0 + 4.0 * m / (SWEEP - 1))
        Ax = np.repeat(G[None, :].astype(np.complex128), batch, axis=0)
        Ax[:, diag_pos] += 1j * w[:, None] * np.asarray(cap)[None, Aj[diag_pos]]
    else:
        Ax = np.repeat(G[None, :], batch, axis=0)
        Ax[:, diag_pos] *= (1.0 + 0.5 * m / SWEEP)[:, None]
    rng = np.random.default_rng(seed + 1)
    b = rng.standard_normal((batch, n))  # row m depends on m only
    if complex_:
        b = b + 1j * np.random.default_rng(seed + 2).standard_normal((batch, n))
    return System(kind, n, complex_, Ai, Aj, Ax, b)


def rc_ladder(n: int, complex_: bool = False, batch: int = 1, seed: int = 0) -> System:
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 2.0, n - 1)  # series conductances i -- i+1
    i = np.arange(n - 1)
    rows, cols, vals = [i, i + 1], [i + 1, i], [-g, -g]
    diag = np.zeros(n)
    np.add.at(diag, i, g)
    np.add.at(diag, i + 1, g)
    # bridges every 10th node to node + 7
    k = np.arange(0, n - 7, 10)
    gb = rng.uniform(0.1, 0.5, k.shape[0])
    rows += [k, k + 7]
    cols += [k + 7, k]
    vals += [-gb, -gb]
    np.add.at(diag, k, gb)
    np.add.at(diag, k + 7, gb)
    diag += rng.uniform(1e-3, 1e-2, n)  # shunt to ground
    cap = rng.uniform(0.5, 1.5, n)
    return _finish("ladder", n, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                   diag, cap, complex_, batch, seed)


def grid2d(n: int, complex_: bool = False, batch: int = 1, seed: int = 0, shift: float = 0.1) -> System:
    m = max(2, int(round(np.sqrt(n))))
    n = m * m
    rng = np.random.default_rng(seed)
    idx = np.arange(n).reshape(m, m)
    rows, cols, vals = [], [], []
    for a, b_ in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        a, b_ = a.ravel(), b_.ravel()
        asym = rng.uniform(-0.1, 0.1, a.shape[0])
        rows += [a, b_]
        cols += [b_, a]
        vals += [-(1.0 + asym), -(1.0 - asym)]
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    diag = np.zeros(n)
    np.add.at(diag, rows, -vals)  # row sums of |off-diagonal| -> Laplacian
    diag += shift
    cap = rng.uniform(0.5, 1.5, n)
    return _finish("grid", n, rows, cols, vals, diag, cap, complex_, batch, seed)


def random_dd(n: int, complex_: bool = False, batch: int = 1, seed: int = 0,
              far: float = 0.1, window: int = 10, hubs: int = 16) -> System:
    rng = np.random.default_rng(seed)
    per_col = rng.integers(3, 11, n) - 1  # off-diagonal entries per column (diagonal adds 1)
    cols = np.repeat(np.arange(n), per_col)
    local = rng.random(cols.shape[0]) >= far
    off = rng.integers(1, window + 1, cols.shape[0]) * rng.choice([-1, 1], cols.shape[0])
    hub_nodes = rng.choice(n, size=min(hubs, n), replace=False)
    far_rows = hub_nodes[rng.integers(0, hub_nodes.shape[0], cols.shape[0])]
    rows = np.where(local, np.clip(cols + off, 0, n - 1), far_rows)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    vals = rng.standard_normal(rows.shape[0])
    # mirror the hub entries (a net couples both ways) so hubs are dense rows and columns
    hub = ~local[keep]
    rows, cols = np.concatenate([rows, cols[hub]]), np.concatenate([cols, rows[hub]])
    vals = np.concatenate([vals, rng.standard_normal(int(hub.sum()))])
    rsum = np.bincount(rows, np.abs(vals), minlength=n)
    csum = np.bincount(cols, np.abs(vals), minlength=n)
    diag = 1.0 + np.maximum(rsum, csum)  # strictly dominant by rows and by columns
    cap = rng.uniform(0.5, 1.5, n)
    return _finish("random", n, rows, cols, vals, diag, cap, complex_, batch, seed)


def random_unsym(n: int, complex_: bool = False, batch: int = 1, seed: int = 0, per_row: int = 4) -> System:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, n - 1, rows.shape[0])
    cols = cols + (cols >= rows)  # never the diagonal
    vals = rng.standard_normal(rows.shape[0])
    rsum = np.bincount(rows, np.abs(vals), minlength=n)
    csum = np.bincount(cols, np.abs(vals), minlength=n)
    diag = 1.0 + np.maximum(rsum, csum)  # strictly dominant by rows and by columns: nonsingular
    cap = rng.uniform(0.5, 1.5, n)
    return _finish("unsym", n, rows, cols, vals, diag, cap, complex_, batch, seed)


def _stencil(kind: str, shape: tuple[int, ...], complex_: bool, batch: int, seed: int,
             shift: float = 0.05) -> System:
    """Every node coupled to all its neighbours in the 3**d block around it (the pattern
    of multilinear finite elements); weights 1 for faces, 1/2 for edges, 1/4 for corners,
    +-10 % asymmetry, diagonal = sum of the couplings + shift."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    idx = np.arange(n).reshape(shape)
    rows, cols, vals = [], [], []
    for off in np.ndindex(*(3,) * len(shape)):
        d = np.asarray(off) - 1
        if not d.any() or tuple(d) < (0,) * len(shape):  # each pair once: the "positive" half
            continue
        src = tuple(slice(max(0, -k), s - max(0, k)) for k, s in zip(d, shape))
        dst = tuple(slice(max(0, k), s - max(0, -k) if k < 0 else s) for k, s in zip(d, shape))
        a, b_ = idx[src].ravel(), idx[dst].ravel()
        w = 0.5 ** (int(np.abs(d).sum()) - 1)
        asym = rng.uniform(-0.1, 0.1, a.shape[0])
        rows += [a, b_]
        cols += [b_, a]
        vals += [-w * (1.0 + asym), -w * (1.0 - asym)]
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    diag = np.bincount(rows, -vals, minlength=n) + shift
    cap = rng.uniform(0.5, 1.5, n)
    return _finish(kind, n, rows, cols, vals, diag, cap, complex_, batch, seed)


def fe2d(n: int, complex_: bool = False, batch: int = 1, seed: int = 0) -> System:
    m = max(2, int(round(np.sqrt(n))))
    return _stencil("fe2d", (m, m), complex_, batch, seed)


def fe3d(n: int, complex_: bool = False, batch: int = 1, seed: int = 0) -> System:
    m = max(2, int(round(n ** (1.0 / 3.0))))
    return _stencil("fe3d", (m, m, m), complex_, batch, seed)


GENERATORS = {"ladder": rc_ladder, "grid": grid2d, "random": random_dd,
              "unsym": random_unsym, "fe2d": fe2d, "fe3d": fe3d}


def make_system(kind: str, n: int, complex_: bool = False, batch: int = 1, seed: int = 0) -> System:
    if kind not in GENERATORS:
        raise ValueError(f"unknown system kind {kind!r}; expected one of {tuple(GENERATORS)}")
    return GENERATORS[kind](n, complex_=complex_, batch=batch, seed=seed)


#== files ==#

def write_npz(sys_: System, path: Path) -> None:
    """For the Python workers."""
    np.savez(path, Ai=sys_.Ai, Aj=sys_.Aj, Ax=sys_.Ax, b=sys_.b, n=sys_.n)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_raw(sys_: System, path: Path) -> None:
    """The binary format read by klu_raw.c (see its header comment)."""
    with open(path, "wb") as f:
        f.write(b"KLURAW1\0")
        f.write(struct.pack("<iiiq", sys_.n, int(sys_.complex), sys_.batch, sys_.nnz))
        f.write(sys_.Ap.astype("<i4").tobytes())
        f.write(sys_.Ai.astype("<i4").tobytes())
        dt = "<c16" if sys_.complex else "<f8"
        f.write(np.ascontiguousarray(sys_.Ax, dtype=dt).tobytes())
        f.write(np.ascontiguousarray(sys_.b, dtype=dt).tobytes())


def matvec(Ai: np.ndarray, Aj: np.ndarray, Ax: np.ndarray, x: np.ndarray, n: int,
           transpose: bool = False) -> np.ndarray:
    """``A x`` (or ``A^T x``) for one COO matrix; x may be (n,) or (n, k)."""
    r, c = (Aj, Ai) if transpose else (Ai, Aj)
    prod = Ax.reshape((-1,) + (1,) * (x.ndim - 1)) * x[c]
    out = np.zeros((n,) + x.shape[1:], np.result_type(Ax, x))
    np.add.at(out, r, prod)
    return out


def rel_residual(Ai, Aj, Ax, x, b, n: int, transpose: bool = False) -> float:
    """max over batch members of ||A x - b|| / ||b||; Ax (L, nnz), x and b (L, n)."""
    Ax, x, b = np.atleast_2d(Ax), np.atleast_2d(x), np.atleast_2d(b)
    worst = 0.0
    for m in range(x.shape[0]):
        a = Ax[m if Ax.shape[0] > 1 else 0]
        bm = b[m if b.shape[0] > 1 else 0]
        r = matvec(Ai, Aj, a, np.asarray(x[m]), n, transpose) - bm
        nb = np.linalg.norm(bm)
        e = float(np.linalg.norm(r) / (nb if nb > 0 else 1.0))
        if not e <= worst:  # NaN propagates
            worst = e
    return worst


if __name__ == "__main__":  # a quick look at the generated systems
    for kind, sizes in [(k, (100, 1000, 10000)) for k in KINDS] + [("unsym", (1000,)), ("fe2d", (3600,)),
                                                                     ("fe3d", (2744,))]:
        for n in sizes:
            s = make_system(kind, n, complex_=False, batch=2)
            print(f"{s.name:22s} nnz={s.nnz:7d} nnz/col={s.nnz / s.n:5.2f}")
