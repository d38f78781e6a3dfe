#!/usr/bin/env bash
# Test the artefacts of scripts/build_wheel.sh (built first if dist/ has no wheel for
# this Python):
#
# 1. The binary wheel, installed into a fresh venv, runs `python -m klujax` (the demo)
#    and a solve with the system's SuiteSparse, BLAS/LAPACK and METIS made unloadable:
#    inside a private mount namespace (`unshare -m`) an empty file is bind-mounted over
#    every such library file the dynamic loader could find (its default directories,
#    /etc/ld.so.conf.d, the ld.so cache). Before anything runs, the test asserts that
#    each hidden soname really fails to load (ctypes.CDLL) and that the unrepaired
#    extension (linked against the system libklu) fails too, so it cannot pass vacuously.
#    It also checks that the loaded libklu comes from the wheel's klujax.libs/.
# 2. The sdist, `pip install`ed into another fresh venv (built from source against the
#    system SuiteSparse, isolated build), imports and solves. SKIP_SDIST=1 skips it.
#
# Needs root, or unprivileged user namespaces (then `unshare -rm` is used).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
whl=$(ls dist/klujax-*-"$tag"-"$tag"-manylinux*.whl 2>/dev/null | tail -1 || true)
if [ -z "$whl" ]; then bash scripts/build_wheel.sh; whl=$(ls dist/klujax-*-"$tag"-"$tag"-manylinux*.whl | tail -1); fi
whl=$ROOT/$whl
sdist=$(ls "$ROOT"/dist/klujax-*.tar.gz | tail -1)

