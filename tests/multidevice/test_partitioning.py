"""klujax under plain jax.jit with batch-sharded inputs: each device solves its own batch
members (or right-hand sides), outputs keep the sharding, and the compiled HLO moves no
Ax, b or x between devices (checked on the HLO text). Values against dense references.

Every case runs with Shardy and with GSPMD, on a mesh of Auto axes and (where jax has
them) of Explicit axes (sharding in types).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import klujax
from md_helpers import AXIS, L, N, R, close, dense, ref_dot, ref_solve, rhs, system

N_DEV = 4
LOCAL = L // N_DEV

MODES = [("auto", True), ("auto", False), ("explicit", True)]
MODE_IDS = ["auto-shardy", "auto-gspmd", "explicit-shardy"]


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mesh(request: pytest.FixtureRequest) -> Any:
    axes, shardy = request.param
    types = getattr(jax.sharding, "AxisType", None)
    if axes == "explicit" and types is None:
        pytest.skip("no explicit mesh axes in this jax")
    old = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", shardy)
    kwargs = {"axis_types": (types.Explicit if axes == "explicit" else types.Auto,)} if types else {}
    try:
        yield Mesh(np.array(jax.devices()[:N_DEV]), (AXIS,), **kwargs)
    finally:
        jax.config.update("jax_use_shardy_partitioner", old)


def put(m: Mesh, x: Any, *spec: Any) -> jax.Array:
    return jax.device_put(x, NamedSharding(m, P(*spec)))


#== HLO inspection ==#

_COLLECTIVE = re.compile(r"\s(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
                         r"(?:-start)?\(")


def hlo(f: Any, *args: Any) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # handles born inside jit are not owned
        return jax.jit(f).lower(*args).compile().as_text()


def collectives(text: str) -> list[str]:
    """(kind, result shape) of every cross-device collective in compiled HLO text."""
    out = []
    for line in text.splitlines():
        m = _COLLECTIVE.search(line)
        if m:
            out.append((m.group(1), line.split("=", 1)[1].split(m.group(1))[0].strip()))
    return out


def klujax_calls(text: str) -> list[tuple[str, str]]:
    """(result shape, target) of every klujax custom call in compiled HLO text."""
    calls = []
    for line in text.splitlines():
        t = re.search(r'custom_call_target="(klujax\.[^"]+)"', line)
        if t and "custom-call(" in line:
            shape = line.split("=", 1)[1].split("custom-call(")[0].strip()
            calls.append((shape, t.group(1)))
    return calls


def assert_local(text: str, leading: int = LOCAL) -> None:
    """Every batched klujax call in ``text`` works on ``leading`` members (its own)."""
    calls = klujax_calls(text)
    assert calls, text
    for shape, target in calls:
        if "analyze" in target or "free_" in target:
            continue
        lead = int(re.match(r"\w+\[(\d+)", shape).group(1))
        assert lead == leading, f"{target} runs on {shape}, expected {leading} members"


def spec_of(x: jax.Array) -> tuple:
    spec = tuple(x.sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


#== solve / dot / solve_with_symbol ==#

# (id, Ax batch, Ax spec, b shape, b spec, x spec, members per call)
CASES = [
    ("Ax-sharded,b-sharded", L, (AXIS,), (L, N), (AXIS,), (AXIS, None), LOCAL),
    ("Ax-replicated,b-sharded", 1, (), (L, N), (AXIS,), (AXIS, None), LOCAL),
    ("Ax-sharded,b-replicated", L, (AXIS,), (1, N), (), (AXIS, None), LOCAL),
    ("Ax-sharded,b3-sharded", L, (AXIS,), (L, N, R), (AXIS,), (AXIS, None, None), LOCAL),
    ("Ax-replicated,rhs-sharded", 1, (), (1, N, R), (None, None, AXIS), (None, None, AXIS), 1),
]
IDS = [c[0] for c in CASES]


def _ops(Ai: Any, Aj: Any, sym: Any) -> dict[str, tuple]:
    return {
        "solve": (lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), lambda Ax, b: ref_solve(Ai, Aj, Ax, b)),
        "dot": (lambda Ax, b: klujax.dot(Ai, Aj, Ax, b), lambda Ax, b: ref_dot(Ai, Aj, Ax, b)),
        "solve_with_symbol": (lambda Ax, b: klujax.solve_with_symbol(Ai, Aj, Ax, b, sym),
                              lambda Ax, b: ref_solve(Ai, Aj, Ax, b)),
    }


@pytest.mark.parametrize("op", ["solve", "dot", "solve_with_symbol"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward(mesh: Mesh, case: Any, op: str) -> None:
    _, la, ax_spec, b_shape, b_spec, x_spec, members = case
    Ai, Aj, Ax = system()
    Ax, b = Ax[:la], rhs(b_shape)
    with klujax.analyze(Ai, Aj, N) as sym:
        f, ref = _ops(Ai, Aj, sym.handle)[op]
        args = (put(mesh, Ax, *ax_spec), put(mesh, b, *b_spec))
        x = jax.jit(f)(*args)
        close(x, ref(Ax, b))
        assert spec_of(x) == x_spec
        text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text, members)


def test_complex(mesh: Mesh) -> None:
    Ai, Aj, Ax = system(np.complex128)
    b = rhs((L, N), np.complex128)
    f = lambda Ax, b: klujax.solve(Ai, Aj, Ax, b)  # noqa: E731
    args = (put(mesh, Ax, AXIS), put(mesh, b, AXIS))
    close(jax.jit(f)(*args), ref_solve(Ai, Aj, Ax, b))
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)


@pytest.mark.parametrize("op", ["solve", "dot"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_stays_sharded(mesh: Mesh, case: Any, op: str) -> None:
    _, la, ax_spec, b_shape, b_spec, x_spec, members = case
    Ai, Aj, Ax = system()
    Ax, b = Ax[:la], rhs(b_shape)
    f, ref = _ops(Ai, Aj, None)[op]

    def grad_of(fn: Any) -> Any:
        return jax.grad(lambda Ax, b: jnp.sum(fn(Ax, b) ** 2), argnums=(0, 1))

    args = (put(mesh, Ax, *ax_spec), put(mesh, b, *b_spec))
    g_ax, g_b = jax.jit(grad_of(f))(*args)
    r_ax, r_b = grad_of(ref)(Ax, b)
    close(g_ax, r_ax)
    close(g_b, r_b)
    assert spec_of(g_ax)[0] == (ax_spec[0] if ax_spec else None)
    assert spec_of(g_b)[:len(b_spec)] == tuple(b_spec)
    text = hlo(grad_of(f), *args)
    # The cotangent of a replicated operand is summed over the devices (its all-reduce,
    # as for any replicated parameter); nothing else crosses devices.
    replicated = [a.size for a, spec in ((Ax, ax_spec), (b, b_spec)) if not spec]
    for kind, shape in collectives(text):
        size = int(np.prod([int(d) for d in re.findall(r"\d+", shape.split("{")[0])[1:]]))
        assert kind == "all-reduce" and size in replicated, (kind, shape)
    assert_local(text, members)


def test_jvp(mesh: Mesh) -> None:
    Ai, Aj, Ax = system()
    b = rhs((L, N))
    dAx, db = rhs(Ax.shape, seed=3), rhs(b.shape, seed=4)
    f = lambda *a: jax.jvp(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b), a[:2], a[2:])  # noqa: E731
    args = [put(mesh, a, AXIS) for a in (Ax, b, dAx, db)]
    x, dx = jax.jit(f)(*args)
    rx, rdx = jax.jvp(lambda Ax, b: ref_solve(Ai, Aj, Ax, b), (Ax, b), (dAx, db))
    close(x, rx)
    close(dx, rdx)
    assert spec_of(dx)[0] == AXIS
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)


#== vmap-added batch dimensions ==#

def test_vmap_over_b_folds_into_rhs(mesh: Mesh) -> None:
    """vmap over b only: one factorization per member serves the vmapped right-hand sides."""
    Ai, Aj, Ax = system()
    bs = rhs((3, L, N))
    f = lambda Ax, bs: jax.vmap(lambda b: klujax.solve(Ai, Aj, Ax, b))(bs)  # noqa: E731
    args = (put(mesh, Ax, AXIS), put(mesh, bs, None, AXIS))
    x = jax.jit(f)(*args)
    close(x, jax.vmap(lambda b: ref_solve(Ai, Aj, Ax, b))(bs))
    assert spec_of(x)[:2] == (None, AXIS)
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)


def test_vmap_over_a_sharded_axis(mesh: Mesh) -> None:
    """The vmapped axis itself sharded (Ax of one member per vmapped element)."""
    Ai, Aj, Ax = system()
    b = rhs((2, N))
    Axs = np.stack([Ax[:2] * (1 + 0.1 * i) for i in range(N_DEV)])  # (4, 2, n_nz)
    f = lambda Axs, b: jax.vmap(lambda A: klujax.solve(Ai, Aj, A, b))(Axs)  # noqa: E731
    args = (put(mesh, Axs, AXIS), put(mesh, b))
    x = jax.jit(f)(*args)
    close(x, jax.vmap(lambda A: ref_solve(Ai, Aj, A, b))(Axs))
    assert spec_of(x)[0] == AXIS
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text, 2)


def test_vmap_over_unsharded_axis_of_sharded_batch(mesh: Mesh, request: Any) -> None:
    """vmap over a sweep of a sharded batch: local with explicit axes (sharding in types);
    with Auto axes XLA cannot keep the inner sharding through the batch folding."""
    Ai, Aj, Ax = system()
    b = rhs((L, N))
    Axs = np.stack([Ax, 1.5 * Ax])  # (2, L, n_nz), L sharded
    f = lambda Axs, b: jax.vmap(lambda A: klujax.solve(Ai, Aj, A, b))(Axs)  # noqa: E731
    args = (put(mesh, Axs, None, AXIS), put(mesh, b, AXIS))
    x = jax.jit(f)(*args)
    close(x, jax.vmap(lambda A: ref_solve(Ai, Aj, A, b))(Axs))
    if "explicit" in request.node.callspec.id:
        assert spec_of(x)[:2] == (None, AXIS)
        text = hlo(f, *args)
        assert collectives(text) == []
        assert_local(text, 2 * LOCAL)


#== the split API inside jit ==#

def _split(Ai: Any, Aj: Any) -> Any:
    def f(Ax: Any, b: Any) -> Any:
        sym = klujax.analyze(Ai, Aj, N)
        num = klujax.factor(Ai, Aj, Ax, sym)
        x1 = klujax.solve_with_numeric(num, b, sym)
        num = klujax.refactor(Ai, Aj, 2 * Ax, num, sym, dependency=x1)
        x2 = klujax.tsolve_with_numeric(num, b, sym)
        freed = klujax.free_numeric(num, dependency=(x1, x2))
        klujax.free_symbolic(sym, dependency=(x1, x2, freed))
        return x1, x2
    return f


def test_split_api(mesh: Mesh) -> None:
    """factor -> solve_with_numeric -> refactor -> free compiles (it raised "Side-effect HLO
    must have sharding"), each device factors its own members and frees its own handles."""
    Ai, Aj, Ax = system()
    b = rhs((L, N))
    f = _split(Ai, Aj)
    args = (put(mesh, Ax, AXIS), put(mesh, b, AXIS))
    before = klujax._klujax.live_handles()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x1, x2 = jax.jit(f)(*args)
    close(x1, ref_solve(Ai, Aj, Ax, b))
    A2 = dense(Ai, Aj, 2 * Ax)
    close(x2, jnp.linalg.solve(jnp.swapaxes(A2, -1, -2), b[..., None])[..., 0])
    assert spec_of(x1)[0] == AXIS and spec_of(x2)[0] == AXIS
    assert klujax._klujax.live_handles() == before
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)
    targets = [t for _, t in klujax_calls(text)]
    assert any("factor" in t for t in targets) and any("free_numeric" in t for t in targets)


