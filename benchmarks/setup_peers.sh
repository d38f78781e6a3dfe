#!/usr/bin/env bash
# Creates one virtual environment per peer library of klujax, OUTSIDE the repository, with
# plain `pip install`s from PyPI (nothing third-party is ever written into the repository):
#
#   benchmarks/setup_peers.sh                 # sparsax, umfpack-jax, pardiso-mkl-jax
#   benchmarks/setup_peers.sh sparsax         # just one (names: sparsax umfpack-jax pardiso-mkl-jax spineax)
#   PEER_VENVS=/somewhere benchmarks/setup_peers.sh
#
# Venvs go to $PEER_VENVS/<name> (default: the directory next to the repository, ../peer-venvs).
# Every peer wheel on PyPI needs Python >= 3.12 (sparsax, spineax) or is built for cp312 only
# (umfpack-jax), so the venvs use $PEER_PYTHON (default: python3.12 on PATH, else pyenv's 3.12).
# spineax (cuDSS, CUDA-only FFI targets, pulls jax[cuda13] and the CUDA wheels, several GB) is
# only installed when named explicitly; it cannot run on a CPU-only machine.
# A failed install is reported and the script goes on with the next peer; its log is kept in
# $PEER_VENVS/<name>.log. Re-running skips venvs whose import check already passes.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEER_VENVS="${PEER_VENVS:-$(dirname "$ROOT")/peer-venvs}"
case "$PEER_VENVS" in "$ROOT"|"$ROOT"/*) echo "PEER_VENVS must be outside the repository ($ROOT)" >&2; exit 2;; esac

PY="${PEER_PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c "import venv" 2>/dev/null; then PY=python3.12
  else PY="$(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python 2>/dev/null | sort -V | tail -1)"; fi
fi
[ -n "$PY" ] && "$PY" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" \
  || { echo "need a Python 3.12 (set PEER_PYTHON=...)" >&2; exit 1; }

# name -> pip requirements, and the import that proves the install works
declare -A REQS=(
  [sparsax]="sparsax numpy"
  [umfpack-jax]="umfpack-jax numpy jax<0.10 jaxlib<0.10"
  [pardiso-mkl-jax]="pardiso-mkl-jax numpy"
  [spineax]="spineax numpy"
)
declare -A CHECK=(
  [sparsax]="import sparsax"
  [umfpack-jax]="import umfpack_jax_cpp"
  [pardiso-mkl-jax]="import pardiso_mkl_jax"
  [spineax]="import spineax"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(sparsax umfpack-jax pardiso-mkl-jax)
mkdir -p "$PEER_VENVS"
status=0
for name in "${names[@]}"; do
  [ -n "${REQS[$name]:-}" ] || { echo "unknown peer $name" >&2; status=1; continue; }
  venv="$PEER_VENVS/$name"; logf="$PEER_VENVS/$name.log"
  check="import jax; jax.config.update('jax_enable_x64', True); ${CHECK[$name]}"
  if [ -x "$venv/bin/python" ] && JAX_PLATFORMS=cpu "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "$name: ready ($venv)"; continue
  fi
  echo "$name: creating $venv (pip install ${REQS[$name]}; log $logf)"
  { "$PY" -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade pip \
      && "$venv/bin/python" -m pip install ${REQS[$name]}; } >"$logf" 2>&1
  if [ $? -ne 0 ]; then
    echo "$name: INSTALL FAILED; last lines of $logf:"; tail -5 "$logf" | sed 's/^/    /'; status=1; continue
  fi
  if ! JAX_PLATFORMS=cpu "$venv/bin/python" -c "$check" >>"$logf" 2>&1; then
    echo "$name: installed but the import check failed; last lines of $logf:"; tail -5 "$logf" | sed 's/^/    /'
    status=1; continue
  fi
  echo "$name: ready ($("$venv/bin/python" -m pip list 2>/dev/null | grep -iE "^(sparsax|umfpack-jax|pardiso-mkl-jax|spineax|jax|jaxlib|mkl) " | tr -s ' ' | paste -sd, -))"
done
exit $status