WORK=$(mktemp -d /tmp/klujax-wheel-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"   # never import klujax from the checkout

cat >"$WORK/solve.py" <<'PY'
"""A solve (plus jit, vmap, grad), checked against dense; report where KLU came from."""
import os, sys
import jax, jax.numpy as jnp, numpy as np
import klujax

jax.config.update("jax_enable_x64", True)
site, mode = sys.argv[1], sys.argv[2]   # mode: "bundled" or "system" SuiteSparse
assert klujax.__file__.startswith(site), klujax.__file__
n = 50
rng = np.random.default_rng(0)
Ai = np.r_[np.arange(n), np.arange(n - 1), np.arange(1, n)]
Aj = np.r_[np.arange(n), np.arange(1, n), np.arange(n - 1)]
Ax = np.r_[4.0 + rng.random(n), -rng.random(2 * n - 2)]
b = rng.random((n, 3))
A = np.zeros((n, n)); np.add.at(A, (Ai, Aj), Ax)
x = jax.jit(klujax.solve)(Ai, Aj, Ax, b)
assert np.allclose(x, np.linalg.solve(A, b), rtol=1e-12, atol=1e-12)
xb = jax.vmap(klujax.solve, (None, None, 0, None))(Ai, Aj, jnp.stack([Ax, 2 * Ax]), b)
assert np.allclose(xb[1], np.linalg.solve(2 * A, b), rtol=1e-12, atol=1e-12)
g = jax.grad(lambda v: klujax.solve(Ai, Aj, v, b).sum())(Ax)
assert np.all(np.isfinite(g))
maps = open("/proc/self/maps").read().split("\n")
ss = sorted({l.split()[-1] for l in maps if any(k in l for k in
             ("libklu", "libamd", "libcolamd", "libbtf", "libsuitesparseconfig"))})
print("klujax", klujax.__version__, "from", os.path.dirname(klujax.__file__))
print("SuiteSparse libraries in this process:", *ss, sep="\n  ")
assert ss, "no SuiteSparse library mapped"
bundled = [p.startswith(os.path.join(os.path.dirname(site), "klujax.libs") + "/") for p in ss]
assert all(bundled) if mode == "bundled" else not any(bundled), (mode, ss)
print("solve ok: max |x - x_dense| =", float(np.abs(x - np.linalg.solve(A, b)).max()))
# The binary wheel has no UMFPACK (GPL): "auto" means KLU and "umfpack" is a clear error.
# The sdist, built where SuiteSparse's UMFPACK is installed, has both backends.
print("methods:", klujax.methods(), "BLAS:", klujax.blas_library() or "(none loaded)")
if mode == "bundled":
    assert klujax.methods() == ("klu",), klujax.methods()
    try:
        klujax.solve(Ai, Aj, Ax, b, options=klujax.KLUOptions(method="umfpack"))
    except ValueError as e:
        assert "UMFPACK" in str(e), e
    else:
        raise AssertionError("method='umfpack' should fail in the binary wheel")
else:
    assert klujax.methods() == ("klu", "umfpack"), klujax.methods()
    xu = klujax.solve(Ai, Aj, Ax, b, options=klujax.KLUOptions(method="umfpack"))
    assert np.allclose(xu, np.linalg.solve(A, b), rtol=1e-12, atol=1e-12)
PY

echo "== wheel: $(basename "$whl") into a fresh venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$whl"
SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
EXT=$(ls "$SITE"/klujax/_klujax*.so)

# The unrepaired extension (links the system libklu.so.1): a positive control.
RAW=""
raw_whl=$(ls "$ROOT"/build/wheel-raw/klujax-*-"$tag"-"$tag"-linux_x86_64.whl 2>/dev/null | tail -1 || true)
if [ -n "$raw_whl" ]; then
  mkdir "$WORK/raw" && "$PY" -m zipfile -e "$raw_whl" "$WORK/raw"
  RAW=$(ls "$WORK"/raw/klujax/_klujax*.so)
fi

cat >"$WORK/hidden.sh" <<'SH'
# Runs in a private mount namespace: hide the system libraries, prove it, then test.
set -euo pipefail
mount --make-rprivate / 2>/dev/null || true
unset LD_LIBRARY_PATH LD_PRELOAD PYTHONPATH
: >"$WORK/empty"; chmod 444 "$WORK/empty"
names='libklu libamd libcamd libcolamd libccolamd libbtf libsuitesparseconfig libcholmod
       libumfpack libspqr libcxsparse libldl librbio libgraphblas libmongoose libsliplu
       libblas libcblas liblapack libopenblas libblis libmkl libatlas libmetis'
dirs=$( { printf '%s\n' /lib /lib64 /usr/lib /usr/lib64 /usr/local/lib /usr/local/lib64 \
            /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/local/lib/x86_64-linux-gnu
          cat /etc/ld.so.conf /etc/ld.so.conf.d/*.conf 2>/dev/null | grep '^/' || true
          ldconfig -p | sed -n 's/.* => \(.*\)\/[^/]*$/\1/p'
        } | while read -r d; do [ -d "$d" ] && readlink -f "$d"; done | sort -u)
hidden=(); sonames=()
for d in $dirs; do
  for n in $names; do
    # the libraries themselves and their alternatives sub-directories (blas/, lapack/, ...)
    for f in $(find "$d" -maxdepth 2 \( -type f -o -type l \) -name "$n*.so*" 2>/dev/null); do
      # names the loader looks up directly (not those only in blas/, lapack/, ...)
      case "$(basename "$f")" in
        *.so.[0-9]*) [ "$(dirname "$f")" != "$d" ] || sonames+=("$(basename "$f")") ;;
      esac
      r=$(readlink -f "$f") || continue
      [ -f "$r" ] || continue
      case " ${hidden[*]-} " in *" $r "*) continue ;; esac
      mount --bind "$WORK/empty" "$r"
      hidden+=("$r")
    done
  done
done
[ ${#hidden[@]} -gt 0 ] || { echo "found no system SuiteSparse to hide" >&2; exit 1; }
echo "hidden ${#hidden[@]} system library files (empty file bind-mounted over each):"
printf '  %s\n' "${hidden[@]}"
printf '%s\n' "${sonames[@]}" | sort -u >"$WORK/sonames"

echo "-- proof: the hidden libraries no longer load"
"$WORK/venv/bin/python" "$WORK/loadable.py" fail "$RAW" $KLU_SONAMES $(cat "$WORK/sonames")

echo "-- ldd of the installed extension"
ldd "$EXT" | tee "$WORK/ldd.txt"
! grep -q "not found" "$WORK/ldd.txt" || { echo "unresolved libraries" >&2; exit 1; }
grep -q "libklu-[0-9a-f]*\.so[^ ]* => $SITE/[^ ]*klujax\.libs/" "$WORK/ldd.txt" \
  || { echo "libklu does not resolve into klujax.libs" >&2; exit 1; }
# Everything else must be what manylinux allows to stay external.
if grep -vE 'klujax\.libs/|linux-vdso|ld-linux-x86-64|lib(c|m|stdc\+\+|gcc_s|pthread|dl|rt)\.so' "$WORK/ldd.txt"; then
  echo "the extension needs libraries outside the manylinux set (above)" >&2; exit 1
fi

echo "-- solve"
"$WORK/venv/bin/python" "$WORK/solve.py" "$SITE/klujax" bundled
echo "-- python -m klujax"
"$WORK/venv/bin/python" -m klujax
SH

cat >"$WORK/loadable.py" <<'PY'
"""loadable.py load|fail RAW_EXT [SONAME...]: each must load (or fail to) via dlopen."""
import ctypes, sys
expect, raw, names = sys.argv[1], sys.argv[2], sys.argv[3:]
names = sorted(set(names)) + ([raw] if raw else [])
wrong = []
for name in names:
    try:
        ctypes.CDLL(name)
        ok, why = True, "loads"
    except OSError as e:
        ok, why = False, str(e)
    print(f"  {name.rsplit('/', 1)[-1]:48s} {why}")
    if ok != (expect == "load"):
        wrong.append(name)
if wrong:
    sys.exit(f"expected to {expect}, but did not: {wrong}")
PY
echo "== control, outside the namespace: the system libraries and the unrepaired extension load"
# KLU's sonames as the ld.so cache knows them (libklu.so.1 ... on Debian 12)
KLU_SONAMES=$(ldconfig -p | grep -oE '^\s*lib(klu|amd|colamd|btf|suitesparseconfig)\.so\.[0-9]+' | sort -u | xargs)
[ -n "$KLU_SONAMES" ] || { echo "no system SuiteSparse in the ld.so cache: nothing to hide" >&2; exit 1; }
[ -n "$RAW" ] || echo "(no unrepaired wheel in build/wheel-raw: the control uses the sonames only)"
"$WORK/venv/bin/python" "$WORK/loadable.py" load "$RAW" $KLU_SONAMES

echo "== inside a private mount namespace with the system libraries hidden"
export WORK RAW EXT SITE KLU_SONAMES
if [ "$(id -u)" -eq 0 ]; then ns=(unshare -m); else ns=(unshare -rm); fi
"${ns[@]}" bash "$WORK/hidden.sh"

if [ "${SKIP_SDIST:-0}" = 1 ]; then echo "== sdist: skipped (SKIP_SDIST=1)"; exit 0; fi
echo "== sdist: pip install $(basename "$sdist") into a fresh venv (system SuiteSparse)"
"$PY" -m venv "$WORK/venv-sdist"
"$WORK/venv-sdist/bin/python" -m pip install -q "$sdist"
SITE2=$("$WORK/venv-sdist/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
"$WORK/venv-sdist/bin/python" "$WORK/solve.py" "$SITE2/klujax" system
[ ! -d "$SITE2/klujax.libs" ] || { echo "the sdist build should link the system SuiteSparse" >&2; exit 1; }
echo "wheel and sdist tests passed"
