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
if [[ $# -gt 0 ]]; then
  exec .venv/bin/pytest "$@"
fi
# Everything: the model tier (CPU-bound llama.cpp) and the rest (the stack tier mostly waits on
# servers and the services it starts; the unit tier takes seconds) side by side, as two pytest
# processes, each in order; the model tier's report is printed after the other's.
model_log="$(mktemp)"
.venv/bin/pytest tests/model >"$model_log" 2>&1 &
model_pid=$!
rest_rc=0
.venv/bin/pytest tests/stack tests/unit || rest_rc=$?
model_rc=0
wait "$model_pid" || model_rc=$?
echo "== tests/model (run beside the above) =="
cat "$model_log"
rm -f "$model_log"
echo "tests/stack + tests/unit: exit $rest_rc; tests/model: exit $model_rc"
[[ $rest_rc -eq 0 && $model_rc -eq 0 ]]
