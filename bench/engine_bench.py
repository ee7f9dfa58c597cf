"""Card engine benchmark on the tiny generated GGUF model (the real llama.cpp code path).

    python bench/engine_bench.py [--seeds 5] [--rounds 2] [--memory 200]

Reports, measured in the same run on the same model, image and prompt, with every decoding mode
run in turn for each seed (so load from other processes hits all modes alike):
1. cost per generated token (200-token budget) and its ratio to unconstrained decoding, for
   unconstrained (llama-cpp-python's loop, and vitrine's own decode loop without a grammar),
   the GBNF grammar sampler, llguidance masks only, and llguidance + fast-forward;
   forced (fast-forwarded) tokens are output tokens and count as generated;
2. the end-to-end time of one card attempt (full card budget), same modes;
3. RSS over many generations in one process (the mtmd/KV-cache leak check).

Random weights make the *content* meaningless but the compute real: the vocabulary is LLaMA's
32k pieces, so the grammar mask costs what it costs on a real 7B's sampler (the transformer itself
is tiny, which makes the grammar's share look larger than on a real model).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from services.inference.decoding import Decoder, GuidanceGrammar  # noqa: E402
from services.inference.engine import CardEngine  # noqa: E402
from services.inference.errors import GenerationError  # noqa: E402
from services.inference.model_files import resolve  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tiny_models import generate  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


THREADS = os.cpu_count() or 1


def engine(pair, **overrides) -> CardEngine:
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=4096,
        n_threads=THREADS,
        **overrides,
    )
    return CardEngine(resolve(settings), settings)


def photo() -> bytes:
    image = Image.new("RGB", (1200, 900), (240, 240, 240))
    image.paste((30, 60, 160), (300, 200, 900, 700))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


MODES: list[tuple[str, dict[str, object]]] = [
    ("unconstrained (llama-cpp-python loop)", {"grammar_backend": "none"}),
    ("unconstrained (vitrine decode loop)", {"grammar_backend": "none", "own_loop": True}),
    ("gbnf: llama.cpp grammar sampler", {"grammar_backend": "gbnf"}),
    ("llguidance, mask only", {"grammar_backend": "llguidance", "grammar_fast_forward": False}),
    ("llguidance + fast-forward (default)", {"grammar_backend": "llguidance"}),
]


def mode_engine(pair, max_tokens: int, spec: dict[str, object]) -> CardEngine:
    options = dict(spec)
    own_loop = bool(options.pop("own_loop", False))
    eng = engine(pair, max_tokens=max_tokens, max_attempts=1, **options)
    if own_loop:  # the decoder without a grammar: separates the loop's cost from the mask's
        eng.decoder = Decoder(eng.llm, None, fast_forward=False)
    return eng


def interleaved(pair, max_tokens: int, seeds: int, rounds: int) -> list[list[dict[str, float]]]:
    """One generation per mode in turn, per seed and round, so load noise hits every mode alike."""
    engines = [mode_engine(pair, max_tokens, spec) for _, spec in MODES]
    image = engines[0].prepare(photo())
    for eng in engines:
        eng.generate(image, seed=999)  # warm-up
    samples: list[list[dict[str, float]]] = [[] for _ in MODES]
    try:
        for _ in range(rounds):
            for seed in range(seeds):
                for i, eng in enumerate(engines):
                    started = time.perf_counter()
                    raw = eng.generate(image, seed=100 + seed)
                    wall_ms = (time.perf_counter() - started) * 1000.0
                    t = raw.timings
                    samples[i].append(
                        {
                            "wall_ms": wall_ms,
                            "generate_ms": t.generate_ms,
                            "ms_per_token": t.generate_ms / max(t.completion_tokens, 1),
                            "tokens": t.completion_tokens,
                            "forced": t.forced_tokens,
                            "mask_ms": t.mask_ms,
                            "prefill_ms": t.image_encode_ms + t.prompt_eval_ms,
                            "stop": float(raw.finish_reason == "stop"),
                        }
                    )
    finally:
        for eng in engines:
            eng.close()
    return samples


def setup_ms(pair) -> float:
    """What the llguidance backend adds to start-up, once per process."""
    eng = engine(pair, grammar_backend="none")
    try:
        started = time.perf_counter()
        GuidanceGrammar(eng.schema, eng.llm)
        return (time.perf_counter() - started) * 1000.0
    finally:
        eng.close()


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def memory(pair, n: int) -> list[tuple[int, float]]:
    eng = engine(pair, max_tokens=64, max_attempts=1)
    image = eng.prepare(photo())
    samples = []
    for i in range(1, n + 1):
        # 64 tokens cannot hold a card, so each ends truncated: the point is the allocations.
        with contextlib.suppress(GenerationError):
            eng.card_for_image(image, seed=i)
        if i in (1, 10, 20) or i % 50 == 0 or i == n:
            samples.append((i, rss_mb()))
    eng.close()
    return samples


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of the seed set")
    parser.add_argument("--threads", type=int, default=THREADS, help="llama.cpp CPU threads")
    parser.add_argument("--memory", type=int, default=200, help="generations (0 = skip)")
    parser.add_argument("--models", type=Path, default=Path("/tmp/vitrine-bench-models"))
    args = parser.parse_args()

    THREADS = args.threads
    pair = generate(args.models)["llava"]
    print(f"model: {pair.model.name} (32k LLaMA vocab, random weights)")
    print(f"cores: {os.cpu_count()}, llama.cpp threads: {THREADS}")

    print(f"seeds: {args.seeds} x rounds: {args.rounds}, modes interleaved; medians")
    print(f"llguidance set-up (tokenizer from the vocab + schema compile): {setup_ms(pair):.0f} ms")

    samples = interleaved(pair, 200, args.seeds, args.rounds)
    base = med(samples[0], "ms_per_token")
    own = med(samples[1], "ms_per_token")
    print("\n## Cost per generated token (200-token budget)\n")
    print("Forced (fast-forward) tokens are output tokens and count as generated.\n")
    print(
        "| decoding | ms/token | tokens/s | forced tokens | mask ms/token "
        "| vs unconstrained | vs unconstrained (same loop) |"
    )
    print("|---|---|---|---|---|---|---|")
    for (label, _), rows in zip(MODES, samples, strict=True):
        ms = med(rows, "ms_per_token")
        mask = statistics.median(r["mask_ms"] / max(r["tokens"], 1) for r in rows)
        print(
            f"| {label} | {ms:.3f} | {1000 / ms:.0f} | {med(rows, 'forced'):.0f} | {mask:.3f} "
            f"| {ms / base:.2f}x | {ms / own:.2f}x |"
        )

    samples = interleaved(pair, 1536, args.seeds, args.rounds)
    base_card = med(samples[0], "wall_ms")
    print("\n## One card attempt (full card budget: 1536 tokens), end to end\n")
    print(
        "| decoding | ms/attempt | vs unconstrained | tokens | forced | closed JSON "
        "| ms/token (generation) | prefill ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (label, _), rows in zip(MODES, samples, strict=True):
        wall = med(rows, "wall_ms")
        closed = sum(r["stop"] for r in rows)
        print(
            f"| {label} | {wall:.0f} | {wall / base_card:.2f}x | {med(rows, 'tokens'):.0f} "
            f"| {med(rows, 'forced'):.0f} | {closed:.0f}/{len(rows)} "
            f"| {med(rows, 'ms_per_token'):.3f} | {med(rows, 'prefill_ms'):.0f} |"
        )

    if args.memory:
        samples = memory(pair, args.memory)
        print(f"\n## RSS over {args.memory} card generations in one process\n")
        print("| after generation | RSS MB |")
        print("|---|---|")
        for i, mb in samples:
            print(f"| {i} | {mb:.1f} |")
        warm = dict(samples)[20] if 20 in dict(samples) else samples[0][1]
        print(f"\ngrowth after warm-up (20 → {samples[-1][0]}): {samples[-1][1] - warm:+.1f} MB")


if __name__ == "__main__":
    main()
