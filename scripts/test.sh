#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up, start the servers the tests talk to (Kafka, MinIO,
# PostgreSQL; the tests start their own service processes), lint, type-check, test.
#   bash scripts/test.sh                 everything
#   bash scripts/test.sh -m "not pipeline"   without the real-server tests (no stack needed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check schemas services vitrine tests bench infra
.venv/bin/ruff format --check schemas services vitrine tests bench infra
.venv/bin/mypy schemas services vitrine
.venv/bin/python -m schemas.export --check
VITRINE_SERVICES=0 infra/stack up
infra/tools/compose.sh path >/dev/null  # pinned Compose CLI for tests/stack/test_compose.py (built once)
# Debian's chromium for the review desk's browser tests (Playwright drives it; installed once).
VITRINE_CHROMIUM="$(infra/tools/browser.sh)"
export VITRINE_CHROMIUM
.venv/bin/pytest "$@"
