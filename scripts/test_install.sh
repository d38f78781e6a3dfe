#!/usr/bin/env bash
# Install klujax from this checkout the way a user does -- `pip install ".[test]"` with
# build isolation, so pip builds the extension in a throw-away environment from the
# build-system requirements of pyproject.toml -- into a fresh virtual environment with
# jax/jaxlib pinned, then run the test suite against that install (pytest arguments are
# passed through; default: all of tests/).
#
#   PYTHON=python3.13 JAX=0.12.0.1 bash scripts/test_install.sh [pytest args]
#
# PYTHON  interpreter to build and test with (default: python3)
# JAX     jax and jaxlib version to run against (default: the newest pip resolves within
#         klujax's supported range); JAXLIB overrides the jaxlib version alone
# VENV    the virtual environment, removed and recreated on every run
#         (default: build/install-py<X.Y>-jax<JAX>)
# The only departure from a plain `pip install .` is the CMake build directory, which is
# made fresh inside VENV (as in a new clone) instead of build/{wheel_tag}, so that runs
# neither reuse the development build nor collide with each other.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
JAX=${JAX:-}
JAXLIB=${JAXLIB:-$JAX}
# (A pyenv shim exists for every installed version but runs only the selected ones.)
if ! "$PY" -c "import sys, venv" >/dev/null 2>&1; then
  echo "test_install: cannot run Python interpreter '$PY' (set PYTHON=...)" >&2
  exit 1
fi
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
V=${VENV:-$ROOT/build/install-py$pyver-jax${JAX:-newest}}
case "$V" in /*) ;; *) V=$ROOT/$V ;; esac

rm -rf "$V"
"$PY" -m venv "$V"
"$V/bin/python" -m pip install -q --upgrade pip
pins=()
[ -z "$JAX" ] || pins+=("jax==$JAX")
[ -z "$JAXLIB" ] || pins+=("jaxlib==$JAXLIB")
echo "test_install: pip install \".[test]\" ${pins[*]-} into $V (python $pyver)"
"$V/bin/python" -m pip install -q -Cbuild-dir="$V/cmake-build" ".[test]" ${pins[@]+"${pins[@]}"}

# Run from outside the checkout, so that `import klujax` finds the install and not ./klujax.
cd /tmp
"$V/bin/python" - "$V" <<'PY'
import os, re, sys
import jax, jaxlib, klujax
from klujax import _klujax

venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(klujax.__file__)
if not where.startswith(venv + os.sep):
    sys.exit(f"test_install: imported klujax from {where}, not from the install in {venv}")
header = open(os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "c_api.h")).read()
runtime = ".".join(re.search(rf"#define XLA_FFI_API_{k} (\d+)", header).group(1)
                   for k in ("MAJOR", "MINOR"))
built = ".".join(map(str, _klujax.ffi_api_version()))
print(f"test_install: python {sys.version.split()[0]}, jax {jax.__version__}, "
      f"jaxlib {jaxlib.__version__}, klujax {klujax.__version__}; "
      f"XLA FFI API: extension built against {built}, jaxlib provides {runtime}")
PY

# Test paths given relative to the repository are made absolute (default: all of tests/).
args=(); paths=0
for a in "$@"; do
  if [ -e "$ROOT/${a%%::*}" ]; then args+=("$ROOT/$a"); paths=1; else args+=("$a"); fi
done
[ $paths -eq 1 ] || args+=("$ROOT/tests")
exec "$V/bin/python" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$ROOT" -p no:cacheprovider -q "${args[@]}"
