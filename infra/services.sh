#!/usr/bin/env bash
# Starts/stops vitrine's own services on top of the native stack (called by infra/stack).
#
#   infra/services.sh up        start ingest, sink, the review desk, the export stage and
#                               VITRINE_INFERENCE_PROCESSES inference workers that are not
#                               running; wait until each has joined Kafka (the desk: listens)
#   infra/services.sh down      SIGTERM (workers finish or hand back their job), then SIGKILL
#   infra/services.sh status    one line per process
#
# The services read their settings from VITRINE_* variables (infra/dev.env plus the environment:
# e.g. VITRINE_PRESET, or VITRINE_MODEL_PATH/VITRINE_MMPROJ_PATH for an explicit model), except
# credentials: each service gets only its own least-privilege ones (service_credentials below):
# the sink VITRINE_SINK_PG_DSN[_FILE], the workers VITRINE_INFERENCE_S3_* (read-only), ingest
# VITRINE_INGEST_S3_* (read and list the bucket), the review desk VITRINE_REVIEW_PG_DSN[_FILE],
# VITRINE_REVIEW_S3_* and VITRINE_UPLOAD_S3_*, the export stage VITRINE_READER_PG_DSN (read-only)
# and VITRINE_EXPORT_S3_* (the exports bucket only).
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

# name module metrics-port-offset (the rule lives in vitrine/targets.py, which vitrine status reads)
instances() {
    (cd "$REPO_DIR" && "$PYTHON" -m vitrine.targets instances "$VITRINE_INFERENCE_PROCESSES")
}

live_pid() {
    local pidfile="$RUN_DIR/$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Every credential dev.env and the environment may hold. No service inherits any of them: each
# gets only its own (service_credentials), so a compromised ingest or worker holds a read-only
# MinIO key (ingest's may also list the bucket's keys) and no database password, the sink no
# MinIO key (none of them the root/owner ones).
CREDENTIAL_VARS=(
    VITRINE_S3_ACCESS_KEY VITRINE_S3_SECRET_KEY VITRINE_S3_SECRET_KEY_FILE
    VITRINE_PG_USER VITRINE_PG_PASSWORD VITRINE_PG_DSN VITRINE_PG_DSN_FILE
    VITRINE_INFERENCE_S3_ACCESS_KEY VITRINE_INFERENCE_S3_SECRET_KEY
    VITRINE_INFERENCE_S3_SECRET_KEY_FILE
    VITRINE_INGEST_S3_ACCESS_KEY VITRINE_INGEST_S3_SECRET_KEY VITRINE_INGEST_S3_SECRET_KEY_FILE
    VITRINE_SINK_PG_PASSWORD VITRINE_SINK_PG_DSN VITRINE_SINK_PG_DSN_FILE
    VITRINE_READER_PG_PASSWORD VITRINE_READER_PG_DSN
    VITRINE_REVIEW_PG_PASSWORD VITRINE_REVIEW_PG_DSN VITRINE_REVIEW_PG_DSN_FILE
    VITRINE_REVIEW_S3_ACCESS_KEY VITRINE_REVIEW_S3_SECRET_KEY VITRINE_REVIEW_S3_SECRET_KEY_FILE
    VITRINE_UPLOAD_S3_ACCESS_KEY VITRINE_UPLOAD_S3_SECRET_KEY VITRINE_UPLOAD_S3_SECRET_KEY_FILE
    VITRINE_EXPORT_S3_ACCESS_KEY VITRINE_EXPORT_S3_SECRET_KEY VITRINE_EXPORT_S3_SECRET_KEY_FILE
    VITRINE_READER_PG_DSN_FILE
    PGPASSWORD PGPASSFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
)

# Prints, one per line, the NAME=value assignments a module gets as its credentials:
#   sink       VITRINE_PG_DSN from VITRINE_SINK_PG_DSN (role vitrine_sink), or the _FILE;
#   inference  VITRINE_S3_ACCESS_KEY/SECRET_KEY from VITRINE_INFERENCE_S3_* (read-only user);
#   ingest     VITRINE_S3_ACCESS_KEY/SECRET_KEY from VITRINE_INGEST_S3_* (user vitrine-ingest:
#              reads manifests and the first bytes of uploads whose content type and name are
#              both silent, lists a product folder once its manifest is deleted);
#   review     VITRINE_PG_DSN from VITRINE_REVIEW_PG_DSN (role vitrine_review), or the _FILE;
#              VITRINE_S3_* from VITRINE_REVIEW_S3_* (read-only user vitrine-review, the photos);
#              VITRINE_UPLOAD_S3_* as they are (put-only user vitrine-upload, the upload form);
#   export     VITRINE_PG_DSN from VITRINE_READER_PG_DSN (role vitrine_reader: SELECT only), or
#              the _FILE; VITRINE_S3_* from VITRINE_EXPORT_S3_* (user vitrine-export: the
#              exports bucket only).
# Prints NAME=$SOURCE, or NAME_FILE=$SOURCE_FILE when that file variable is set: a secret
# handed over as its value or as the path of the file that holds it.
secret_from() {
    local name="$1" source="$2" file="${2}_FILE"
    if [[ -n "${!file:-}" ]]; then
        echo "${name}_FILE=${!file}"
    else
        echo "$name=${!source}"
    fi
}

service_credentials() {
    case "$1" in
        services.sink)
            secret_from VITRINE_PG_DSN VITRINE_SINK_PG_DSN
            ;;
        services.inference)
            echo "VITRINE_S3_ACCESS_KEY=$VITRINE_INFERENCE_S3_ACCESS_KEY"
            secret_from VITRINE_S3_SECRET_KEY VITRINE_INFERENCE_S3_SECRET_KEY
            ;;
        services.ingest)
            echo "VITRINE_S3_ACCESS_KEY=$VITRINE_INGEST_S3_ACCESS_KEY"
            secret_from VITRINE_S3_SECRET_KEY VITRINE_INGEST_S3_SECRET_KEY
            ;;
        services.review)
            secret_from VITRINE_PG_DSN VITRINE_REVIEW_PG_DSN
            echo "VITRINE_S3_ACCESS_KEY=$VITRINE_REVIEW_S3_ACCESS_KEY"
            secret_from VITRINE_S3_SECRET_KEY VITRINE_REVIEW_S3_SECRET_KEY
            echo "VITRINE_UPLOAD_S3_ACCESS_KEY=$VITRINE_UPLOAD_S3_ACCESS_KEY"
            secret_from VITRINE_UPLOAD_S3_SECRET_KEY VITRINE_UPLOAD_S3_SECRET_KEY
            ;;
        services.export)
            secret_from VITRINE_PG_DSN VITRINE_READER_PG_DSN
            echo "VITRINE_S3_ACCESS_KEY=$VITRINE_EXPORT_S3_ACCESS_KEY"
            secret_from VITRINE_S3_SECRET_KEY VITRINE_EXPORT_S3_SECRET_KEY
            ;;
    esac
}

