"""Interoperability with JAX's configuration and device placement.

* x64 switched inside one process with the ``jax.enable_x64(True/False)`` context manager
  (float32/complex64 in and out when off, computed in double; the shared native cache
  serves both precisions);
* inputs committed to a non-default CPU device (a subprocess with 2 host devices): the
  results are correct and stay on that device; ``with jax.default_device(...)``;
  ``NamedSharding``-sharded inputs; mixed devices give jax's clear error;
* the accelerator code path (``KLUJAX_FORCE_HOST_CALLBACK=1``: a host callback around the
  CPU kernel, as on a GPU backend) in a subprocess: solve under jit/vmap/grad/jvp, dot,
  the split API, singular -> NaN, and a run-time index error that raises (no crash).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense, make_dominant, pattern, run_python, uniform_values

import klujax
import klujax._compat

N = 7


def _system(n: int = N, *, seed: int = 0, batch: tuple[int, ...] = (), dtype=np.float64):
    rng = np.random.default_rng(seed)
    Ai, Aj, diag = pattern(n, rng, density=0.4, duplicates=1)
    Ax = make_dominant(uniform_values(rng, (*batch, len(Ai)), dtype), Ai, diag, n)
    return Ai.astype(np.int32), Aj.astype(np.int32), Ax


def _ref(Ai, Aj, Ax, b, n=N):
    """Dense reference: Ax (n_nz,) or (L, n_nz), b (n,) or (L, n)."""
    A = dense(Ai, Aj, Ax, n)
    b = np.asarray(b).astype(np.complex128)
    if A.ndim == 3:
        return np.linalg.solve(A, np.broadcast_to(b, (A.shape[0], n))[..., None])[..., 0]
    return np.linalg.solve(A, b)


def _close(x, expected, *, single: bool = False):
    x = np.asarray(x)
    expected = np.asarray(expected)
    if not np.iscomplexobj(x):
        expected = expected.real
    tol = 2e-6 if single else 1e-10
    scale = max(np.abs(expected).max(initial=0.0), 1.0)
    np.testing.assert_allclose(x, expected, rtol=tol, atol=tol * scale)


# ============================================================================ x64 switching


@pytest.mark.parametrize("dtype,out32", [(np.float32, np.float32), (np.float64, np.float32),
                                         (np.complex64, np.complex64),
                                         (np.complex128, np.complex64)])
def test_enable_x64_false_context_gives_single_precision(dtype, out32):
    assert jax.config.jax_enable_x64
    Ai, Aj, Ax = _system(seed=1, batch=(2,), dtype=dtype)
    b = uniform_values(np.random.default_rng(2), (2, N), np.float32)
    expected = _ref(Ai, Aj, Ax.astype(out32), b)  # what jax would narrow Ax to
    with klujax._compat.enable_x64(False):
        for fn in (klujax.solve, jax.jit(klujax.solve)):
            x = fn(Ai, Aj, Ax, b)
            assert x.dtype == out32, x.dtype
            _close(x, expected, single=True)
        y = klujax.dot(Ai, Aj, Ax, x)
        assert y.dtype == out32
    # and straight back to double precision in the same process
    x64 = klujax.solve(Ai, Aj, Ax, b)
    assert x64.dtype == (np.complex128 if np.iscomplexobj(Ax) else np.float64)
    _close(x64, _ref(Ai, Aj, Ax, b))


@pytest.mark.x64_off
def test_enable_x64_true_context_inside_x64_off():
    assert not jax.config.jax_enable_x64
    Ai, Aj, Ax = _system(seed=3)
    b = np.ones(N)
    with klujax._compat.enable_x64(True):
        x = klujax.solve(Ai, Aj, Ax, b)
        assert x.dtype == np.float64
        _close(x, _ref(Ai, Aj, Ax, b))
        g = jax.grad(lambda a: klujax.solve(Ai, Aj, a, b).sum())(Ax)
        assert g.dtype == np.float64
    x32 = klujax.solve(Ai, Aj, Ax.astype(np.float32), b.astype(np.float32))
    assert x32.dtype == np.float32
    _close(x32, _ref(Ai, Aj, Ax.astype(np.float32), b), single=True)


def test_interleaved_precisions_share_the_pattern_cache():
    """The same pattern (and even the same bit patterns of values) alternately in single
    and double precision: cached factorizations of one precision never serve the other."""
    Ai, Aj, Ax = _system(seed=4, batch=(3,))
    b = uniform_values(np.random.default_rng(5), (3, N), np.float64)
    f = jax.jit(jax.grad(lambda a, bb: jnp.sum(klujax.solve(Ai, Aj, a, bb)), argnums=(0, 1)))
    g64 = f(Ax, b)
    for k in range(4):
        scale = 1.0 + 0.25 * (k // 2)
        if k % 2:
            with klujax._compat.enable_x64(False):
                x = klujax.solve(Ai, Aj, (Ax * scale).astype(np.float32), b.astype(np.float32))
                assert x.dtype == np.float32
                _close(x, _ref(Ai, Aj, (Ax * scale).astype(np.float32), b.astype(np.float32)),
                       single=True)
                g32 = jax.grad(lambda a: jnp.sum(klujax.solve(Ai, Aj, a, b.astype(np.float32))))(
                    Ax.astype(np.float32))
                assert g32.dtype == np.float32
                np.testing.assert_allclose(np.asarray(g32), np.asarray(g64[0]), rtol=1e-4,
                                           atol=1e-6)
        else:
            x = klujax.solve(Ai, Aj, Ax * scale, b)
            assert x.dtype == np.float64
            _close(x, _ref(Ai, Aj, Ax * scale, b))
    g64_again = f(Ax, b)
    for a, e in zip(g64_again, g64):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_split_api_numeric_from_x64_on_used_with_x64_off():
    """BUG (minor): a numeric manager factored with x64 on (float64), used inside
    ``klujax._compat.enable_x64(False)`` with a float32 b, makes klujax request a float64 astype
    (jax warns it truncates to float32), then bind the f64 kernel to a float32 buffer:
    ``JaxRuntimeError: Failed to decode all FFI handler operands ... Wrong buffer dtype:
    expected F64 but got F32``. The raw handle array works (float32 result), so the
    manager should too, or refuse clearly (naming ``numeric``)."""
    Ai, Aj, Ax = _system(seed=6)
    b = np.ones(N)
    with klujax.analyze(Ai, Aj, N) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        x64 = klujax.solve_with_numeric(num, b, sym)
        _close(x64, _ref(Ai, Aj, Ax, b))
        with klujax._compat.enable_x64(False):
            raw = klujax.solve_with_numeric(num.handle, b.astype(np.float32), sym)
            assert raw.dtype == np.float32
            _close(raw, x64, single=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # jax: float64 not available
                try:
                    x32 = jax.block_until_ready(
                        klujax.solve_with_numeric(num, b.astype(np.float32), sym))
                except (TypeError, ValueError) as e:  # a clear refusal is acceptable
                    assert "numeric" in str(e), str(e)
                else:
                    assert x32.dtype == np.float32
                    _close(x32, x64, single=True)


def test_split_api_numeric_from_x64_off_used_with_x64_on():
    """A numeric object factored under x64 off (float32 values), then used with x64 on
    and a float64 b: like ``solve`` (float32 Ax, float64 b -> float64), the result must be
    float64 at double precision. BUG (minor): it comes back float32."""
    Ai, Aj, Ax = _system(seed=8)
    b = uniform_values(np.random.default_rng(9), (N,), np.float64)
    with klujax.analyze(Ai, Aj, N) as sym:
        with klujax._compat.enable_x64(False):
            num32 = klujax.factor(Ai, Aj, Ax.astype(np.float32), sym)
            x32 = klujax.solve_with_numeric(num32, b.astype(np.float32), sym)
            assert x32.dtype == np.float32
        with num32:
            x = klujax.solve_with_numeric(num32, b, sym)
            expected = _ref(Ai, Aj, Ax.astype(np.float32), b)
            _close(x, expected, single=True)
            solve_dtype = klujax.solve(Ai, Aj, Ax.astype(np.float32), b).dtype
            assert solve_dtype == np.float64
            assert x.dtype == solve_dtype, f"solve_with_numeric gave {x.dtype}, solve {solve_dtype}"
            _close(x, expected)


def test_default_device_context_single_device():
    Ai, Aj, Ax = _system(seed=7)
    b = np.ones(N)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        x = klujax.solve(Ai, Aj, Ax, b)
    assert x.devices() == {cpu}
    _close(x, _ref(Ai, Aj, Ax, b))


# ============================================================================ devices

_TWO_DEVICES = r"""
import json, warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="jax.*")
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import klujax
from helpers import dense, make_dominant, pattern, uniform_values
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

