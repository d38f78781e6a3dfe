"""The global batch of the multi-process test (the same in every process)."""

from __future__ import annotations

import numpy as np

from helpers import make_system, random_array

AXIS = "batch"
N, L = 7, 8


def system() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    Ai, Aj, Ax = make_system(N, n_lhs=L, seed=11)
    return Ai, Aj, Ax, random_array((L, N), seed=12)
