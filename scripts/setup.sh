#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: system packages (SuiteSparse KLU
# and UMFPACK, Debian's OpenBLAS as the system BLAS that UMFPACK computes with, a
# C++ compiler, Python headers and venv), a virtual environment in .venv, and klujax
# built from this checkout with its test dependencies and the optional lineax extra.
# Re-running rebuilds incrementally.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=()
[ -f /usr/include/suitesparse/klu.h ] || [ -f /usr/include/klu.h ] || missing+=(libsuitesparse-dev)
# UMFPACK's speed on fill-heavy matrices comes from an optimized BLAS. The threaded build:
# it is safe for concurrent callers (klujax factors batch members in parallel, and sets
# its threads to 1), where the sequential build is not (docs/solvers.md).
dpkg -s libopenblas0-pthread >/dev/null 2>&1 || missing+=(libopenblas0-pthread)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if ! command -v "$PY" >/dev/null 2>&1; then
  missing+=(python3 python3-venv python3-dev)
else
  "$PY" -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
  "$PY" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || missing+=(python3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "klujax setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

"$PY" -c "import sys; sys.exit(sys.version_info < (3, 11))" \
  || { echo "klujax needs Python >= 3.11 (found $("$PY" --version)); set PYTHON=..." >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Build requirements first, so the build needs no isolated environment of its own.
.venv/bin/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
  "jax>=0.6.0,<0.13" "jaxlib>=0.6.0,<0.13"
# The lineax extra (lineax, optimistix, diffrax) runs klujax.lineax's tests and examples;
# klujax and the rest of the suite work without it.
.venv/bin/python -m pip install -q --no-build-isolation -e ".[test,lineax,lint]"
.venv/bin/python -c "import klujax; print('klujax', klujax.__version__, 'ready in .venv')"