devs = jax.devices()
assert len(devs) == 2, devs
d1 = devs[1]
n = 8
rng = np.random.default_rng(0)
Ai, Aj, diag = pattern(n, rng, density=0.4, duplicates=1)
Ai, Aj = Ai.astype(np.int32), Aj.astype(np.int32)
Ax = make_dominant(uniform_values(rng, (2, len(Ai)), np.float64), Ai, diag, n)
b = uniform_values(rng, (2, n), np.float64)
A = dense(Ai, Aj, Ax, n).real
ref = np.linalg.solve(A, b[..., None])[..., 0]
checks = []

def check(name, x, expected, device=d1):
    x_np = np.asarray(x)
    np.testing.assert_allclose(x_np, expected, rtol=1e-10, atol=1e-10, err_msg=name)
    if device is not None:
        assert x.devices() == {device}, (name, x.devices())
    checks.append(name)

args = jax.device_put((Ai, Aj, Ax, b), d1)
check("solve", klujax.solve(*args), ref)
check("jit", jax.jit(klujax.solve)(*args), ref)
check("dot", klujax.dot(*args[:3], jnp.asarray(ref, device=d1)), b)
# only Ax/b committed: NumPy indices follow them
check("numpy indices", klujax.solve(Ai, Aj, args[2], args[3]), ref)
check("vmap", jax.vmap(klujax.solve, (None, None, 0, 0))(*args), ref)
lam = np.linalg.solve(np.transpose(A, (0, 2, 1)), np.ones((2, n, 1)))[..., 0]
g = jax.grad(lambda a, bb: klujax.solve(args[0], args[1], a, bb).sum(), argnums=(0, 1))(
    args[2], args[3])
