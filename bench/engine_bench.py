"""Card engine benchmark on the tiny generated GGUF model (the real llama.cpp code path).

    python bench/engine_bench.py [--seeds 5] [--memory 200]

Reports, measured in the same run on the same model, image and prompt:
1. cost per generated token: unconstrained vs grammar-constrained (200-token budget), as a ratio;
2. seconds per card attempt and tokens/s with the full card budget, both modes;
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


def engine(pair, **overrides) -> CardEngine:
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=4096,
        n_threads=os.cpu_count() or 1,
        **overrides,
    )
    return CardEngine(resolve(settings), settings)


def photo() -> bytes:
    image = Image.new("RGB", (1200, 900), (240, 240, 240))
    image.paste((30, 60, 160), (300, 200, 900, 700))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def per_token(eng: CardEngine, seeds: int) -> tuple[float, float, int]:
    """Median ms per generated token, median tokens/s, total tokens."""
    image = eng.prepare(photo())
    eng.generate(image, seed=999)  # warm-up
    ms, tps, tokens = [], [], 0
    for seed in range(seeds):
        t = eng.generate(image, seed=seed).timings
        ms.append(t.generate_ms / max(t.completion_tokens, 1))
        tps.append(t.tokens_per_s)
        tokens += t.completion_tokens
    return statistics.median(ms), statistics.median(tps), tokens


def per_card(eng: CardEngine, seeds: int) -> tuple[float, float, float]:
    """Median seconds per attempt, tokens per attempt, prefill ms (image + prompt)."""
    image = eng.prepare(photo())
    secs, toks, prefill = [], [], []
    for seed in range(seeds):
        started = time.perf_counter()
        t = eng.generate(image, seed=100 + seed).timings
        secs.append(time.perf_counter() - started)
        toks.append(t.completion_tokens)
        prefill.append(t.image_encode_ms + t.prompt_eval_ms)
    return statistics.median(secs), statistics.median(toks), statistics.median(prefill)


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--memory", type=int, default=200, help="generations (0 = skip)")
    parser.add_argument("--models", type=Path, default=Path("/tmp/vitrine-bench-models"))
    args = parser.parse_args()

    pair = generate(args.models)["llava"]
    print(f"model: {pair.model.name} (32k LLaMA vocab, random weights); cores: {os.cpu_count()}")

    rows = []
    for label, backend in (("unconstrained", "none"), ("llama.cpp GBNF grammar", "llama")):
        eng = engine(pair, grammar_backend=backend, max_tokens=200, max_attempts=1)
        ms, tps, tokens = per_token(eng, args.seeds)
        eng.close()
        rows.append((label, ms, tps, tokens))
    base = rows[0][1]
    print("\n## Cost per generated token (200-token budget, median of seeds)\n")
    print("| decoding | ms/token | tokens/s | vs unconstrained |")
    print("|---|---|---|---|")
    for label, ms, tps, _ in rows:
        print(f"| {label} | {ms:.2f} | {tps:.0f} | {ms / base:.2f}x |")

    print("\n## One card attempt (full card budget: 1536 tokens)\n")
    print("| decoding | s/attempt | tokens | tokens/s | prefill ms (image+prompt) |")
    print("|---|---|---|---|---|")
    for label, backend in (("unconstrained", "none"), ("llama.cpp GBNF grammar", "llama")):
        eng = engine(pair, grammar_backend=backend, max_tokens=1536, max_attempts=1)
        eng.generate(eng.prepare(photo()), seed=999)  # warm-up
        secs, toks, prefill = per_card(eng, args.seeds)
        eng.close()
        print(f"| {label} | {secs:.2f} | {toks:.0f} | {toks / secs:.0f} | {prefill:.0f} |")

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
