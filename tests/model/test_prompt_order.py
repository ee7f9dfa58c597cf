"""The prompt order reaches the model as set, through both kinds of chat handler the engine uses.

What is checked is the text each handler really hands to libmtmd's tokenizer (``mtmd_tokenize``,
recorded on the engine's ``TimedMtmd``), with the media marker where the image's embeddings go:
LLaVA-1.5's built-in template prints every image of a turn before its text, so the order of the
content list alone would not decide it; the generic handler renders the model's chat template.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp.mtmd_cpp as mtmd_cpp
import pytest

from services.inference.card.prompt import PromptOrder
from services.inference.engine.card_engine import CardEngine
from tests.support.engines import load_engine, tiny_settings
from tests.support.images import image_bytes
from tests.support.tiny_models import TinyPair

pytestmark = pytest.mark.model

MARKER = mtmd_cpp.mtmd_default_marker().decode("utf-8")
PAIRS = ("llava", "mtmd")
ORDERS: tuple[PromptOrder, ...] = ("instructions_first", "image_first")
Tapped = tuple[CardEngine, "TokenizerTap", PromptOrder]


class TokenizerTap:
    """Records the text of every ``mtmd_tokenize`` call, then tokenizes it as usual."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, ctx: Any, chunks: Any, text_ref: Any, *rest: Any) -> Any:
        # the field reads the handler's own buffer (alive for this call), cut to its length
        given = text_ref._obj
        self.texts.append(given.text[: given.text_len].decode("utf-8"))
        return mtmd_cpp.mtmd_tokenize(ctx, chunks, text_ref, *rest)


def open_engine(pair: TinyPair, order: PromptOrder) -> tuple[CardEngine, TokenizerTap]:
    engine = load_engine(
        pair,
        prompt_order=order,
        language="en",
        # what lets random weights pass every check (test_engine.py's reachable rules)
        colour_vocabulary="enforce",
        min_description_words=20,
        language_check=False,
    )
    tap = TokenizerTap()
    engine._mtmd.mtmd_tokenize = tap  # type: ignore[attr-defined]
    return engine, tap


@pytest.fixture(scope="module", params=[(p, o) for p in PAIRS for o in ORDERS], ids=str)
def tapped(request: pytest.FixtureRequest, tiny_pairs: dict[str, TinyPair]) -> Iterator[Tapped]:
    name, order = request.param
    engine, tap = open_engine(tiny_pairs[name], order)
    yield engine, tap, order
    engine.close()


def rendered(engine: CardEngine, tap: TokenizerTap, photo: bytes, **kwargs: Any) -> str:
    tap.texts.clear()
    engine.generate(engine.prepare(photo), seed=5, **kwargs)
    assert len(tap.texts) == 1
    return tap.texts[0]


def test_the_handler_renders_the_set_order(tapped: Tapped) -> None:
    engine, tap, order = tapped
    text = rendered(engine, tap, image_bytes("JPEG"))
    assert text.count(MARKER) == 1
    before, after = text.split(MARKER)
    prompt = engine.prompt
    assert prompt.system in before
    if order == "instructions_first":
        assert prompt.instructions.strip() in before
        assert after.lstrip().startswith(prompt.template.task)
        assert "Fields:" not in after and "description_long" not in after
        assert len(after) < len(prompt.template.task) + 40  # the task and the turn's marks
    else:
        assert "Fields:" not in before
        assert prompt.instructions.strip() in after


def test_the_text_before_the_image_is_shared_by_every_card_and_retry(tapped: Tapped) -> None:
    engine, tap, order = tapped
    first = rendered(engine, tap, image_bytes("JPEG"))
    other = rendered(engine, tap, image_bytes("PNG", "RGBA"))
    retry = rendered(engine, tap, image_bytes("JPEG"), retry_problems=["not JSON"])
    prefix = first.split(MARKER)[0]
    assert other.split(MARKER)[0].encode() == prefix.encode()
    assert retry.split(MARKER)[0].encode() == prefix.encode()
    note = engine.prompt.template.retry_note.format(problems="not JSON").strip()
    after = retry.split(MARKER)[1]
    assert note in after and note not in first
    if order == "instructions_first":
        assert after.index(engine.prompt.template.task) < after.index(note)


def test_a_card_is_still_produced_and_records_the_order(tapped: Tapped) -> None:
    engine, _, _ = tapped
    outcome = engine.card_for_bytes(image_bytes("JPEG"), seed=3)
    assert outcome.card.color_primary
    assert outcome.prompt_version == engine.prompt.version


def test_the_two_orders_record_different_versions(tiny_pairs: dict[str, TinyPair]) -> None:
    versions = {
        order: tiny_settings(tiny_pairs["llava"], prompt_order=order).prompt({"properties": {}})
        for order in ORDERS
    }
    assert versions["instructions_first"].version != versions["image_first"].version