check("grad b", g[1], lam)
check("grad Ax", g[0], -lam[:, Ai] * ref[:, Aj])

with klujax.analyze(*args[:2], n) as sym, klujax.factor(*args[:3], sym) as num:
    assert num.handle.devices() == {d1}, num.handle.devices()
    check("split solve_with_numeric", klujax.solve_with_numeric(num, args[3], sym), ref)
    check("split solve_with_symbol", klujax.solve_with_symbol(*args, sym), ref)
    klujax.refactor(*args[:2], jax.device_put(2 * Ax, d1), num, sym)
    check("split refactor", klujax.solve_with_numeric(num, args[3], sym), ref / 2)

with jax.default_device(d1):
    check("default_device solve", klujax.solve(Ai, Aj, Ax, b), ref)
    check("default_device jit", jax.jit(klujax.solve)(Ai, Aj, Ax, b), ref)
    with klujax.analyze(Ai, Aj, n) as sym, klujax.factor(Ai, Aj, Ax, sym) as num:
        check("default_device split", klujax.solve_with_numeric(num, b, sym), ref)

# inputs sharded over both devices (batch axis): correct, whatever the output sharding
mesh = Mesh(np.array(devs), ("x",))
sh = NamedSharding(mesh, P("x"))
Ax2 = np.stack([Ax[0], 2 * Ax[1]])
ref2 = np.stack([ref[0], ref[1] / 2])
check("sharded jit", jax.jit(klujax.solve)(Ai, Aj, jax.device_put(Ax2, sh),
                                           jax.device_put(b, sh)), ref2, device=None)
