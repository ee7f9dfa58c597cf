"""Products: prompt tokens and seconds per card for 1, 3 and 6 photos, with and without the
shared prefix, on the real-weight pair.

    python bench/product_bench.py [--photos 1,3,6] [--rounds 2] [--max-tokens 256]

Issue 24, item 5.  One engine per variant (``VITRINE_SHARED_PREFIX`` on: the text before the
first photo copied from the prefix; off: every card prefills its whole prompt), each making
``--rounds`` generations per photo count from the same photos and seeds; per count: prompt
tokens, of them copied from the prefix, image encode ms, prompt evaluation ms, prefill ms
(the two together), generation seconds for ``--max-tokens`` output tokens, and the prefix's
saving (prefill without / with).  Timings are wall clock on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.self_test_bench import cpu_name  # one reader of the CPU's name
from services.inference.engine.card_engine import CardEngine
from services.inference.engine.model_files import resolve
from services.inference.settings import EngineSettings
from tests.support.images import photo
from tests.support.tiny_models import real_pair

MODELS = Path(os.environ.get("VITRINE_BENCH_MODELS", "/tmp/vitrine-bench-models"))


def measure(shared: bool, counts: list[int], rounds: int, max_tokens: int) -> dict[int, Any]:
    pair = real_pair(MODELS)["llava"]
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=8192,  # six photos of 256 image tokens and the prompt
        max_tokens=max_tokens,
        max_attempts=1,
        engine_parallel=1,
        shared_prefix=shared,
        job_timeout_s=0,
    )
    engine = CardEngine(resolve(settings), settings)
    engine.warm_prefix()
    try:
        photos = [engine.prepare(photo(i)) for i in range(max(counts))]
        found: dict[int, Any] = {}
        for n in counts:
            runs = [engine.generate(photos[:n], seed=r).timings for r in range(rounds)]
            found[n] = {
                "prompt_tokens": statistics.median(t.prompt_tokens for t in runs),
                "cached_tokens": statistics.median(t.cached_tokens for t in runs),
                "image_encode_ms": statistics.median(t.image_encode_ms for t in runs),
                "prompt_eval_ms": statistics.median(t.prompt_eval_ms for t in runs),
                "prefill_ms": statistics.median(t.image_encode_ms + t.prompt_eval_ms for t in runs),
                "generate_s": statistics.median(t.generate_ms / 1000 for t in runs),
                "completion_tokens": statistics.median(t.completion_tokens for t in runs),
            }
            print(f"  shared={shared} photos={n}: {found[n]}", flush=True)
        return found
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="1,3,6")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    counts = [int(n) for n in args.photos.split(",")]
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores)", flush=True)
    off = measure(False, counts, args.rounds, args.max_tokens)
    on = measure(True, counts, args.rounds, args.max_tokens)
    print(
        "\n| photos | prompt tokens (copied) | image encode ms | prefill ms, prefix shared | "
        "prefill ms, whole prompt | saving | generate s |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in counts:
        a, b = on[n], off[n]
        print(
            f"| {n} | {a['prompt_tokens']:.0f} ({a['cached_tokens']:.0f}) | "
            f"{a['image_encode_ms']:.0f} | {a['prefill_ms']:.0f} | {b['prefill_ms']:.0f} | "
            f"{b['prefill_ms'] / a['prefill_ms']:.1f}x | {a['generate_s']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "shared": on, "whole": off}))


if __name__ == "__main__":
    main()
