"""The retry policy: what one image's attempts at a card add up to.

A small model fails often and differently (cut off, off-schema, a broken content rule, a colour
the pixels dispute), and each failure asks for a different next step.  Those decisions live
here, apart from the model, so that they can be read and tested without one: the engine's loop
only generates and parses, hands each attempt's outcome to an :class:`AttemptPolicy` and does
what the :data:`Decision` says (:class:`Retry` with this seed and these notes, :class:`Keep`
this card, :class:`Fail` with this error).

The pixels' verdict on a card's colour is computed beside the model (``image/pixel_colour.py``,
OpenCV) and arrives here as data: this layer loads no native library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from schemas.card import ProductCard
from schemas.facts import ProductFacts
from schemas.language import LanguageProfile
from schemas.messages import Checks, ColourCheck, Timings
from schemas.reasons import Reason
from services.inference.card.checks import CheckFailure, check_card
from services.inference.card.errors import AttemptFailure, GenerationError, SemanticCheckFailed
from services.inference.card.facts import fact_failures
from services.inference.card.outcome import CardOutcome
from services.inference.card.prompt import Prompt

ColourPolicy = Literal["off", "flag", "retry", "replace"]


class ColourVerdict(Protocol):
    """The pixels' word on a card's colour (``pixel_colour.check_colour``'s result)."""

    @property
    def model(self) -> str: ...
    @property
    def estimate(self) -> str: ...
    @property
    def distance(self) -> float: ...
    @property
    def agrees(self) -> bool: ...
    @property
    def checkable(self) -> bool: ...


@dataclass(frozen=True)
class AttemptRules:
    """What the policy holds every attempt to: the engine's settings for one image."""

    max_attempts: int
    colour: ColourPolicy
    """``VITRINE_COLOUR_CHECK``."""
    profile: LanguageProfile
    min_words: int
    language: bool
    """Whether the output-language check runs."""
    instructions: str
    """The prompt's text, for the echo check."""
    prompt: Prompt
    """Corrective notes and the prompt version recorded with the card."""
    model_id: str
    card_type: type[ProductCard]
    """Validates the card again where the colour policy replaces its colour."""
    facts: ProductFacts | None = None
    """The shop's facts the card must not contradict (``facts.fact_failures``)."""


@dataclass(frozen=True)
class Parsed:
    """An attempt that gave a schema-valid card: the content rules it broke, and the pixels'
    verdict on its colour (asked only when it broke none and the colour check is on)."""

    card: ProductCard
    broken: Sequence[CheckFailure] = ()
    colour: ColourVerdict | None = None


@dataclass(frozen=True)
class Retry:
    """Generate (again): attempt number ``attempt`` with ``seed``, and these corrective notes
    (none on the first attempt)."""

    attempt: int
    seed: int
    problems: list[str] | None


@dataclass(frozen=True)
class Keep:
    """This card is the image's."""

    outcome: CardOutcome


@dataclass(frozen=True)
class Fail:
    """No acceptable card within the budget: raise this (it lists every attempt's failure)."""

    error: GenerationError


Decision = Retry | Keep | Fail


class AttemptPolicy:
    """One image's attempts, decided one at a time.

    Its own state (the failures so far, the summed timings, the card held while a colour
    correction runs) is what steers it, never a field it published on a card: those say what
    happened, for people and the review desk, and may change shape for them."""

    def __init__(self, rules: AttemptRules, *, base_seed: int, preprocess_ms: float) -> None:
        self.rules = rules
        self.base_seed = base_seed
        self.attempt = 0
        """Attempts decided so far."""
        self.timings = Timings(preprocess_ms=preprocess_ms)
        """Every attempt's stages summed, and the image's preprocessing."""
        self.failures: list[AttemptFailure] = []
        self._last: GenerationError | None = None
        self._held: CardOutcome | None = None
        """A card whose colour the pixels disputed, while its corrective attempt runs."""

    def first(self) -> Retry:
        return Retry(1, self.base_seed, None)

    @property
    def checks_colour(self) -> bool:
        """Whether a card that breaks no rule needs the pixels' verdict before deciding."""
        return self.rules.colour != "off"

    def check(self, card: ProductCard) -> list[CheckFailure]:
        """The content rules ``card`` breaks (``checks.check_card``, under these rules)."""
        r = self.rules
        broken = check_card(
            card, r.profile, r.min_words, language=r.language, prompt=r.instructions
        )
        return broken + fact_failures(card, r.facts, r.profile)

    def decide(self, timings: Timings, result: Parsed | GenerationError) -> Decision:
        """The next step after an attempt that cost ``timings`` and gave ``result``: a card,
        or the typed reason its text is not one (truncated, invalid)."""
        self.attempt += 1
        self.timings = self.timings.plus(timings)
        if isinstance(result, GenerationError):
            self.failures.append(AttemptFailure(self.attempt, result.reason, str(result)))
            return self._again(result, [self.rules.prompt.correction(result.reason, str(result))])
        if result.broken:
            checks = [b.check for b in result.broken]
            detail = "; ".join(b.detail for b in result.broken)
            error = SemanticCheckFailed(detail, checks, card=result.card)
            self.failures.append(AttemptFailure(self.attempt, error.reason, detail, tuple(checks)))
            notes = [self.rules.prompt.correction(b.check, b.detail) for b in result.broken]
            return self._again(error, notes)
        return self._passed(result.card, result.colour)

    def _seed(self, attempt: int) -> int:
        return self.base_seed + attempt - 1

    def _again(self, error: GenerationError | None, problems: list[str]) -> Decision:
        """Another attempt with ``problems`` as its notes while the budget lasts, else the end."""
        if error is not None:
            self._last = error
        if self.attempt < self.rules.max_attempts:
            return Retry(self.attempt + 1, self._seed(self.attempt + 1), problems)
        if self._held is not None:  # the corrective attempt failed otherwise: the card stands
            return self._keep_held()
        assert self._last is not None
        last = self._last
        summary = f"no acceptable card after {len(self.failures)} attempt(s); last: {last}"
        final = (
            SemanticCheckFailed(summary, last.checks, self.failures, card=last.card)
            if isinstance(last, SemanticCheckFailed)
            else type(last)(summary, self.failures)
        )
        final.timings = self.timings
        return Fail(final)

    def _keep_held(self) -> Keep:
        held = self._held
        assert held is not None
        held.attempts, held.timings = self.attempt, self.timings
        return Keep(held)

    def _passed(self, card: ProductCard, verdict: ColourVerdict | None) -> Decision:
        """A card that broke no rule: kept, unless the pixels dispute its colour under
        ``retry`` and one corrective attempt is still to be made."""
        outcome = CardOutcome(
            card=card,
            model_id=self.rules.model_id,
            prompt_version=self.rules.prompt.version,
            attempts=self.attempt,
            seed=self._seed(self.attempt),
            timings=self.timings,
            failures=self.failures,
        )
        policy = self.rules.colour
        if verdict is None or policy == "off":
            return Keep(outcome)
        correcting = self._held is not None
        can_retry = self.attempt < self.rules.max_attempts
        check = colour_check(verdict, policy, correcting=correcting, can_retry=can_retry)
        outcome.checks = Checks(colour=check)
        if policy == "replace" and not verdict.agrees:
            outcome.card = self.rules.card_type.model_validate(
                {**card.model_dump(), "color_primary": verdict.estimate}
            )
        if verdict.agrees or policy != "retry" or not (can_retry or correcting):
            return Keep(outcome)
        if correcting:  # the correction disagreed too: the first card stands, flagged
            return self._keep_held()
        self._held = outcome  # one corrective attempt; this card stands if that one fails
        self.failures.append(
            AttemptFailure(
                self.attempt,
                Reason.semantic_check,
                f"color_primary {card.color_primary!r}, pixels {verdict.estimate!r}",
                ("colour_mismatch",),
            )
        )
        return self._again(
            None, [self.rules.prompt.correction("colour_mismatch", verdict.estimate)]
        )


def colour_check(
    verdict: ColourVerdict,
    policy: Literal["flag", "retry", "replace"],
    *,
    correcting: bool,
    can_retry: bool,
) -> ColourCheck:
    """The published record of the colour check: what the pixels said and what the policy did
    about it (``correcting``: this card is the answer to a corrective attempt).  A record for
    people and the review desk; the policy's own state, not this, steers the attempts."""
    check = ColourCheck(
        model=verdict.model,
        estimate=verdict.estimate,
        distance=round(verdict.distance, 2)
        if verdict.checkable and math.isfinite(verdict.distance)
        else None,
        agrees=verdict.agrees,
        checkable=verdict.checkable,
        policy=policy,
        action="retried" if correcting else "none",
    )
    if verdict.agrees:
        return check
    if policy == "replace":
        return check.model_copy(
            update={"model": verdict.estimate, "generated": verdict.model, "action": "replaced"}
        )
    if policy == "retry" and (can_retry or correcting):
        return check.model_copy(update={"action": "retried"})
    return check.model_copy(update={"action": "flagged"})
