#!/usr/bin/env bash
# Lint and type-check the package: ruff (lint + formatting) and mypy over klujax/
# (settings in pyproject.toml). Uses the .venv that scripts/setup.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
.venv/bin/ruff check klujax
.venv/bin/ruff format --check klujax
.venv/bin/mypy
