#!/usr/bin/env bash
# A headless browser for the review desk's browser tests (tests/test_review*.py, Playwright
# pointed at it through VITRINE_CHROMIUM): Debian's chromium and chromium-driver, installed with
# apt when missing (as root), like infra/stack installs Java and PostgreSQL. Playwright's own
# browser download is not used (its CDN is not reachable from every machine; Debian's mirror is).
#
#   infra/tools/browser.sh          install if missing, print the chromium executable's path
#
# A VITRINE_CHROMIUM already set to an executable is printed as it is (another Chromium build).
# scripts/test.sh runs it before pytest and exports VITRINE_CHROMIUM=<that path>.
set -euo pipefail

# fonts-liberation: Chromium only recommends fonts; without one, text has no metrics to lay out.
PACKAGES=(chromium chromium-driver fonts-liberation)

die() { echo "browser.sh: $*" >&2; exit 1; }

find_chromium() {
    local candidate
    for candidate in /usr/bin/chromium "$(command -v chromium 2>/dev/null || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            echo "$pkg"
    done
}

ensure_installed() {
    local missing
    command -v dpkg-query >/dev/null || {
        find_chromium >/dev/null && return 0
        die "no chromium found and no dpkg here: install Chromium and set VITRINE_CHROMIUM"
    }
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]}; install it (Debian package(s): ${missing[*]})"
    fi
    echo "browser.sh: installing Debian package(s): ${missing[*]}" >&2
    # Update the package lists only if they look absent (a fresh image ships without them).
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

if [[ -n "${VITRINE_CHROMIUM:-}" && -x "$VITRINE_CHROMIUM" ]]; then
    echo "$VITRINE_CHROMIUM"
    exit 0
fi
ensure_installed
find_chromium || die "chromium is installed but no executable was found (/usr/bin/chromium)"
