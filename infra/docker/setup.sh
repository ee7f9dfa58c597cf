#!/usr/bin/env bash
# One-shot setup of a compose deployment (the `setup` service of docker-compose.yml); safe to run
# again at any time, every step is idempotent. The same steps as the native stack's `up`, with
# the same tools: infra/provision.py for Kafka and MinIO, infra/migrate.sh for the schema.
#
#   1. Kafka answers; topics exist with their partition counts
#   2. the bucket exists and sends its events to Kafka (the MinIO container names the target)
#   3. the services' MinIO users and their policies: inference (read-only), the review desk's
#      reader and its put-only upload user
#   4. PostgreSQL: owner role, database, the sink's, the reader's and the review desk's roles
#      (infra/roles.sql, as the superuser)
#   5. migrations, as the owner role
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$APP_DIR"

# Defaults for what docker-compose.yml does not set (partition counts, the MinIO target name,
# timeouts). dev.env only assigns unset variables, so everything compose passes wins; compose
# passes every address and credential, so none of dev.env's 127.0.0.1 ones is used.
set -a
# shellcheck source=../dev.env
. "$APP_DIR/infra/dev.env"
set +a

: "${VITRINE_PG_ADMIN_DSN:?set by docker-compose.yml: the superuser DSN of the postgres service}"

say() { echo "setup: $*"; }

say "kafka at $VITRINE_KAFKA_BOOTSTRAP"
python infra/provision.py kafka-ready
python infra/provision.py topics
say "minio at $VITRINE_S3_ENDPOINT, bucket $VITRINE_BUCKET"
python infra/provision.py bucket
python infra/provision.py minio-users
say "postgres: roles and database $VITRINE_PG_DB"
PGOPTIONS="-c client_min_messages=warning" psql "$VITRINE_PG_ADMIN_DSN" -X -q -v ON_ERROR_STOP=1 \
    -v user="$VITRINE_PG_USER" -v pw="$VITRINE_PG_PASSWORD" -v db="$VITRINE_PG_DB" \
    -v sink_pw="$VITRINE_SINK_PG_PASSWORD" -v reader_pw="$VITRINE_READER_PG_PASSWORD" \
    -v review_pw="$VITRINE_REVIEW_PG_PASSWORD" -f infra/roles.sql
infra/migrate.sh
say "done"
