#!/usr/bin/env bash
# The Docker Compose CLI, pinned, for checking docker-compose.yml where no Docker Engine (and no
# compose plugin) is installed — e.g. CI. `docker compose config` parses, interpolates and
# validates the file against the Compose specification without talking to an engine.
#
#   infra/tools/compose.sh path        build it if missing, print the binary's path
#   infra/tools/compose.sh ARGS...     run it: infra/tools/compose.sh config --quiet
#
# Built once from the Go module proxy (several minutes on 2 cores) and cached
# in $VITRINE_CACHE_DIR/compose/<version>/ (default ~/.cache/vitrine), like MinIO in infra/stack.
# A failed build is remembered in <binary>.failed and not retried (delete it to retry), so a
# machine without Go pays the cost once, not on every test run.
set -euo pipefail

# v5.6.0 is the newest release whose go.mod accepts the Go here (1.26.8); v5.7.0 wants 1.26.10.
VERSION="${VITRINE_COMPOSE_VERSION:-v5.6.0}"
MODULE="github.com/docker/compose/v5"
CACHE="${VITRINE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vitrine}"
BIN="$CACHE/compose/$VERSION/docker-compose"

die() { echo "compose.sh: $*" >&2; exit 1; }

go_cmd() {
    command -v go 2>/dev/null || { [[ -x /usr/local/go/bin/go ]] && echo /usr/local/go/bin/go; }
}

install() {
    [[ -x "$BIN" ]] && return 0
    [[ -f "$BIN.failed" ]] && die "an earlier build failed (log: $BIN.failed); delete it to retry"
    local go tmp
    go="$(go_cmd)" || die "Go is needed to build docker compose $VERSION (go 1.26 or newer)"
    tmp="$BIN.tmp.$$"
    mkdir -p "$tmp"
    echo "compose.sh: building docker compose $VERSION from the Go module proxy (first time only)" >&2
    # Not `go install MODULE/cmd@VERSION`: compose's go.mod has exclude directives, which `go
    # install pkg@version` refuses. So: download the module, build ./cmd inside it as the main
    # module (what its own Makefile does). nice: the build is long and must not starve whatever
    # else runs on a small machine.
    if ! (
        set -e
        dir="$("$go" mod download -json "$MODULE@$VERSION" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        [[ -n "$dir" ]]
        cd "$dir"
        CGO_ENABLED=0 nice -n 10 "$go" build -trimpath \
            -ldflags "-s -w -X $MODULE/internal.Version=$VERSION" -o "$tmp/docker-compose" ./cmd
    ) >"$tmp.log" 2>&1; then
        mv "$tmp.log" "$BIN.failed"
        rm -rf "$tmp"
        die "building $MODULE@$VERSION failed (log: $BIN.failed)"
    fi
    mv "$tmp/docker-compose" "$BIN"
    rm -rf "$tmp" "$tmp.log"
}

case "${1:-}" in
    path) install; echo "$BIN" ;;
    "") sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
    *) install; exec "$BIN" "$@" ;;
esac
