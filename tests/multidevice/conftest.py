"""Tests that need several devices: 4 forced host (CPU) devices.

They run in their own pytest process (``tests/test_multidevice.py`` starts it, with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` set before jax initializes), so
the main test run keeps its single device. Run them directly with::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest tests/multidevice
"""

from __future__ import annotations

import jax
import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if jax.device_count() < 4:
        raise pytest.UsageError(
            "tests/multidevice needs 4 devices: set XLA_FLAGS=--xla_force_host_platform_"
            f"device_count=4 before jax starts (found {jax.device_count()})")
