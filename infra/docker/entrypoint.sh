#!/usr/bin/env bash
# Entry point of the vitrine image: the first argument picks the process.
#
#   ingest | inference | sink     the pipeline services (python -m services.<name>)
#   review                        the review desk's web app (python -m services.review)
#   export                        the channels' feeds (python -m services.export)
#   setup                         one-shot provisioning: topics, bucket, users, roles, migrations
#   healthcheck [ARGS]            probe this container's /metrics (infra/docker/healthcheck.py)
#   /absolute/program [ARGS]      anything else in the image, e.g. /bin/bash, /usr/bin/psql
#   anything else                 the vitrine CLI: `models pull gemma-3-4b`, `card x.jpg`, ...
#
# VITRINE_ENTRYPOINT_DRY_RUN=1 prints the command instead of running it (tests/stack/test_compose.py
# checks with it that every command of docker-compose.yml reaches a real entry point).
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# docker-compose.yml passes every tunable as VAR: ${VAR:-}, so one left empty in .env arrives as
# an empty string. Unset means "the code's default"; empty would be a parse error (an int) or a
# wrong value (HF_ENDPOINT=""), so empty VITRINE_* and HF_* variables are dropped here.
while IFS= read -r name; do
    if [[ "$name" == VITRINE_* || "$name" == HF_* ]] && [[ -z "${!name}" ]]; then
        unset "$name"
    fi
done < <(compgen -e)

run() {
    if [[ "${VITRINE_ENTRYPOINT_DRY_RUN:-}" == 1 ]]; then
        printf '%s\n' "$@"
        exit 0
    fi
    exec "$@"
}

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

command="${1:-help}"
shift || true
case "$command" in
    ingest | inference | sink | review | export) run python -m "services.$command" "$@" ;;
    setup) run "$APP_DIR/infra/docker/setup.sh" "$@" ;;
    healthcheck) run python "$APP_DIR/infra/docker/healthcheck.py" "$@" ;;
    help | --help | -h) usage ;;
    /*) run "$command" "$@" ;;
    *) run vitrine "$command" "$@" ;;
esac
