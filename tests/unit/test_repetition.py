"""The DRY penalty: which tokens would extend a repeat, and by how much."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.engine.repetition import DrySettings, NoRepeat, breaker_tokens

BREAK = 99


def dry(**kw: object) -> NoRepeat:
    return NoRepeat(DrySettings(**kw), frozenset({BREAK}))  # type: ignore[arg-type]


def test_a_token_that_would_extend_a_repeat_is_penalised_more_the_longer_it_is() -> None:
    # "1 2 3 4 ... 1 2 3" → 4 would make "1 2 3 4" twice
    pen = dry().penalties([1, 2, 3, 4, 7, 8, 1, 2, 3])
    assert set(pen) == {4}
    assert pen[4] == pytest.approx(0.8 * 1.75 ** (3 - 2))
    longer = dry().penalties([1, 2, 3, 4, 5, 7, 1, 2, 3, 4])[5]
    assert longer > pen[4]


def test_short_matches_and_fresh_text_are_free() -> None:
    assert dry().penalties([1, 2, 7, 8, 9, 2]) == {}  # only "2" repeats: below allowed_length
    assert dry().penalties(list(range(50))) == {}


def test_breakers_end_a_match() -> None:
    assert dry().penalties([1, BREAK, 3, 4, 7, 1, BREAK, 3]) == {}  # the match stops at BREAK
    assert dry().penalties([1, 2, 3, 4, 1, 2, BREAK]) == {}  # a breaker last: nothing to extend


def test_a_loop_of_one_token_is_penalised_and_apply_lowers_only_those_logits() -> None:
    logits = np.zeros(10, dtype=np.float32)
    dry().apply(logits, [5, 5, 5, 5])
    assert logits[5] < 0 and np.count_nonzero(logits) == 1


def test_breaker_tokens_are_those_with_newline_quote_colon_or_star() -> None:
    assert breaker_tokens([b"a", b'"', b"x:", b"\n\n", b"**", b"b c"]) == {1, 2, 3, 4}