# Starts one service detached (own session, no stdin, no inherited lock fd) unless it runs;
# records in STARTED the log line count before the start, to wait for its "started" line.
declare -A STARTED=()
start_one() {
    local name="$1" module="$2" offset="$3" log="$LOG_DIR/$1.log"
    if live_pid "$name" >/dev/null; then
        return 0
    fi
    # Not exported: only what the subshell below exports reaches the service.
    local credentials
    credentials="$(service_credentials "$module")"
    : >>"$log"
    STARTED[$name]="$(wc -l <"$log")"
    # A subshell that drops every credential, exports the service's own (through the
    # environment, never on a command line that ps would show) and execs the service, so $! is
    # the service's pid.
    (
        unset "${CREDENTIAL_VARS[@]}"
        while IFS= read -r assignment; do
            if [[ -n "$assignment" ]]; then export "${assignment?}"; fi
        done <<<"$credentials"
        export VITRINE_METRICS_PORT="$((VITRINE_METRICS_BASE_PORT + offset))"
        exec setsid "$PYTHON" -m "$module" >>"$log" 2>&1 </dev/null 9>&-
    ) &
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
    if live_pid review >/dev/null; then
        say "review desk: http://$VITRINE_REVIEW_HOST:$VITRINE_REVIEW_PORT/"
    fi
    return "$failed"
}

cmd_down() {
    local pidfile name pid
    # The desk first: no approval is taken while the pipeline behind it stops.
    for pidfile in "$RUN_DIR"/review.pid "$RUN_DIR"/ingest.pid "$RUN_DIR"/inference-*.pid \
        "$RUN_DIR"/sink.pid "$RUN_DIR"/export.pid; do
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
    *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
