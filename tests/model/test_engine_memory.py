"""120 generations in one process must not grow memory without bound (mtmd context, KV cache).

Both chat handlers: ``llava15`` and the generic ``mtmd`` one (the suspect in issue 6 §4), each
fed different images so every generation creates and frees its own mtmd bitmap and chunks.
``bench/memory_bench.py`` runs the same check over 500 cards and reports the numbers.
"""

from __future__ import annotations

import pytest

from services.inference.card.errors import GenerationError
from tests.support.engines import load_engine
from tests.support.images import photo
from tests.support.rss import rss_mb

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.mark.parametrize("pair", ["llava", "mtmd"])
def test_rss_is_flat_over_120_generations(tiny_pairs, pair: str) -> None:
    engine = load_engine(tiny_pairs[pair], max_tokens=64, max_attempts=1)
    try:
        images = [engine.prepare(photo(i)) for i in range(10)]
        samples = {}
        for i in range(1, 121):
            with pytest.raises(GenerationError):  # 64 tokens cannot hold a card: truncated
                engine.card_for_image(images[i % len(images)], seed=i)
            if i in (20, 120):
                samples[i] = rss_mb()
    finally:
        engine.close()
    growth = samples[120] - samples[20]
    print(f"{pair}: RSS after 20: {samples[20]:.1f} MB, after 120: {samples[120]:.1f} MB")
    # 30 MB over 100 generations: a leaked bitmap (0.6 MB) or chunk list per generation shows
    assert growth < 30, f"RSS grew {growth:.1f} MB between generation 20 and 120"
