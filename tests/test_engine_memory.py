"""200 generations in one process must not grow memory without bound (mtmd context, KV cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import image_bytes, load_engine
from services.inference.errors import GenerationError

pytestmark = [pytest.mark.model, pytest.mark.slow]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_rss_is_flat_over_200_generations(tiny_pairs) -> None:
    engine = load_engine(tiny_pairs["llava"], max_tokens=64, max_attempts=1)
    try:
        image = engine.prepare(image_bytes("JPEG", size=(1024, 768)))
        samples = {}
        for i in range(1, 201):
            with pytest.raises(GenerationError):  # 64 tokens cannot hold a card: truncated
                engine.card_for_image(image, seed=i)
            if i in (20, 200):
                samples[i] = rss_mb()
    finally:
        engine.close()
    growth = samples[200] - samples[20]
    print(f"RSS after 20: {samples[20]:.1f} MB, after 200: {samples[200]:.1f} MB")
    assert growth < 50, f"RSS grew {growth:.1f} MB between generation 20 and 200"
