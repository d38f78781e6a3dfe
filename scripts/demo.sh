#!/usr/bin/env bash
# Set up (if needed) and run the demo on built-in example systems: python -m klujax.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m klujax "$@"
