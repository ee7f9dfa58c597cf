"""Where a batched step's time goes: llama.cpp's decodes against each sequence's sampling.

    python bench/step_profile.py [--slots 8] [--max-tokens 300]

The engine (defaults, real Gemma 3 270M weights with the generated projector) makes one card per
slot at once, after its shared prefix is built; the decodes (``TokenBatch.decode``), the
per-sequence steps (``Sequence.step``: mask, penalties, sampling) and, within those,
llama.cpp's own sampler (``llama_sampler_sample``) or the top-k shortlist's draw
(``Shortlist.sample``, the default) are timed by wrapping them.  Their shares of
the run's wall time say what separates the engine from a bare decode loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.engine import decoding, shortlist, slot_view  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tests.support.images import photo  # noqa: E402
from tests.support.tiny_models import real_pair  # noqa: E402

MODELS = Path("/tmp/vitrine-bench-models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=300)
    args = parser.parse_args()
    pair = real_pair(MODELS)["llava"]
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=4096,
        max_tokens=args.max_tokens,
        max_attempts=1,
        engine_parallel=args.slots,
        job_timeout_s=0,
    )
    engine = CardEngine(resolve(settings), settings)
    spent = {"decode": 0.0, "step": 0.0, "sampler": 0.0, "shortlist": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*a)
            finally:
                spent[name] += time.perf_counter() - started

        return wrapper

    slot_view.TokenBatch.decode = timed("decode", slot_view.TokenBatch.decode)  # type: ignore[method-assign]
    decoding.Sequence.step = timed("step", decoding.Sequence.step)  # type: ignore[method-assign]
    shortlist.Shortlist.sample = timed("shortlist", shortlist.Shortlist.sample)  # type: ignore[method-assign]
    decoding.llama_cpp.llama_sampler_sample = timed(  # type: ignore[attr-defined]
        "sampler", decoding.llama_cpp.llama_sampler_sample
    )
    try:
        engine.warm_prefix()
        images = [engine.prepare(photo(i)) for i in range(args.slots)]
        spent.update(
            decode=0.0, step=0.0, sampler=0.0, shortlist=0.0
        )  # the prefix's build is not the run
        started = time.perf_counter()
        with ThreadPoolExecutor(args.slots) as pool:
            got = list(pool.map(lambda i: engine.generate(images[i], seed=i), range(args.slots)))
        wall = time.perf_counter() - started
    finally:
        engine.close()
    tokens = sum(g.timings.completion_tokens for g in got)
    print(f"N={args.slots}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tok/s")
    for name in ("decode", "step", "sampler", "shortlist"):
        print(f"  {name:<8} {spent[name]:6.1f} s  {spent[name] / wall:5.1%} of the wall time")
    print(
        "  (step includes the sampler or the shortlist; the rest is prefill, images, the scheduler)"
    )


if __name__ == "__main__":
    main()
