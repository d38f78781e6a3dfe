"""A griffe extension for this site: Sphinx cross-reference roles in docstrings.

klujax's docstrings use Sphinx roles such as ``:func:`solve` `` and
``:class:`KLUHandleManager` ``, which Markdown would show literally. This rewrites each into
a mkdocstrings cross-reference, ``[`solve`][klujax.solve]``, resolved (and checked, in
strict mode) by mkdocs-autorefs. Names without a dot are taken to be public ``klujax``
names; ``~`` (Sphinx's "show the last component only") is honoured.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|obj|data|exc):`(~?)([\w.]+)`")


def _link(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    path = target if target.startswith("klujax") or "." in target else f"klujax.{target}"
    shown = path.rsplit(".", 1)[-1] if tilde or path != target else target
    return f"[`{shown}`][{path}]"


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring of the loaded package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_link, obj.docstring.value)
