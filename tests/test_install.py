"""The compiled extension against the jaxlib it runs on: XLA FFI API versions and pins.

XLA registers an FFI handler only if the FFI API version it was compiled against is not
newer than the runtime's own (same major, minor <= the runtime's). A wheel built against
the newest jaxlib's headers therefore fails on every older jaxlib ("No FFI handler
registered for klujax_solve_f64"), which is why pyproject.toml builds against the oldest
supported jaxlib. ``scripts/test_install.sh`` runs the suite on such an install.
"""

from __future__ import annotations

import os
import re
import tomllib

import jax
import pytest

from klujax import _klujax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runtime_ffi_api_version() -> tuple[int, int]:
    """The FFI API version of the installed jaxlib, as its own headers declare it."""
    with open(os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")) as f:
        header = f.read()
    major, minor = (re.search(rf"^#define XLA_FFI_API_{k} (\d+)", header, re.M)
                    for k in ("MAJOR", "MINOR"))
    assert major and minor, "XLA_FFI_API_MAJOR/MINOR not found in jaxlib's c_api.h"
    return int(major.group(1)), int(minor.group(1))


def test_extension_ffi_api_not_newer_than_runtime():
    built = tuple(_klujax.ffi_api_version())
    runtime = _runtime_ffi_api_version()
    assert len(built) == 2 and all(isinstance(v, int) for v in built)
    assert built[0] == runtime[0] and built[1] <= runtime[1], (
        f"klujax's extension was built against XLA FFI API {built[0]}.{built[1]}, newer "
        f"than this jaxlib's {runtime[0]}.{runtime[1]}: XLA will refuse its handlers")


def _pyproject() -> dict:
    path = os.path.join(ROOT, "pyproject.toml")
    if not os.path.exists(path):  # pragma: no cover
        pytest.skip("pyproject.toml not available")
    with open(path, "rb") as f:
        return tomllib.load(f)


def _lower_bound(requirements: list[str], name: str) -> str:
    (req,) = [r for r in requirements if re.match(rf"{name}\s*[<>=!~]", r)]
    match = re.search(r">=\s*([0-9.]+)", req)
    assert match, f"{req!r}: no lower bound"
    return match.group(1)


@pytest.mark.parametrize("name", ["jax", "jaxlib"])
def test_build_pins_oldest_supported_jaxlib(name):
    """The build requirement is the runtime's lower bound, pinned exactly (Python < 3.14)."""
    data = _pyproject()
    oldest = _lower_bound(data["project"]["dependencies"], name)
    build = [r for r in data["build-system"]["requires"] if re.match(rf"{name}\s*[<>=!~]", r)]
    assert f"{name}=={oldest}; python_version < '3.14'" in build, build
    assert all("==" in r for r in build), f"unpinned {name} build requirement: {build}"

