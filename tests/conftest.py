"""Shared pytest configuration for the klujax test suite.

x64 is NOT enabled at import time: importing klujax must not depend on it. Instead an
autouse fixture turns ``jax_enable_x64`` on for each test (and restores it afterwards),
except for tests marked ``@pytest.mark.x64_off``, which run with x64 disabled. Every test
also runs with ``jax_numpy_rank_promotion="raise"`` so that implicit rank promotion in the
library (or the tests) is caught.
"""

from __future__ import annotations

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # make `import helpers` work everywhere

# tests/multidevice needs several (forced host) devices, fixed before jax starts: the
# main run has one, and tests/test_multidevice.py runs that directory in its own process.
collect_ignore = ([] if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
                  else ["multidevice"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "x64_off: run the test with jax_enable_x64 disabled")


@pytest.fixture(autouse=True)
def _jax_config(request: pytest.FixtureRequest):
    x64 = request.node.get_closest_marker("x64_off") is None
    old_x64 = jax.config.jax_enable_x64
    old_rank = jax.config.jax_numpy_rank_promotion
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    try:
        yield x64
    finally:
        jax.config.update("jax_enable_x64", old_x64)
        jax.config.update("jax_numpy_rank_promotion", old_rank)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under the sanitizers (scripts/sanitize.sh) memory is quarantined and padded, so RSS
    # growth says nothing about klujax: the RSS-based leak tests are skipped there.
    if os.environ.get("KLUJAX_SANITIZED"):
        skip = pytest.mark.skip(reason="RSS measurements are meaningless under sanitizers")
        for item in items:
            if "rss" in item.name.lower() or item.get_closest_marker("slow"):
                item.add_marker(skip)
