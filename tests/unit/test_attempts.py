"""The retry policy (``card/attempts.py``) without a model: each attempt's outcome is given, and
the test reads the decision (another attempt with which seed and notes, this card, this error).

The same decisions through a loaded engine, generations scripted, are in ``test_engine.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from schemas.card import ProductCard, generation_schema, parse_generated
from schemas.language import PT_BR
from schemas.messages import Timings
from services.inference.card.attempts import (
    AttemptPolicy,
    AttemptRules,
    Fail,
    Keep,
    Parsed,
    Retry,
)
from services.inference.card.errors import (
    InvalidOutput,
    SemanticCheckFailed,
    TruncatedOutput,
)
from services.inference.settings import EngineSettings
from tests.support.card_text import card_text

SETTINGS = EngineSettings()
PROMPT = SETTINGS.prompt(generation_schema(SETTINGS.card_type()))
CARD_TYPE = SETTINGS.card_type(word_pattern=False)
ATTEMPT = Timings(generate_ms=10, completion_tokens=5)
"""What each attempt costs here."""
REPEATED = ["Haste articulada", "haste articulada!", "Luz LED econômica"]
"""Selling points only a check tells apart: the grammar allows them, ``features_distinct`` not."""


def card(**overrides: object) -> ProductCard:
    return parse_generated(card_text(**overrides), CARD_TYPE)


def policy(colour: str = "off", max_attempts: int = 3, seed: int = 10) -> AttemptPolicy:
    rules = AttemptRules(
        max_attempts=max_attempts,
        colour=colour,  # type: ignore[arg-type]
        profile=PT_BR,
        min_words=SETTINGS.min_description_words,
        language=True,
        instructions=f"{PROMPT.system}\n{PROMPT.user}",
        prompt=PROMPT,
        model_id="tiny.gguf",
        card_type=CARD_TYPE,
    )
    return AttemptPolicy(rules, base_seed=seed, preprocess_ms=4.0)


def checked(p: AttemptPolicy, c: ProductCard, colour: Verdict | None = None) -> Parsed:
    """The attempt's outcome as the engine hands it over: the policy's own checks, and the
    pixels' verdict only for a card that broke none."""
    broken = p.check(c)
    return Parsed(c, broken, None if broken else colour)


@dataclass(frozen=True)
class Verdict:
    """What ``pixel_colour.check_colour`` answers, as plain data."""

    model: str
    estimate: str
    distance: float
    agrees: bool
    checkable: bool = True


RED = "vermelho"


def disputed(model: str = "branco") -> Verdict:
    return Verdict(model, RED, 42.123, agrees=False)


def agreeing(model: str = RED) -> Verdict:
    return Verdict(model, RED, 3.456, agrees=True)


# -- cards and content checks ------------------------------------------------------------------


def test_the_first_attempt_has_the_base_seed_and_no_notes() -> None:
    assert policy(seed=7).first() == Retry(1, 7, None)


def test_a_first_attempt_that_passes_is_kept_with_what_it_cost() -> None:
    p = policy()
    decision = p.decide(ATTEMPT, checked(p, card()))
    assert isinstance(decision, Keep)
    outcome = decision.outcome
    assert (outcome.attempts, outcome.seed, outcome.failures) == (1, 10, [])
    assert outcome.card == card() and outcome.checks is None
    assert (outcome.model_id, outcome.prompt_version) == ("tiny.gguf", PROMPT.version)
    assert outcome.timings.preprocess_ms == 4.0 and outcome.timings.generate_ms == 10


def test_a_broken_rule_retries_with_the_next_seed_and_the_checks_note() -> None:
    p = policy()
    result = checked(p, card(features_list=REPEATED))
    assert [b.check for b in result.broken] == ["features_distinct"]
    decision = p.decide(ATTEMPT, result)
    detail = result.broken[0].detail
    assert decision == Retry(2, 11, [PROMPT.correction("features_distinct", detail)])
    assert "diferentes" in decision.problems[0]  # the note says what to do
    assert [(f.attempt, f.reason, f.checks) for f in p.failures] == [
        (1, "semantic_check", ("features_distinct",))
    ]


