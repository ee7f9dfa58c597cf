"""200 generations in one process must not grow memory without bound (mtmd context, KV cache).

Both chat handlers: ``llava15`` and the generic ``mtmd`` one (the suspect in issue 6 §4), each
fed different images so every generation creates and frees its own mtmd bitmap and chunks.
``bench/memory_bench.py`` runs the same check over 500 cards and reports the numbers.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import load_engine
from services.inference.card.errors import GenerationError

pytestmark = [pytest.mark.model, pytest.mark.slow]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def photo(i: int) -> bytes:
    """Image ``i`` of a small varied set: its own size, colours and shape."""
    width, height = 640 + 96 * (i % 5), 480 + 64 * (i % 3)
    image = Image.new(
        "RGB", (width, height), (20 * (i % 13), 255 - 17 * (i % 11), 40 + 9 * i % 200)
    )
    ImageDraw.Draw(image).ellipse(
        (width // 5, height // 4, width * 3 // 4, height * 4 // 5),
        fill=(250 - 23 * (i % 7), 30 * (i % 9), 60),
    )
    buf = io.BytesIO()
    image.save(buf, "JPEG" if i % 2 else "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("pair", ["llava", "mtmd"])
def test_rss_is_flat_over_200_generations(tiny_pairs, pair: str) -> None:
    engine = load_engine(tiny_pairs[pair], max_tokens=64, max_attempts=1)
    try:
        images = [engine.prepare(photo(i)) for i in range(10)]
        samples = {}
        for i in range(1, 201):
            with pytest.raises(GenerationError):  # 64 tokens cannot hold a card: truncated
                engine.card_for_image(images[i % len(images)], seed=i)
            if i in (20, 200):
                samples[i] = rss_mb()
    finally:
        engine.close()
    growth = samples[200] - samples[20]
    print(f"{pair}: RSS after 20: {samples[20]:.1f} MB, after 200: {samples[200]:.1f} MB")
    assert growth < 50, f"RSS grew {growth:.1f} MB between generation 20 and 200"
