"""A closed engine refuses, and closing one stops the generations running in it.

The worker closes its engine on shutdown while an engine thread may still be in a generation,
or between two attempts of one card.  Before the engine had a closed state, such a thread went
on into the freed llama.cpp context (a native crash), and the close itself waited for the
running generation to finish (up to the job's budget).  Here every decode is slowed down, so
that the close lands in the middle of a generation on both paths: one at a time (parallel 1)
and the batched slots (parallel 2).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as llama_cpp_module
import pytest

from services.inference.card.errors import EngineClosed
from services.inference.engine.card_engine import CardEngine
from tests.support.engines import load_engine
from tests.support.images import image_bytes

pytestmark = pytest.mark.model

DECODE_DELAY_S = 0.05
"""Added before each llama_decode: a card's few hundred decodes then take many seconds."""


class SlowDecodes:
    """Every ``llama_decode`` slowed down; records the first one and any made after the
    engine's model was freed (which must never happen)."""

    def __init__(self, engine: CardEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        self.started = threading.Event()
        self.after_close: list[float] = []
        real = llama_cpp_module.llama_decode

        def slow_decode(ctx: Any, batch: Any) -> int:
            if engine._closed:
                self.after_close.append(time.monotonic())
            self.started.set()
            time.sleep(DECODE_DELAY_S)
            return int(real(ctx, batch))

        # the one-at-a-time path decodes through llama_cpp._internals (the module's name), the
        # slots through the package's re-export
        monkeypatch.setattr(llama_cpp_module, "llama_decode", slow_decode)
        monkeypatch.setattr(llama_cpp, "llama_decode", slow_decode)


@pytest.fixture(params=[1, 2], ids=["alone", "slots"])
def engine(request: pytest.FixtureRequest, tiny_pairs) -> Iterator[CardEngine]:
    engine = load_engine(tiny_pairs["llava"], engine_parallel=request.param, max_attempts=3)
    yield engine
    engine.close()


def test_a_closed_engine_refuses_every_call_with_a_typed_error(engine: CardEngine) -> None:
    image = engine.prepare(image_bytes("JPEG"))
    engine.close()
    engine.close()  # once only: a second close is nothing
    assert engine.closed
    with pytest.raises(EngineClosed):
        engine.card_for_bytes(image_bytes("JPEG"))
    with pytest.raises(EngineClosed):
        engine.card_for_image(image)
    with pytest.raises(EngineClosed):
        engine.generate(image, seed=1)


def test_closing_mid_generation_stops_it_and_nothing_reaches_the_freed_model(
    engine: CardEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close ends the running generation at its next decode (the abort callback), the
    card's caller gets ``EngineClosed`` rather than a retry, and no decode runs once the
    model is freed."""
    image = engine.prepare(image_bytes("JPEG"))
    decodes = SlowDecodes(engine, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        card = pool.submit(engine.card_for_image, image)
        assert decodes.started.wait(60), "no generation started"
        engine.close()
        with pytest.raises(EngineClosed):
            card.result(timeout=120)
    assert decodes.after_close == []
