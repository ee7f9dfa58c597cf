#!/usr/bin/env bash
# Create .venv with vitrine and its dependencies; idempotent and fast on a second run.
#
# llama-cpp-python compiles llama.cpp from source (minutes on 2 cores), so the wheel is built once
# and cached outside the repo, keyed by version and CMAKE_ARGS (a CUDA build is a different wheel):
#   CPU:   bash scripts/bootstrap.sh
#   CUDA:  CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)"
CMAKE_ARGS="${CMAKE_ARGS:-}"
FLAVOUR="$(printf '%s' "$CMAKE_ARGS" | sha256sum | cut -c1-8)"
WHEELS="$CACHE/wheels/$FLAVOUR"
STAMP=".venv/.vitrine-deps"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi

# One sdist download serves both the build and the tests' tiny-model vocabulary.
SDIST="$CACHE/sdist/llama_cpp_python-$LLAMA_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  log "downloading llama-cpp-python $LLAMA_VERSION source"
  .venv/bin/pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_VERSION" -d "$CACHE/sdist"
fi

WHEEL="$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$WHEEL" ]; then
  log "building llama-cpp-python $LLAMA_VERSION (CMAKE_ARGS='$CMAKE_ARGS'); takes minutes, once"
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/pip wheel --quiet --no-deps "$SDIST" -w "$WHEELS"
  WHEEL="$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)"
fi

WANT="$(cat pyproject.toml "$0" | sha256sum | cut -c1-16) $WHEEL"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  log "installing dependencies"
  .venv/bin/pip install --quiet "$WHEEL"
  .venv/bin/pip install --quiet -e ".[dev]"
  printf '%s' "$WANT" > "$STAMP"
fi
log "ready: $(.venv/bin/python -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)')"
