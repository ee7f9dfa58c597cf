#!/usr/bin/env bash
# The GPU run of bench/batch_bench.py, on the device machine (one NVIDIA GPU, no network).
# Prepared here by bench/gpu/prepare.sh; then one device call, carrying .gpu:
#
#   run(command="bash bench/gpu/run.sh", carry=[".gpu"], timeout_s=600)
#
# It builds llama-cpp-python with CUDA for this GPU only (sm_90 on an H100/H200; ~5 min on 16
# cores), writes the Gemma-270M-shaped model (bench/gpu/make_model.py), and runs the engine and
# raw-decode parts of the bench at N = 1..32 with every layer on the GPU.  Results: $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
ROOT=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site /tmp/build /tmp/models
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$ROOT
nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv | tee "$OUT/gpu.txt"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
tar -xzf .gpu/llama-cpp-python-src.tgz -C /tmp/build
started=$(date +%s)
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch -DLLAMA_CURL=off" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site \
  /tmp/build/llama_cpp_python-* > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "CUDA build: $(( $(date +%s) - started )) s"
python3 bench/gpu/make_model.py .gpu/gemma3-vocab.gguf /tmp/models
python3 bench/batch_bench.py --model /tmp/models/gemma270m-shaped-f32.gguf \
  --mmproj /tmp/models/gemma270m-shaped-mmproj.gguf --handler llava15 \
  --slots "${SLOTS:-1,2,4,8,16,32}" --cards-per-slot "${CARDS_PER_SLOT:-2}" \
  --max-tokens "${MAX_TOKENS:-512}" --n-gpu-layers -1 --json "$OUT/batch_bench_gpu.json" \
  2>&1 | grep -v '^llama\|^load\|^print_info\|^\s*$' | tee "$OUT/batch_bench_gpu.txt"
