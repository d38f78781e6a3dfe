"""Global configuration: importing klujax changes nothing; x64-off semantics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import klujax
from helpers import (assert_close, dense, make_system, random_array, reference_dot,
                     reference_solve, solve_jnp)

N = 6


def _run(code: str, **env_overrides: str | None) -> dict:
    env = dict(os.environ)
    for key in ("JAX_ENABLE_X64", "JAX_PLATFORMS", "JAX_PLATFORM_NAME"):
        env.pop(key, None)
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


_PROBE = """
    import json, jax
    before = dict(x64=bool(jax.config.jax_enable_x64), platforms=jax.config.jax_platforms)
    {import_line}
    after = dict(x64=bool(jax.config.jax_enable_x64), platforms=jax.config.jax_platforms)
    print(json.dumps(dict(before=before, after=after, backend=jax.default_backend(),
                          devices=[d.platform for d in jax.devices()])))
"""


@pytest.mark.parametrize("platforms", [None, "cpu"])
def test_import_leaves_config_alone(platforms):
    env = {} if platforms is None else {"JAX_PLATFORMS": platforms}
    without = _run(_PROBE.format(import_line="pass"), **env)
    with_kj = _run(_PROBE.format(import_line="import klujax"), **env)
    assert with_kj["before"] == with_kj["after"]
    assert with_kj["after"]["x64"] is False
    assert with_kj["after"]["platforms"] == without["after"]["platforms"]
    assert with_kj["backend"] == without["backend"]
    assert with_kj["devices"] == without["devices"]


def test_import_then_solve_x64_off_in_fresh_process():
    out = _run("""
        import json, numpy as np, jax, klujax
        Ai = np.array([0, 1, 2, 0]); Aj = np.array([0, 1, 2, 2])
        Ax = np.array([2.0, 4.0, 5.0, 1.0]); b = np.array([1.0, 2.0, 10.0])
        x = klujax.solve(Ai, Aj, Ax, b)
        print(json.dumps(dict(dtype=str(x.dtype), x=np.asarray(x).tolist(),
                              x64=bool(jax.config.jax_enable_x64))))
    """)
    assert out["x64"] is False
    assert out["dtype"] == "float32"
    np.testing.assert_allclose(out["x"], [-0.5, 0.5, 2.0], rtol=1e-6)


def test_enable_x64_after_import_in_fresh_process():
    out = _run("""
        import json, numpy as np, jax, klujax
        jax.config.update("jax_enable_x64", True)
        Ai = np.array([0, 1]); Aj = np.array([0, 1])
        x = klujax.solve(Ai, Aj, np.array([3.0, 7.0]), np.array([1.0, 1.0]))
        print(json.dumps(dict(dtype=str(x.dtype), x=np.asarray(x).tolist())))
    """)
    assert out["dtype"] == "float64"
    assert out["x"] == [1 / 3, 1 / 7]


def test_fixture_enables_x64():
    assert jax.config.jax_enable_x64
    assert jax.config.jax_numpy_rank_promotion == "raise"


@pytest.mark.x64_off
def test_fixture_disables_x64():
    assert not jax.config.jax_enable_x64
    assert jnp.zeros(1).dtype == np.float32


# --------------------------------------------------------------------- x64 off


@pytest.mark.x64_off
@pytest.mark.parametrize("dtype, out_dtype", [
    (np.float32, np.float32), (np.complex64, np.complex64),
    (np.float64, np.float32), (np.complex128, np.complex64), (np.int32, np.float32)])
@pytest.mark.parametrize("kind", ["numpy", "jax"])
def test_x64_off_dtypes_and_accuracy(dtype, out_dtype, kind):
    Ai, Aj, Ax = make_system(N, n_lhs=2, dtype=dtype, seed=1, duplicates=3)
    b = random_array((2, N, 3), dtype, seed=2)
    ref = reference_solve(Ai, Aj, Ax, b)
    if kind == "jax":
        Ax, b = jnp.asarray(Ax), jnp.asarray(b)
    x = klujax.solve(Ai, Aj, Ax, b)
    assert_close(x, ref, dtype=out_dtype, rtol=1e-5, atol=1e-5)


@pytest.mark.x64_off
def test_x64_off_computed_in_double():
    """float32 in, float32 out, but computed in double: a Hilbert matrix (condition
    ~5e5) is solved to float32 rounding, which a float32 LU (error ~cond * 6e-8) is not."""
    n = 5
    Ai, Aj = (a.ravel() for a in np.indices((n, n)))
    Ax = (1.0 / (Ai + Aj + 1)).astype(np.float32)
    b = np.ones(n, np.float32)
    x = np.asarray(klujax.solve(Ai, Aj, Ax, b))
    assert x.dtype == np.float32
    ref = reference_solve(Ai, Aj, Ax.astype(np.float64), b.astype(np.float64))
    assert np.linalg.cond(dense(Ai, Aj, Ax.astype(np.float64), n)) > 1e5
    np.testing.assert_allclose(x, ref, rtol=1e-6)


@pytest.mark.x64_off
@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=["f32", "c64"])
def test_x64_off_dot(dtype):
    Ai, Aj, Ax = make_system(N, dtype=dtype, seed=3, duplicates=2)
    x = random_array((N,), dtype, seed=4)
    y = klujax.dot(Ai, Aj, Ax, x)
    assert_close(y, reference_dot(Ai, Aj, Ax, x), dtype=dtype, rtol=1e-5, atol=1e-5)


@pytest.mark.x64_off
@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=["f32", "c64"])
def test_x64_off_grad(dtype):
    Ai, Aj, Ax = make_system(N, n_lhs=2, dtype=dtype, seed=5)
    b = random_array((2, N), dtype, seed=6)

    def loss(fn):
        return lambda Ax, b: jnp.sum(jnp.abs(fn(Ai, Aj, Ax, b)) ** 2)

    got = jax.grad(loss(klujax.solve), argnums=(0, 1))(jnp.asarray(Ax), jnp.asarray(b))
    assert got[0].dtype == dtype and got[1].dtype == dtype
    # reference in double precision (numpy inputs -> enable x64 temporarily)
    with _x64_ctx():
        want = jax.jit(jax.grad(loss(solve_jnp), argnums=(0, 1)))(
            jnp.asarray(Ax.astype(np.complex128 if np.iscomplexobj(Ax) else np.float64)),
            jnp.asarray(b.astype(np.complex128 if np.iscomplexobj(b) else np.float64)))
        want = [np.asarray(w) for w in want]
    assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)


@pytest.mark.x64_off
def test_x64_off_jit_vmap_jacfwd():
    Ai, Aj, Ax = make_system(N, n_lhs=3, dtype=np.float32, seed=7)
    b = random_array((3, N), np.float32, seed=8)
    f = jax.jit(jax.vmap(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b)))
    assert_close(f(Ax, b), reference_solve(Ai, Aj, Ax, b), dtype=np.float32, rtol=1e-5,
                 atol=1e-5)
    jac = jax.jacfwd(lambda b: klujax.solve(Ai, Aj, Ax[0], b))(jnp.asarray(b[0]))
    assert jac.dtype == np.float32
    assert_close(jac, np.linalg.inv(dense(Ai, Aj, Ax[0], N)), rtol=1e-5, atol=1e-5)


def _x64_ctx():
    from klujax._compat import enable_x64

    return enable_x64(True)


def test_klujax_public_api():
    for name in ("solve", "dot", "coalesce"):
        assert callable(getattr(klujax, name))
    assert isinstance(klujax.__version__, str)
