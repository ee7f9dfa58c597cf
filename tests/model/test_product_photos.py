"""A product's photos in one prompt: several images, consecutive, one card."""

from __future__ import annotations

import pytest

from services.inference.card.errors import ContextOverflow, GenerationError
from tests.support.engines import load_engine
from tests.support.images import photo

pytestmark = pytest.mark.model

RULES = {"colour_vocabulary": "enforce", "min_description_words": 20, "language_check": False}


@pytest.mark.parametrize(
    ("handler", "shared_prefix"),
    [("llava", False), ("mtmd", True)],
    ids=["llava-one-at-a-time", "mtmd-slots"],
)
def test_each_photo_adds_its_image_tokens_to_one_prompt(
    tiny_pairs, handler: str, shared_prefix: bool
) -> None:
    """Both handlers, the batched engine's slots and llama-cpp-python's own loop (the llava
    handler's slots are the product card test's below): three photos are one prompt whose
    text is the one photo's (the image chunks between)."""
    engine = load_engine(tiny_pairs[handler], shared_prefix=shared_prefix, max_tokens=64)
    try:
        photos = [engine.prepare(photo(i)) for i in range(3)]
        one = engine.generate(photos[0], seed=3)
        three = engine.generate(photos, seed=3)
        again = engine.generate(photos[0], seed=3)
        capacity = engine.photo_capacity()
    finally:
        engine.close()
    extra = three.timings.prompt_tokens - one.timings.prompt_tokens
    assert extra > 0 and extra % 2 == 0  # two more images of one encoder size
    assert three.timings.completion_tokens > 0
    assert again.text == one.text  # the slot's cells of three photos do not leak into one
    # the start-up count (libmtmd's tokenizer, no encoding) is what the prefill measured
    assert capacity.photo_tokens == extra // 2
    assert one.timings.prompt_tokens <= capacity.text_tokens + capacity.photo_tokens
    assert capacity.needed(3) - capacity.max_tokens >= three.timings.prompt_tokens


def test_a_product_over_what_the_context_holds_fails_before_its_prefill(tiny_pairs) -> None:
    """One generation's context sized for two photos: three fail ``context_overflow`` at once,
    naming the settings that fix it; one photo still makes its card."""
    probe = load_engine(tiny_pairs["mtmd"], max_tokens=64)
    try:
        capacity = probe.photo_capacity()
    finally:
        probe.close()
    engine = load_engine(tiny_pairs["mtmd"], max_tokens=64, n_ctx=capacity.needed(2))
    try:
        assert engine.photo_capacity().photos_fit == 2
        photos = [engine.prepare(photo(i)) for i in range(3)]
        with pytest.raises(ContextOverflow) as raised:
            engine.card_for_images(photos, seed=1)
        assert "VITRINE_N_CTX" in str(raised.value) and "PRODUCT_MAX_PHOTOS to 2" in str(
            raised.value
        )
        assert raised.value.timings is None  # refused before anything was evaluated
        assert engine.generate(photos[:2], seed=1).timings.prompt_tokens > 0
    finally:
        engine.close()


def test_a_product_card_reads_its_colour_from_the_main_photo(tiny_pairs) -> None:
    """The card is made from all the photos (or fails with a typed reason: random weights);
    the pixels' colour is the main photo's, not the first's; no photo is no card."""
    engine = load_engine(tiny_pairs["llava"], max_attempts=2, **RULES)
    try:
        photos = [engine.prepare(photo(i)) for i in range(3)]
        try:
            outcome = engine.card_for_images(photos, seed=5, main=1)
        except GenerationError as exc:
            assert exc.attempts
        else:
            assert outcome.checks is not None and outcome.checks.colour is not None
            estimate = outcome.checks.colour.estimate
            alone = engine.card_for_images([photos[1]], seed=5)
            assert alone.checks is not None and alone.checks.colour is not None
            assert alone.checks.colour.estimate == estimate
        with pytest.raises(ValueError):
            engine.card_for_images([])
    finally:
        engine.close()
