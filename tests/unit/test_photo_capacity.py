"""How many of a product's photos one generation holds: the arithmetic, without a model."""

from __future__ import annotations

from services.inference.engine.photo_capacity import PhotoCapacity

# Gemma 3 4B's preset: 256 tokens a photo, n_ctx 4096, the default 1,536-token card budget
GEMMA_4B = PhotoCapacity(n_ctx=4096, text_tokens=1750, photo_tokens=256, max_tokens=1536)


def test_what_fits_counts_the_instructions_the_photos_and_the_card_s_budget() -> None:
    assert GEMMA_4B.needed(3) == 1750 + 3 * 256 + 1536 == 4054
    assert GEMMA_4B.photos_fit == 3
    assert GEMMA_4B.short_of(3) is None


def test_a_product_over_it_names_the_context_and_the_photo_limit_that_fix_it() -> None:
    short = GEMMA_4B.short_of(6)
    assert short is not None
    assert "6 photos need 4822 tokens" in short and "has 4096" in short
    assert "VITRINE_N_CTX to 4822" in short and "VITRINE_PRODUCT_MAX_PHOTOS to 3" in short


def test_no_room_for_one_photo_is_zero_not_negative() -> None:
    tight = PhotoCapacity(n_ctx=2048, text_tokens=1750, photo_tokens=576, max_tokens=1536)
    assert tight.photos_fit == 0 and tight.short_of(1) is not None
    assert PhotoCapacity(n_ctx=4096, text_tokens=10, photo_tokens=0, max_tokens=10).photos_fit == 0