def test_a_retry_that_passes_is_kept_with_its_seed_and_the_failures_before_it() -> None:
    p = policy()
    p.decide(ATTEMPT, checked(p, card(features_list=REPEATED)))
    decision = p.decide(ATTEMPT, checked(p, card()))
    assert isinstance(decision, Keep)
    assert (decision.outcome.attempts, decision.outcome.seed) == (2, 11)
    assert [f.reason for f in decision.outcome.failures] == ["semantic_check"]
    assert decision.outcome.timings.generate_ms == 20


def test_an_exhausted_budget_fails_with_the_last_checks_and_every_attempt() -> None:
    p = policy()
    decisions = [p.decide(ATTEMPT, checked(p, card(features_list=REPEATED))) for _ in range(3)]
    assert [type(d) for d in decisions] == [Retry, Retry, Fail]
    assert [d.seed for d in decisions[:2] if isinstance(d, Retry)] == [11, 12]
    error = decisions[2].error  # type: ignore[union-attr]
    assert type(error) is SemanticCheckFailed and error.checks == ["features_distinct"]
    assert [(a.attempt, a.checks) for a in error.attempts] == [
        (n, ("features_distinct",)) for n in (1, 2, 3)
    ]
    assert str(error).startswith("no acceptable card after 3 attempt(s); last: ")
    assert error.timings is not None
    assert error.timings.generate_ms == 30 and error.timings.completion_tokens == 15
    assert error.timings.preprocess_ms == 4.0


def test_truncated_and_invalid_output_retry_with_their_notes() -> None:
    p = policy()
    cut = TruncatedOutput("generation hit max_tokens=64 before the JSON closed")
    first = p.decide(ATTEMPT, cut)
    assert first == Retry(2, 11, [PROMPT.correction("truncated", str(cut))])
    bad = InvalidOutput("output does not match the card schema at x: y")
    assert p.decide(ATTEMPT, bad) == Retry(3, 12, [PROMPT.correction("invalid_output", str(bad))])
    last = p.decide(ATTEMPT, bad)
    assert isinstance(last, Fail) and type(last.error) is InvalidOutput
    assert [a.reason for a in last.error.attempts] == [
        "truncated",
        "invalid_output",
        "invalid_output",
    ]
    assert [a.detail for a in last.error.attempts] == [str(cut), str(bad), str(bad)]


def test_the_final_error_is_the_last_attempts_kind() -> None:
    p = policy(max_attempts=2)
    p.decide(ATTEMPT, checked(p, card(features_list=REPEATED)))
    last = p.decide(ATTEMPT, TruncatedOutput("cut"))
    assert isinstance(last, Fail) and type(last.error) is TruncatedOutput
    assert [a.reason for a in last.error.attempts] == ["semantic_check", "truncated"]


def test_a_budget_of_one_is_no_retry() -> None:
    p = policy(max_attempts=1)
    decision = p.decide(ATTEMPT, TruncatedOutput("cut"))
    assert isinstance(decision, Fail) and len(decision.error.attempts) == 1


# -- the colour policy ----------------------------------------------------------------------


def test_off_asks_for_no_colour_and_records_none() -> None:
    p = policy("off")
    assert not p.checks_colour
    decision = p.decide(ATTEMPT, Parsed(card(), (), disputed()))
    assert isinstance(decision, Keep) and decision.outcome.checks is None


@pytest.mark.parametrize("colour", ["flag", "retry", "replace"])
def test_an_agreeing_colour_is_kept_as_written(colour: str) -> None:
    p = policy(colour)
    assert p.checks_colour
    decision = p.decide(ATTEMPT, checked(p, card(color_primary=RED), agreeing()))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    check = decision.outcome.checks.colour
    assert check is not None and check.agrees and check.action == "none"
    assert (check.policy, check.distance, check.model) == (colour, 3.46, RED)
    assert decision.outcome.card.color_primary == RED


def test_flag_keeps_a_disputed_colour_and_says_so() -> None:
    p = policy("flag")
    decision = p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    check = decision.outcome.checks.colour
    assert check is not None
    assert (check.model, check.estimate, check.agrees, check.action) == (
        "branco",
        RED,
        False,
        "flagged",
    )
    assert check.distance == 42.12 and check.generated is None
    assert decision.outcome.card.color_primary == "branco" and decision.outcome.attempts == 1


