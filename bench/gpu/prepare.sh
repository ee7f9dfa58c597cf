#!/usr/bin/env bash
# Prepare, on this machine, what the GPU run of bench/batch_bench.py carries to the device
# machine (nothing can be fetched there): .gpu/ (ignored by git), under 64 MiB.
#
#   bash bench/gpu/prepare.sh      # then, with the device tool: see bench/gpu/run.sh
#
#   .gpu/llama-cpp-python-src.tgz  llama-cpp-python's sdist without what a CUDA build never reads
#                                  (other backends, docs, models, tests, the git packs): ~5 MB
#   .gpu/whl/*.whl                 Python 3.12 wheels the device image lacks (KINDS.md)
#   .gpu/gemma3-vocab.gguf         the real Gemma 3 270M tokenizer alone (bench/gpu/make_model.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VERSION=$(.venv/bin/python -c "from importlib.metadata import version; print(version('llama-cpp-python'))")
SDIST=${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}/sdist/llama_cpp_python-$VERSION.tar.gz
MODEL=${VITRINE_CACHE_DIR:-$HOME/.cache/vitrine}/models/gemma-3-270m-q4_k_m.gguf
[ -f "$SDIST" ] || { echo "no $SDIST: run scripts/bootstrap.sh first" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "no $MODEL: run the test suite once (it installs the real weights)" >&2; exit 1; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl
work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT

tar -xzf "$SDIST" -C "$work"
src="$work/llama_cpp_python-$VERSION"
v="$src/vendor/llama.cpp"
rm -rf "$src"/{.git,.github,docs,examples,tests} "$v"/{.git,.github,models,docs,benches,tests,examples,media,gguf-py} \
  "$v"/tools/{ui,server} "$v"/tools/mtmd/test-3.mp4 \
  "$v"/ggml/src/ggml-{opencl,sycl,hexagon,vulkan,metal,webgpu,et,openvino}
tar -czf .gpu/llama-cpp-python-src.tgz -C "$work" "llama_cpp_python-$VERSION"

# exact versions of this checkout's environment, built for the device's Python 3.12
.venv/bin/pip freeze | grep -iE '^(llguidance|pydantic|pydantic[-_]core|pydantic[-_]settings|annotated[-_]types|typing[-_]inspection|python[-_]dotenv|gguf|diskcache)==' > "$work/req.txt"
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .gpu/whl -r "$work/req.txt"

.venv/bin/python - "$MODEL" .gpu/gemma3-vocab.gguf <<'PY'
import sys

import gguf

reader = gguf.GGUFReader(sys.argv[1])
writer = gguf.GGUFWriter(sys.argv[2], "llama")
for name, field in reader.fields.items():
    if name.startswith("tokenizer."):
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
PY
du -sh .gpu .gpu/*
