"""Random weights in Gemma 3 270M's shapes, with its real 262k vocabulary, for the GPU bench.

    python bench/gpu/make_model.py VOCAB.gguf OUT_DIR

The real Q4_K_M file (253 MB) cannot travel to the device machine (64 MiB per call), so the GPU
run of ``bench/batch_bench.py`` uses a model of the same width, depth and vocabulary, written
there from random numbers (f32, llama architecture, ~1.1 GB) plus the generated projector:
what batching costs and gains depends on the shapes, not on what the weights say.  ``VOCAB.gguf``
is the real model's tokenizer alone (``bench/gpu/prepare.sh`` extracts it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from tests.support import tiny_models  # noqa: E402
from tests.support.tiny_models import TextDims, VisionDims, write_mmproj, write_text_model  # noqa: E402

GEMMA_270M = TextDims(n_embd=640, n_layer=18, n_head=4, n_ff=2048, n_ctx=32768)


def main() -> None:
    vocab, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    tiny_models.vocab_gguf = lambda: vocab  # the real tokenizer instead of the tiny one
    model, mmproj = out / "gemma270m-shaped-f32.gguf", out / "gemma270m-shaped-mmproj.gguf"
    write_text_model(model, chat_template=None, seed=0, dims=GEMMA_270M)
    write_mmproj(mmproj, text_n_embd=GEMMA_270M.n_embd, seed=1, dims=VisionDims())
    print(model, mmproj)


if __name__ == "__main__":
    main()