check("sharded eager", klujax.solve(Ai, Aj, jax.device_put(Ax2, sh), jax.device_put(b, sh)),
      ref2, device=None)

# arguments committed to different devices: jax's own clear error, then still fine
try:
    klujax.solve(Ai, Aj, jax.device_put(Ax, devs[1]), jax.device_put(b, devs[0]))
except ValueError as e:
    assert "device" in str(e), str(e)
    checks.append("mixed devices raise")
else:
    raise AssertionError("mixed committed devices did not raise")
check("after error", klujax.solve(*args), ref)
print(json.dumps({"checks": checks}))
"""


def test_non_default_cpu_device_and_sharding():
    out = run_python(_TWO_DEVICES, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                     JAX_PLATFORMS="cpu")
    assert len(out["checks"]) == 17, out


# ============================================================================ host callback

_HOST_CALLBACK = r"""
import json, logging, os, warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="jax.*")
logging.disable(logging.CRITICAL)  # jax logs the callback's traceback before re-raising
assert os.environ["KLUJAX_FORCE_HOST_CALLBACK"] == "1"
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import klujax
from helpers import dense, make_dominant, pattern, uniform_values

n = 9
rng = np.random.default_rng(1)
Ai, Aj, diag = pattern(n, rng, density=0.35, duplicates=2)
Ai, Aj = Ai.astype(np.int32), Aj.astype(np.int32)
Ax = make_dominant(uniform_values(rng, (3, len(Ai)), np.complex128), Ai, diag, n)
b = uniform_values(rng, (3, n), np.float64)
A = dense(Ai, Aj, Ax, n)
ref = np.linalg.solve(A, b[..., None])[..., 0]
checks = []

def check(name, x, expected, tol=1e-10):
    np.testing.assert_allclose(np.asarray(x), expected, rtol=tol, atol=tol, err_msg=name)
    checks.append(name)

# the lowering really is the host callback, not the direct FFI call
hlo = jax.jit(klujax.solve).lower(Ai, Aj, Ax, b).as_text()
assert "callback" in hlo, hlo
checks.append("lowered to a host callback")

check("solve", klujax.solve(Ai, Aj, Ax, b), ref)
check("jit", jax.jit(klujax.solve)(Ai, Aj, Ax, b), ref)
check("vmap", jax.vmap(klujax.solve, (None, None, 0, 0))(Ai, Aj, Ax, b), ref)
check("jit(vmap)", jax.jit(jax.vmap(klujax.solve, (None, None, 0, None)))(Ai, Aj, Ax, b[0]),
      np.linalg.solve(A, np.broadcast_to(b[0], (3, n))[..., None])[..., 0])
check("dot", klujax.dot(Ai, Aj, Ax, ref), b)

# AD: x = A^-1 b, L = Re sum(w x); compare with the dense jnp reference
w = uniform_values(rng, (3, n), np.complex128)
def dense_solve(a, bb):
    Ad = jnp.zeros((3, n, n), a.dtype).at[:, Ai, Aj].add(a)
    return jnp.linalg.solve(Ad, bb[..., None].astype(a.dtype))[..., 0]
for name, solver in (("klujax", lambda a, bb: klujax.solve(Ai, Aj, a, bb)), ("dense", dense_solve)):
    f = lambda a, bb, s=solver: jnp.real(jnp.sum(w * s(a, bb)))
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(Ax, b)
    t = jax.jvp(lambda a: solver(a, b), (Ax,), (Ax * 0.1j,))[1]
    if name == "klujax":
        ours = (g, t)
    else:
        check("grad Ax", ours[0][0], np.asarray(g[0]), 1e-9)
        check("grad b", ours[0][1], np.asarray(g[1]), 1e-9)
        check("jvp", ours[1], np.asarray(t), 1e-9)

