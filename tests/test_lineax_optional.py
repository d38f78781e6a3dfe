"""lineax is optional: ``import klujax`` never imports it, and ``klujax.lineax`` says how
to get it when it is missing. Runs with or without lineax installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_import_klujax_does_not_import_lineax():
    proc = _run("""
        import sys
        import klujax
        import jax.numpy as jnp
        klujax.solve(jnp.array([0]), jnp.array([0]), jnp.array([2.0]), jnp.array([1.0]))
        loaded = sorted(m for m in ("lineax", "equinox", "optimistix", "diffrax")
                        if m in sys.modules)
        print(",".join(loaded))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_missing_lineax_message():
    # sys.modules[name] = None makes `import name` raise ImportError, as if not installed.
    proc = _run("""
        import sys
        sys.modules["lineax"] = None
        try:
            import klujax.lineax
        except ImportError as e:
            print(e)
        else:
            print("imported")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'klujax[lineax]'" in proc.stdout
