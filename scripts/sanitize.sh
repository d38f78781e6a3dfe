#!/usr/bin/env bash
# Build klujax with AddressSanitizer + UndefinedBehaviorSanitizer into .venv-asan and run
# the test suite under it (pytest arguments are passed through). With SANITIZER=thread
# it builds with ThreadSanitizer into .venv-tsan instead (run it on the concurrency
# tests: `SANITIZER=thread bash scripts/sanitize.sh tests/test_concurrency.py`). Python itself is not
# instrumented, so the sanitizer runtimes are preloaded; leak detection is off because
# CPython and XLA keep allocations alive at exit by design (tests/test_leaks.py measures
# klujax's own leaks through RSS instead).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh >/dev/null
PY=${PYTHON:-python3}
SANITIZER=${SANITIZER:-address,undefined}
if [ "$SANITIZER" = thread ]; then V=.venv-tsan; else V=.venv-asan; fi
[ -x $V/bin/python ] || "$PY" -m venv $V
$V/bin/python -m pip install -q --upgrade pip
$V/bin/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
  "jax>=0.6.0,<0.13" "jaxlib>=0.6.0,<0.13" pytest hypothesis scipy flatbuffers absl-py
$V/bin/python -m pip install -q --no-build-isolation --force-reinstall --no-deps \
  -Cbuild-dir=build/$V -Ccmake.define.KLUJAX_SANITIZE="$SANITIZER" -Ccmake.build-type=RelWithDebInfo .

if [ "$SANITIZER" = thread ]; then
  export LD_PRELOAD="$(g++ -print-file-name=libtsan.so)"
  # Only reports whose stacks touch klujax count: XLA and CPython are not instrumented.
  export TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 second_deadlock_stack=1"
else
  export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1:detect_stack_use_after_return=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
export KLUJAX_SANITIZED=1
# Run from outside the checkout so `import klujax` finds the instrumented install; test
# paths given relative to the repository are made absolute (default: all of tests/).
args=(); paths=0
for a in "$@"; do
  if [ -e "$ROOT/${a%%::*}" ]; then args+=("$ROOT/$a"); paths=1; else args+=("$a"); fi
done
[ $paths -eq 1 ] || args+=("$ROOT/tests")
cd /tmp
run=("$ROOT/$V/bin/python" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$ROOT" -p no:cacheprovider -q "${args[@]}")
[ "$SANITIZER" = thread ] || exec "${run[@]}"
# ThreadSanitizer also reports races inside the uninstrumented XLA, MLIR and CPython;
# only reports with a klujax frame in their stacks count.
log=$(mktemp)
set +e; "${run[@]}" 2>"$log" | tee -a "$log.out"; set -e
status=0; grep -qE "[0-9]+ (failed|error)" "$log.out" && status=1
unset LD_PRELOAD
python3 - "$log" "$status" <<'PY'
import sys
text = open(sys.argv[1]).read()
reports = text.split("WARNING: ThreadSanitizer")[1:]
ours = [r for r in reports if "klujax::" in r or "_klujax.cpython" in r]
print(f"ThreadSanitizer: {len(reports)} reports, {len(ours)} with klujax frames")
for r in ours:
    print("WARNING: ThreadSanitizer" + r.split("==================")[0])
sys.exit(1 if ours or sys.argv[2] != "0" else 0)
PY
