"""Every ```python block of docs/scaling_out.md runs, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

import jax
import pytest

PAGE = pathlib.Path(__file__).parents[2] / "docs" / "scaling_out.md"


def blocks() -> list[str]:
    text = PAGE.read_text()
    # a block right after "<!-- script: ... -->" is a whole program of its own
    # (tests/test_multiprocess.py runs it), not part of the page's running example
    return [m.group(2) for m in re.finditer(r"(<!-- script: \w+ -->\n)?```python\n(.*?)```", text, re.S)
            if not m.group(1)]


@pytest.mark.skipif(not hasattr(jax, "shard_map"), reason="the page uses jax.shard_map (jax >= 0.7)")
def test_scaling_out_page_runs() -> None:
    code = blocks()
    assert len(code) >= 3
    namespace: dict = {"__name__": "docs_scaling_out"}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{PAGE.name}[block {i}]", "exec"), namespace)  # noqa: S102
        except Exception as e:  # pragma: no cover (shows which block failed)
            raise AssertionError(f"block {i} of {PAGE.name} failed:\n{block}") from e
