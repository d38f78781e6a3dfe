"""Runs tests/multidevice in a fresh pytest process with 4 forced host (CPU) devices.

The device count is fixed when jax starts, and this process has one device, so each
file of that directory gets its own interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
FILES = sorted(p.name for p in (HERE / "multidevice").glob("test_*.py"))
FLAG = "--xla_force_host_platform_device_count=4"


@pytest.mark.parametrize("name", FILES)
def test_multidevice(name: str, tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_PLATFORMS", "JAX_ENABLE_X64", "KLUJAX_FORCE_HOST_CALLBACK")}
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAG}".strip()
    # Run from an empty directory: `python -m pytest` puts its working directory first on
    # sys.path, and the checkout's klujax/ (sources only) must not shadow an installed
    # klujax (scripts/test_install.sh, sanitize.sh) in the child or in its subprocesses.
    root = HERE.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(root / "pyproject.toml"), "--rootdir", str(root),
         str(HERE / "multidevice" / name)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout[-12000:]}\n{proc.stderr[-4000:]}"