def test_split_api_uneven_batch(mesh: Mesh, request: Any) -> None:
    """A batch that the devices do not divide is not split (no padded members: a padded
    factor would make handles that nothing frees); the values are right all the same."""
    if "explicit" in request.node.callspec.id:
        pytest.skip("explicit axes reject the uneven slicing this test uses")
    Ai, Aj, Ax = system()
    b = rhs((L, N))

    def f(Ax: Any, b: Any) -> Any:
        return _split(Ai, Aj)(jnp.concatenate([Ax, Ax[:2]]), jnp.concatenate([b, b[:2]]))

    Ax10, b10 = np.concatenate([Ax, Ax[:2]]), np.concatenate([b, b[:2]])
    before = klujax._klujax.live_handles()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x1, _ = jax.jit(f)(put(mesh, Ax, AXIS), put(mesh, b, AXIS))
    close(x1, ref_solve(Ai, Aj, Ax10, b10))
    assert klujax._klujax.live_handles() == before


def test_diagnostics(mesh: Mesh) -> None:
    Ai, Aj, Ax = system()
    args = (put(mesh, Ax, AXIS),)
    f = lambda Ax: (klujax.slogdet(Ai, Aj, Ax, N)[1],  # noqa: E731
                    jax.grad(lambda Ax: klujax.slogdet(Ai, Aj, Ax, N)[1].sum())(Ax))
    logdet, g = jax.jit(f)(*args)
    A = dense(Ai, Aj, Ax)
    close(logdet, jnp.linalg.slogdet(A)[1])
    close(g, jax.grad(lambda Ax: jnp.linalg.slogdet(dense(Ai, Aj, Ax))[1].sum())(Ax))
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)


