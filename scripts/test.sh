#!/usr/bin/env bash
# The whole test suite, as CI runs it: bootstrap the environment, then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check schemas services vitrine tests bench
.venv/bin/ruff format --check schemas services vitrine tests bench
.venv/bin/mypy schemas services vitrine
.venv/bin/python -m schemas.export --check
.venv/bin/pytest "$@"
