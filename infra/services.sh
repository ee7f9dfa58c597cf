#!/usr/bin/env bash
# Starts/stops vitrine's own services on top of the native stack (called by infra/stack).
#
#   infra/services.sh up        start ingest, sink and VITRINE_INFERENCE_PROCESSES inference
#                               workers that are not running; wait until each has joined Kafka
#   infra/services.sh down      SIGTERM (workers finish or hand back their job), then SIGKILL
#   infra/services.sh status    one line per process
#
# The services read their settings from VITRINE_* variables (infra/dev.env plus the environment:
# e.g. VITRINE_PRESET, or VITRINE_MODEL_PATH/VITRINE_MMPROJ_PATH for an explicit model).
# Logs: $VITRINE_STATE_DIR/logs/<name>.log, one JSON object per line.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$INFRA_DIR")"
set -a
# shellcheck source=dev.env
. "$INFRA_DIR/dev.env"
: "${VITRINE_STATE_DIR:=$REPO_DIR/.vitrine}"
: "${VITRINE_INFERENCE_PROCESSES:=1}"
: "${VITRINE_SERVICE_START_TIMEOUT:=180}"
: "${VITRINE_METRICS_BASE_PORT:=29100}"
set +a

RUN_DIR="$VITRINE_STATE_DIR/run"
LOG_DIR="$VITRINE_STATE_DIR/logs"
PYTHON="${VITRINE_PYTHON:-$REPO_DIR/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

say() { echo "services: $*"; }

# name module metrics-port-offset
instances() {
    echo "ingest services.ingest 1"
    echo "sink services.sink 2"
    local i
    for ((i = 1; i <= VITRINE_INFERENCE_PROCESSES; i++)); do
        echo "inference-$i services.inference $((9 + i))"
    done
}

live_pid() {
    local pidfile="$RUN_DIR/$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Starts one service detached (own session, no stdin, no inherited lock fd) unless it runs;
# records in STARTED the log line count before the start, to wait for its "started" line.
declare -A STARTED=()
start_one() {
    local name="$1" module="$2" offset="$3" log="$LOG_DIR/$1.log"
    if live_pid "$name" >/dev/null; then
        return 0
    fi
    : >>"$log"
    STARTED[$name]="$(wc -l <"$log")"
    VITRINE_METRICS_PORT="$((VITRINE_METRICS_BASE_PORT + offset))" \
        setsid "$PYTHON" -m "$module" >>"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN_DIR/$name.pid"
}

wait_started() {
    local name="$1" mark="$2" log="$LOG_DIR/$1.log"
    local deadline=$((SECONDS + VITRINE_SERVICE_START_TIMEOUT))
    while ! tail -n "+$((mark + 1))" "$log" | grep -q '"event": "[a-z]*\.started"'; do
        if ! live_pid "$name" >/dev/null; then
            echo "services: ERROR: $name exited; last log lines:" >&2
            tail -n 5 "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "services: ERROR: $name not started after ${VITRINE_SERVICE_START_TIMEOUT}s" >&2
            return 1
        fi
        sleep 0.3
    done
}

cmd_up() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    cd "$REPO_DIR"
    local name module offset failed=0
    while read -r name module offset; do
        start_one "$name" "$module" "$offset"
    done < <(instances)
    for name in "${!STARTED[@]}"; do
        wait_started "$name" "${STARTED[$name]}" || failed=1
    done
    cmd_status
    return "$failed"
}

cmd_down() {
    local pidfile name pid
    for pidfile in "$RUN_DIR"/ingest.pid "$RUN_DIR"/inference-*.pid "$RUN_DIR"/sink.pid; do
        [[ -f "$pidfile" ]] || continue
        name="$(basename "$pidfile" .pid)"
        if pid="$(live_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + ${VITRINE_STOP_TIMEOUT:-30} + 60))
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
            say "$name stopped"
        fi
        rm -f "$pidfile"
    done
}

cmd_status() {
    local name pid
    for pidfile in "$RUN_DIR"/*.pid; do
        [[ -f "$pidfile" ]] || continue
        name="$(basename "$pidfile" .pid)"
        case "$name" in kafka | minio | postgres) continue ;; esac
        if pid="$(live_pid "$name")"; then
            printf '%-12s running  pid %s\n' "$name" "$pid"
        else
            printf '%-12s stopped\n' "$name"
        fi
    done
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
