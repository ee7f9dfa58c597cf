"""CPU weight repacking: decode speed with repacking off, portable (CPU_REPACK only) and on.

    python bench/repack_bench.py [--modes off,portable] [--rounds 3] [--sequences 8]
                                 [--requantize Q4_0] [--model M]

What it answers (issue 23, item 5): on a CPU whose llama.cpp build has AMX kernels, ``on`` puts
quantized weights into the AMX buffer, whose kernels crashed; ``portable`` pins only the weights
x86 ``CPU_REPACK`` has a kernel for to that buffer (``services/inference/engine/repack.py``).
Is that worth being the default?  Per model and mode, in interleaved rounds (mode A, mode B, A,
B, ...) so drift hits both: prompt evaluation tokens/s (300 tokens), one sequence's greedy
decode tokens/s (128 tokens), and N sequences decoding together (64-token prompts, 64 steps),
the engine's shape.  Argmax decoding, no grammar: the kernels are what is measured.  The
tokens of each mode are compared with ``off``'s (a repacked kernel sums in another order, so a
difference is possible and said, not an error).

The real Gemma 3 270M "Q4_K_M" holds few Q4_K matrices (a 640-wide model: most of its
matrices are Q5_0, which no x86 repack kernel takes) and its 262k-entry output matrix is Q8_0,
so ``--requantize Q4_0`` also writes a copy whose every block matrix is Q4_0 (llama.cpp's
quantize through the bindings, from the Q4_K_M file: for speed, not quality) to show the
gain on a model made of the types repacking serves, as a 4B Q4_K_M is.

``on`` is never run where the build has AMX kernels unless named: it crashed there.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp
import numpy as np

from bench.self_test_bench import cpu_name  # one reader of the CPU's name
from services.inference.engine.native import RepackableLlama, build_features
from services.inference.engine.slot_view import TokenBatch

THREADS = 2
PROMPT = 300
DECODE = 128
SEQ_PROMPT = 64
SEQ_STEPS = 64
TEXT = (
    "Caneca de cerâmica azul, feita à mão, com alça larga e acabamento vitrificado. "
    "Describe the product in the photo for a marketplace listing: title, category, "
    "material, colour, condition, dimensions if visible, and three selling points. "
) * 20

FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}


def requantize(source: Path, kind: str, folder: Path) -> Path:
    out = folder / f"{source.stem}-requant-{kind.lower()}.gguf"
    if out.exists():
        return out
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.allow_requantize = True
    params.nthread = THREADS
    code = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if code != 0:
        raise SystemExit(f"llama_model_quantize failed ({code}) for {kind}")
    return out


def load(model: Path, mode: str, sequences: int, n_ctx: int) -> RepackableLlama:
    return RepackableLlama(
        model_path=str(model),
        n_ctx=n_ctx,
        sequences=sequences,
        n_batch=512,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        n_gpu_layers=0,
        verbose=False,
        swa_full=False,
        use_extra_bufts=mode == "on",
        portable_repack=mode == "portable",
    )


def run(batch: TokenBatch, ctx: object, items: list[tuple[int, int, int, bool]]) -> None:
    batch.clear()
    for token, pos, seq, logits in items:
        batch.add(token, pos, seq, logits)
    batch.decode(ctx)


def argmax(ctx: object, index: int, n_vocab: int) -> int:
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    return int(logits.argmax())


def one_sequence(model: Path, mode: str, prompt: list[int]) -> tuple[float, float, list[int]]:
    """Prompt evaluation and one sequence's decode, tokens/s, and the tokens."""
    llm = load(model, mode, 1, 1024)
    try:
        ctx, n_vocab = llm._ctx.ctx, llm.n_vocab()
        batch = TokenBatch(512)
        started = time.perf_counter()
        run(batch, ctx, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        prefilled = time.perf_counter()
        out = []
        for step in range(DECODE):
            token = argmax(ctx, -1, n_vocab)
            out.append(token)
            run(batch, ctx, [(token, len(prompt) + step, 0, True)])
        finished = time.perf_counter()
    finally:
        batch.close()
        llm.close()
    return len(prompt) / (prefilled - started), DECODE / (finished - prefilled), out


def many_sequences(
    model: Path, mode: str, prompt: list[int], n: int
) -> tuple[float, list[list[int]]]:
    """N sequences with different 64-token prompts decoding together: aggregate tokens/s."""
    llm = load(model, mode, n, n * (SEQ_PROMPT + SEQ_STEPS + 64))
    try:
        ctx, n_vocab = llm._ctx.ctx, llm.n_vocab()
        batch = TokenBatch(max(512, n * SEQ_PROMPT))
        items = []
        for s in range(n):
            tokens = [prompt[0], *prompt[1 + s * 8 : s * 8 + SEQ_PROMPT]]
            items += [(t, i, s, i == SEQ_PROMPT - 1) for i, t in enumerate(tokens)]
        run(batch, ctx, items)
        outs: list[list[int]] = [[] for _ in range(n)]
        started = time.perf_counter()
        for step in range(SEQ_STEPS):
            row = [(s + 1) * SEQ_PROMPT - 1 if step == 0 else s for s in range(n)]
            step_items = []
            for s in range(n):
                token = argmax(ctx, row[s], n_vocab)
                outs[s].append(token)
                step_items.append((token, SEQ_PROMPT + step, s, True))
            run(batch, ctx, step_items)
        finished = time.perf_counter()
    finally:
        batch.close()
        llm.close()
    return n * SEQ_STEPS / (finished - started), outs


def measure(model: Path, modes: list[str], rounds: int, n: int) -> dict[str, dict[str, object]]:
    probe = load(model, "off", 1, 512)
    prompt = probe.tokenize(TEXT.encode(), add_bos=True)[:PROMPT]
    probe.close()
    runs: dict[str, dict[str, list]] = {
        m: {"pp": [], "tg": [], "tgn": [], "tok": []} for m in modes
    }
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else list(reversed(modes)):
            pp, tg, tokens = one_sequence(model, mode, prompt)
            tgn, outs = many_sequences(model, mode, prompt, n)
            run = runs[mode]
            run["pp"].append(pp)
            run["tg"].append(tg)
            run["tgn"].append(tgn)
            run["tok"].append((tokens, outs))
            print(f"  round {r + 1} {mode}: pp {pp:.1f} tg {tg:.1f} tg x{n} {tgn:.1f}", flush=True)
    base = runs[modes[0]]["tok"][0]
    return {
        mode: {
            "prompt_tokens_per_s": statistics.median(run["pp"]),
            "decode_tokens_per_s": statistics.median(run["tg"]),
            f"decode_x{n}_tokens_per_s": statistics.median(run["tgn"]),
            "same_tokens_one": run["tok"][0][0] == base[0],
            f"same_tokens_x{n}": run["tok"][0][1] == base[1],
        }
        for mode, run in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="off,portable")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--requantize", default="Q4_0", help="also a requantized copy; '' none")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    modes = args.modes.split(",")
    amx = build_features().get("AMX_INT8") == "1"
    folder = Path(tempfile.gettempdir()) / "vitrine-repack-bench"
    folder.mkdir(exist_ok=True)
    if args.model is None:
        from tests.support.tiny_models import real_pair

        args.model = real_pair(folder)["llava"].model
    models = [args.model]
    if args.requantize:
        models.append(requantize(args.model, args.requantize, folder))
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores, AMX kernels in the build: {amx})")
    results = {}
    for model in models:
        print(f"\n{model.name}", flush=True)
        results[model.name] = measure(model, modes, args.rounds, args.sequences)
    n = args.sequences
    print(
        f"\n| model | mode | prompt tok/s | decode tok/s | x{n} decode tok/s | x{n} vs off "
        f"| same tokens (1 / x{n}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, per_mode in results.items():
        base = float(per_mode[modes[0]][f"decode_x{n}_tokens_per_s"])  # type: ignore[arg-type]
        for mode, r in per_mode.items():
            ratio = float(r[f"decode_x{n}_tokens_per_s"]) / base  # type: ignore[arg-type]
            print(
                f"| {name} | {mode} | {r['prompt_tokens_per_s']:.1f} | "
                f"{r['decode_tokens_per_s']:.1f} | {r[f'decode_x{n}_tokens_per_s']:.1f} | "
                f"{ratio:.2f}x | {r['same_tokens_one']} / {r[f'same_tokens_x{n}']} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "amx": amx, "results": results}))


if __name__ == "__main__":
    main()
