"""The runnable examples in examples/ work and give the right answers."""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import jax
import pytest

from klujax import _klujax

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@functools.cache
def _load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    if not path.exists():  # pragma: no cover  (e.g. a test run from an installed package)
        pytest.skip(f"{path} not found")
    spec = importlib.util.spec_from_file_location(f"klujax_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """The examples free every handle they create and restore jax_enable_x64."""
    x64 = jax.config.jax_enable_x64
    before = dict(_klujax.live_handles())
    yield
    assert dict(_klujax.live_handles()) == before
    assert jax.config.jax_enable_x64 == x64


def test_newton_raphson() -> None:
    out = _load("newton_raphson").main()
    assert out["converged"]
    assert out["iterations"] < 50
    assert out["relative_residual"] < 1e-9
    # The same damped Newton iteration: the same iteration count and the same answer.
    assert out["iterations_dense"] == out["iterations"]
    assert out["max_abs_diff_dense"] < 1e-10
    assert out["iterations_while_loop"] == out["iterations"]
    assert out["max_abs_diff_while_loop"] < 1e-10
    # Physics: the diodes clamp node 0 near a forward voltage, decreasing along the ladder.
    assert 0.4 < out["v_first"] < 0.8
    assert out["monotone"]


def test_transient() -> None:
    out = _load("transient").main()
    assert out["all_finite"]
    assert out["relative_diff_dense"] < 1e-10
    assert out["grad_relative_diff_dense"] < 1e-8
    # A long step input settles at the DC operating point.
    assert out["step_final_load_voltage"] == pytest.approx(out["dc_load_voltage"], rel=1e-2)


def test_optimistix_dc() -> None:
    pytest.importorskip("optimistix")
    out = _load("optimistix_dc").main()
    assert out["successful"]
    assert out["steps"] < 50
    assert out["residual"] < 1e-12  # [A]; the source is 0.1 A
    # The same Newton iteration with a dense LU: the same steps, the same answer.
    assert out["steps_dense"] == out["steps"]
    assert out["max_abs_diff_dense"] < 1e-12
    assert out["colours"] <= 8  # a 5-point mesh: a few JVPs per Jacobian, for any size
    # Physics: the diodes clamp the driven node near a forward voltage; the load sags.
    assert 0.6 < out["v_source_node"] < 0.9
    assert 0.0 < out["v_load_node"] < out["v_source_node"]
    # The implicit-function-theorem gradient through KLU.
    assert out["dvload_di0"] > 0
    assert out["grad_relative_diff_dense"] < 1e-10
    assert out["grad_relative_diff_fd"] < 1e-5


def test_diffrax_stiff() -> None:
    pytest.importorskip("diffrax")
    out = _load("diffrax_stiff").main()
    assert out["successful"] and out["all_finite"]
    assert out["steps_dense"] == out["steps"]
    assert out["relative_diff_dense"] < 1e-10
    # Stiff: the explicit solver needs several times the steps, for the same solution.
    assert out["steps_explicit"] > 3 * out["steps"]
    assert out["relative_diff_explicit"] < 1e-4
    # u(1/2, 10): a regression value (Tsit5 agrees with it independently, see above).
    assert out["u_mid_final"] == pytest.approx(0.42995, abs=1e-4)
