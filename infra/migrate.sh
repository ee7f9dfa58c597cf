#!/usr/bin/env bash
# Applies infra/migrations/*.sql to the database in $VITRINE_PG_DSN, in file-name order, each at
# most once. Every applied file is recorded in schema_migrations (name + sha256) inside the same
# transaction as the file itself, so a failing migration leaves neither changes nor a record.
#
# Naming: NNNN_short_description.sql (e.g. 0001_product_cards.sql); never edit an applied file,
# add a new one instead (an edited one is reported, not re-applied).
#
# Usage: infra/migrate.sh            (infra/stack up runs it; safe to run again at any time)
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
set -a
# shellcheck source-path=SCRIPTDIR source=dev.env
. "$INFRA_DIR/dev.env"
set +a
MIGRATIONS_DIR="${VITRINE_MIGRATIONS_DIR:-$INFRA_DIR/migrations}"

psql_run() {
    # -X: ignore ~/.psqlrc; ON_ERROR_STOP: a failing statement fails the whole run;
    # client_min_messages: no NOTICE chatter ("already exists, skipping").
    PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
        psql "$VITRINE_PG_DSN" -X -q -v ON_ERROR_STOP=1 "$@"
}

ensure_table() {
    psql_run -c "
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    text PRIMARY KEY,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"
}

applied_checksum() {
    psql_run -At -v v="$1" <<'SQL'
SELECT checksum FROM schema_migrations WHERE version = :'v'
SQL
}

apply_one() {
    local file="$1" version="$2" sum="$3"
    echo "migrate: applying $version"
    # One transaction (-1) around the file and its record.
    psql_run -1 -f "$file" -v v="$version" -v sum="$sum" -f - <<'SQL'
INSERT INTO schema_migrations (version, checksum) VALUES (:'v', :'sum');
SQL
}

main() {
    ensure_table
    shopt -s nullglob
    local file version sum recorded count=0
    for file in "$MIGRATIONS_DIR"/*.sql; do
        version="$(basename "$file")"
        sum="$(sha256sum "$file" | cut -d' ' -f1)"
        recorded="$(applied_checksum "$version")"
        if [[ -z "$recorded" ]]; then
            apply_one "$file" "$version" "$sum"
            count=$((count + 1))
        elif [[ "$recorded" != "$sum" ]]; then
            echo "migrate: WARNING $version changed after it was applied (not re-applied);" \
                 "add a new migration instead" >&2
        fi
    done
    echo "migrate: $count applied, database up to date"
}

main "$@"