def test_replace_puts_the_pixels_colour_on_the_card() -> None:
    p = policy("replace")
    decision = p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    assert decision.outcome.card.color_primary == RED
    assert isinstance(decision.outcome.card, CARD_TYPE)
    check = decision.outcome.checks.colour
    assert check is not None
    assert (check.model, check.generated, check.action) == (RED, "branco", "replaced")


def test_retry_asks_once_more_naming_the_pixels_colour() -> None:
    p = policy("retry")
    first = p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert first == Retry(2, 11, [PROMPT.correction("colour_mismatch", RED)])
    assert [(f.attempt, f.reason, f.checks, f.detail) for f in p.failures] == [
        (1, "semantic_check", ("colour_mismatch",), f"color_primary 'branco', pixels {RED!r}")
    ]
    second = p.decide(ATTEMPT, checked(p, card(color_primary=RED), agreeing()))
    assert isinstance(second, Keep) and second.outcome.checks is not None
    assert second.outcome.card.color_primary == RED
    assert (second.outcome.attempts, second.outcome.seed) == (2, 11)
    check = second.outcome.checks.colour
    assert check is not None and check.agrees and check.action == "retried"
    assert second.outcome.timings.generate_ms == 20


def test_retry_keeps_the_first_card_when_the_correction_disagrees_too() -> None:
    p = policy("retry")
    p.decide(ATTEMPT, checked(p, card(), disputed()))
    second = p.decide(ATTEMPT, checked(p, card(color_primary="azul"), disputed("azul")))
    assert isinstance(second, Keep) and second.outcome.checks is not None
    assert second.outcome.card.color_primary == "branco"
    assert (second.outcome.attempts, second.outcome.seed) == (2, 10)
    assert second.outcome.timings.generate_ms == 20
    check = second.outcome.checks.colour
    assert check is not None and not check.agrees and check.action == "retried"


def test_retry_keeps_the_first_card_when_the_correction_fails_otherwise() -> None:
    p = policy("retry")
    p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert isinstance(p.decide(ATTEMPT, TruncatedOutput("cut")), Retry)
    last = p.decide(ATTEMPT, checked(p, card(features_list=REPEATED)))
    assert isinstance(last, Keep) and last.outcome.card.color_primary == "branco"
    assert last.outcome.attempts == 3 and last.outcome.timings.generate_ms == 30
    assert [f.reason for f in last.outcome.failures] == [
        "semantic_check",
        "truncated",
        "semantic_check",
    ]


def test_retry_on_the_last_attempt_only_flags() -> None:
    p = policy("retry", max_attempts=2)
    p.decide(ATTEMPT, TruncatedOutput("cut"))
    decision = p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    check = decision.outcome.checks.colour
    assert check is not None and check.action == "flagged"


def test_retry_is_steered_by_its_own_state_not_by_the_published_check() -> None:
    """What a card's check says is for people; rewriting it does not change the decisions."""
    p = policy("retry")
    first = p.decide(ATTEMPT, checked(p, card(), disputed()))
    assert isinstance(first, Retry)
    held = p._held
    assert held is not None and held.checks is not None
    held.checks = None  # the record is gone; the policy still knows a correction is running
    second = p.decide(ATTEMPT, checked(p, card(color_primary="azul"), disputed("azul")))
    assert isinstance(second, Keep) and second.outcome is held


def test_a_colour_the_pixels_cannot_check_has_no_distance() -> None:
    p = policy("flag")
    unjudged = Verdict("multicolorido", RED, 0.0, agrees=True, checkable=False)
    decision = p.decide(ATTEMPT, Parsed(card(), (), unjudged))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    check = decision.outcome.checks.colour
    assert check is not None and check.distance is None and not check.checkable
    far = Verdict("branco", RED, math.inf, agrees=False)
    decision = policy("flag").decide(ATTEMPT, Parsed(card(), (), far))
    assert isinstance(decision, Keep) and decision.outcome.checks is not None
    assert decision.outcome.checks.colour is not None
    assert decision.outcome.checks.colour.distance is None