#== pmap keeps working ==#

def test_pmap() -> None:
    Ai, Aj, Ax = system()
    b = rhs((L, N))

    def loss(Ax: Any, b: Any) -> Any:
        return jnp.sum(klujax.solve(Ai, Aj, Ax, b) ** 2)

    shape = lambda a: a.reshape(N_DEV, LOCAL, *a.shape[1:])  # noqa: E731
    x = jax.pmap(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b))(shape(Ax), shape(b))
    close(np.asarray(x).reshape(L, N), ref_solve(Ai, Aj, Ax, b))
    g_ax, g_b = jax.pmap(jax.grad(loss, argnums=(0, 1)))(shape(Ax), shape(b))
    r_ax, r_b = jax.grad(lambda Ax, b: jnp.sum(ref_solve(Ai, Aj, Ax, b) ** 2), argnums=(0, 1))(Ax, b)
    close(np.asarray(g_ax).reshape(Ax.shape), r_ax)
    close(np.asarray(g_b).reshape(b.shape), r_b)


@pytest.mark.x64_off
def test_float32_and_handles_with_x64_off(mesh: Mesh) -> None:
    """x64 off: float32 values (computed in double) and the uint64 handles partition too."""
    Ai, Aj, Ax = system()
    b = rhs((L, N))
    f = _split(Ai, Aj)
    args = (put(mesh, Ax.astype(np.float32), AXIS), put(mesh, b.astype(np.float32), AXIS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x1, _ = jax.jit(f)(*args)
    assert x1.dtype == np.float32
    close(np.asarray(x1, np.float64), ref_solve(Ai, Aj, Ax, b), tol=1e-5)
    text = hlo(f, *args)
    assert collectives(text) == []
    assert_local(text)
