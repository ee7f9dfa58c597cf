"""The decode-time word minimum: where the field starts and ends, how words count, the mask."""

from __future__ import annotations

import numpy as np

from services.inference.engine.word_minimum import WordMinimum, quote_tokens

PIECES = [b"a", b'"', b' "', b"x", b'\\"', b"}"]


def fed(text: str, minimum: int = 3) -> WordMinimum:
    words = WordMinimum("description_long", minimum, quote_tokens(PIECES))
    data = text.encode()
    for i in range(0, len(data), 3):  # token-sized pieces that cut keys and escapes anywhere
        words.feed(data[i : i + 3])
    return words


def test_quote_tokens_are_every_piece_with_a_quote() -> None:
    assert quote_tokens(PIECES).tolist() == [1, 2, 4]


def test_holds_only_inside_the_field_until_the_words_are_there() -> None:
    assert not fed('{"product_name": "Caneca azul de').holds()  # another field
    assert fed('{"product_name": "Caneca", "description_long": "Uma caneca').holds()
    assert not fed('{"a": "b", "description_long": "Uma caneca de').holds()  # 3 words
    assert not fed('{"description_long": "Uma", "color_primary": "azul').holds()  # closed


def test_words_count_as_the_checks_count_and_escapes_do_not_close() -> None:
    words = fed('{"description_long": "Caneca \\"azul\\"\\nde 350,5 ml — guarda-roupa', 10)
    assert words.holds() and words.words == 6
    assert not fed('{"description_long": "Caneca \\"azul\\" de cerâmica').holds()


def test_mask_hides_quote_tokens_unless_nothing_else_is_left() -> None:
    words = fed('{"description_long": "Uma')
    logits = np.zeros(len(PIECES), dtype=np.float32)
    words.mask(logits)
    assert np.isneginf(logits[[1, 2, 4]]).all() and np.isfinite(logits[[0, 3, 5]]).all()
    only_quotes = np.full(len(PIECES), -np.inf, dtype=np.float32)
    only_quotes[[1, 2]] = 1.0  # the character bound allows nothing but the closing quote
    words.mask(only_quotes)
    assert only_quotes[1] == 1.0 and only_quotes[2] == 1.0
