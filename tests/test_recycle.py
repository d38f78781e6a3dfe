"""Recycled SuiteSparse work blocks (src/recycle.cpp): klujax keeps the large blocks a
factorization frees and hands them to the next one. That may change speed only: the
answers must be bit for bit those of a process that does not recycle, the kept bytes
must stay under the limit, and ``clear_cache`` must free them."""

from __future__ import annotations

import sys

import pytest
from helpers import run_python

import klujax
from klujax import _klujax

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="recycling needs glibc's malloc_usable_size")

# Fresh values every call (a factorization each), then the same values again (kept
# factors), for KLU and, where built, UMFPACK; f64 and c128; a batch of 4 members.
SEQUENCE = """
import hashlib, json
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
import klujax
from klujax import _klujax

n, per_row = 500, 5
rng = np.random.default_rng(3)
Ai = np.concatenate([np.repeat(np.arange(n), per_row), np.arange(n)]).astype(np.int32)
Aj = np.concatenate([rng.integers(0, n, n * per_row), np.arange(n)]).astype(np.int32)
digest, worst = hashlib.sha256(), 0.0
for method in klujax.methods():
    o = klujax.KLUOptions(method=method)
    for dtype in (np.float64, np.complex128):
        for call in range(6):
            ax = rng.standard_normal((4, len(Ai)))
            ax[:, -n:] += 10.0
            b = rng.standard_normal((4, n))
            if dtype is np.complex128:
                ax = ax + 1j * rng.standard_normal(ax.shape)
                b = b + 1j
            for again in range(2):  # new values, then the same values (kept factors)
                x = np.asarray(klujax.solve(Ai, Aj, ax.astype(dtype), b.astype(dtype), options=o))
                digest.update(x.tobytes())
                for m in range(0, 4, 3):  # the first and last members against dense
                    a = np.zeros((n, n), dtype)
                    np.add.at(a, (Ai, Aj), ax[m])
                    r = np.abs(a @ x[m] - b[m]).max()
                    worst = max(worst, r / (np.abs(a).sum(1).max() * np.abs(x[m]).max()))
info = _klujax.recycle_info()
klujax.clear_cache()
after = _klujax.recycle_info()
print(json.dumps({"digest": digest.hexdigest(), "worst": worst, "info": info,
                  "after": after, "methods": list(klujax.methods())}))
"""


def test_recycling_changes_no_bit_of_any_answer():
    on = run_python(SEQUENCE, KLUJAX_NUM_THREADS="1", KLUJAX_RECYCLE_MB=None)
    off = run_python(SEQUENCE, KLUJAX_NUM_THREADS="1", KLUJAX_RECYCLE_MB="0")
    assert on["info"]["installed"] and not off["info"]["installed"]
    assert on["digest"] == off["digest"]
    assert on["worst"] < 1e-12, on["worst"]
    if "umfpack" in on["methods"]:  # UMFPACK's numeric memory comes back every call
        assert on["info"]["hits"] >= 20, on["info"]
    assert on["info"]["bytes"] <= on["info"]["limit_bytes"] == 64 << 20
    assert on["after"]["bytes"] == 0 and on["after"]["blocks"] == 0, on["after"]
    assert off["info"]["hits"] == 0 and off["info"]["bytes"] == 0


def test_recycling_stays_under_a_small_limit():
    small = run_python(SEQUENCE, KLUJAX_RECYCLE_MB="0.5")
    info = small["info"]
    assert info["installed"] and info["limit_bytes"] == 1 << 19
    assert info["bytes"] <= info["limit_bytes"] and info["blocks"] <= 16, info
    assert small["worst"] < 1e-12


def test_recycle_info_in_this_process():
    info = _klujax.recycle_info()
    assert info["bytes"] <= info["limit_bytes"] and info["blocks"] <= 16
    klujax.clear_cache()
    assert _klujax.recycle_info()["bytes"] == 0
    assert klujax.cache_info()["recycled_bytes"] == 0


@pytest.mark.parametrize("value", ["abc", "-5", ""])
def test_recycle_limit_that_is_not_a_size_keeps_the_default(value):
    info = run_python("""
        import json
        import klujax
        from klujax import _klujax
        print(json.dumps(_klujax.recycle_info()))
        """, KLUJAX_RECYCLE_MB=value)
    assert info["installed"] and info["limit_bytes"] == 64 << 20