# split API
with klujax.analyze(Ai, Aj, n) as sym:
    num = klujax.factor(Ai, Aj, Ax, sym)
    check("split solve_with_numeric", klujax.solve_with_numeric(num, b, sym), ref)
    check("split jit solve_with_numeric", jax.jit(klujax.solve_with_numeric)(num, b, sym), ref)
    check("split solve_with_symbol", klujax.solve_with_symbol(Ai, Aj, Ax, b, sym), ref)
    xt = klujax.tsolve_with_numeric(num, b, sym)
    check("split tsolve", np.einsum("lji,lj->li", A, np.asarray(xt)), b)
    klujax.refactor(Ai, Aj, 2 * Ax, num, sym)
    check("split refactor", klujax.solve_with_numeric(num, b, sym), ref / 2)
    freed = int(klujax.free_numeric(num))
    assert freed == 3, freed
    assert int(klujax.free_numeric(num)) == 0  # double free: harmless
    checks.append("split free")

    @jax.jit
    def inside(a, bb, sym):
        num = klujax.factor(Ai, Aj, a, sym)
        x = klujax.solve_with_numeric(num, bb, sym)
        return x, klujax.free_numeric(num, dependency=x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the once-per-process "not owned" warning
        x, freed = inside(Ax, b, sym)
    check("split inside jit", x, ref)
    assert int(freed) == 3, int(freed)

# singular member -> NaN for that member only
Ax_s = Ax.copy()
Ax_s[1] = 0
x = np.asarray(klujax.solve(Ai, Aj, Ax_s, b))
assert np.all(np.isnan(x[1])) and np.all(np.isfinite(x[[0, 2]])), x
checks.append("singular member NaN")

# x64 off inside the callback process
with klujax._compat.enable_x64(False):
    x32 = klujax.solve(Ai, Aj, Ax.astype(np.complex64), b.astype(np.float32))
    assert x32.dtype == np.complex64, x32.dtype
    check("x64 off", x32, ref, 1e-5)

# run-time errors raise (and the process goes on): bad index, bad handle
errors = (jax.errors.JaxRuntimeError, ValueError, RuntimeError)
bad = Ai.copy()
bad[3] = n + 4
huge = jnp.asarray(Ai.astype(np.int64)).at[0].set(2**40)
for name, call in (("index eager", lambda: klujax.solve(bad, Aj, Ax, b)),
                   ("index jit", lambda: jax.jit(klujax.solve)(jnp.asarray(bad), Aj, Ax, b)),
                   ("index huge", lambda: klujax.solve(huge, Aj, Ax, b)),
                   ("index vmap",
                    lambda: jax.vmap(klujax.solve, (None, None, 0, 0))(bad, Aj, Ax, b)),
                   ("index dot", lambda: klujax.dot(bad, Aj, Ax, b))):
    try:
        jax.block_until_ready(call())
    except errors as e:
        assert "Ai" in str(e), (name, str(e)[-500:])
        checks.append(name + " raises")
    else:
        raise AssertionError(name + ": no error")
with klujax.analyze(Ai, Aj, n) as sym:
    num = klujax.factor(Ai, Aj, Ax, sym)
    raw = num.handle
    num.close()
    try:
        jax.block_until_ready(klujax.solve_with_numeric(raw, b, sym))
    except errors as e:
        assert "numeric" in str(e), str(e)[-500:]
        checks.append("freed handle raises")
    else:
        raise AssertionError("freed handle: no error")
check("after errors", jax.jit(klujax.solve)(Ai, Aj, Ax, b), ref)
print(json.dumps({"checks": checks}))
"""


def test_forced_host_callback_path():
    out = run_python(_HOST_CALLBACK, KLUJAX_FORCE_HOST_CALLBACK="1", JAX_PLATFORMS="cpu",
                     timeout=300)
    assert len(out["checks"]) == 25, out
