"""Content checks: a safety net under the grammar, and the rules no grammar can express.

Constrained decoding guarantees the *shape* of the card (keys, enum, item count, lengths) and,
by default, the description's word minimum and the colour vocabulary (patterns in the card's
schema).  These checks hold every card to those rules again, whatever the backend or settings
(free-text colour, a grammar that could not take a pattern), and add the ones that only the
finished text can show: the selling points are distinct, the text is not a degenerate loop, and
it is written in the output language.  A failure makes the engine retry with a fresh seed and a
corrective note, within a bounded budget.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from schemas.card import ProductCard
from schemas.language import PROFILES, LanguageProfile, fold
from services.language.function_words import function_words

WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*|\d+(?:[.,]\d+)*", re.UNICODE)
MIN_DISTINCT_WORD_RATIO = 0.35
"""Below this share of distinct words a long description is a repetition loop, not prose."""


LANGUAGE_MIN_SHARE = 0.12
"""Below this share of the output language's own function words, a description is not prose in
that language (Portuguese product prose runs at about 30 %; English text at about 0 %)."""


@dataclass(frozen=True)
class CheckFailure:
    check: str
    detail: str


def count_words(text: str) -> int:
    """Words as a reader counts them: hyphenated compounds and numbers count once."""
    return len(WORD.findall(text))


def is_known_colour(colour: str, profile: LanguageProfile) -> bool:
    """True for a base colour, optionally followed by modifiers: 'azul-marinho', 'verde claro'."""
    tokens = [t for t in re.split(r"[\s\-/]+", fold(colour).strip(" .")) if t]
    if not tokens or len(tokens) > 4:
        return False
    colours = {fold(c) for c in profile.colours}
    modifiers = {fold(m) for m in profile.colour_modifiers} | colours
    if fold(colour).strip() in colours:  # hyphenated vocabulary entries such as "off-white"
        return True
    return tokens[0] in colours and all(t in modifiers for t in tokens[1:])


def _function_words(profile: LanguageProfile) -> tuple[set[str], list[tuple[str, set[str]]]]:
    """The profile's function words that no other known language shares, and each other
    language's own (folded, so "é" and "e" count alike)."""
    own = {fold(w) for w in function_words(profile.code)}
    theirs = [
        (p.name, {fold(w) for w in function_words(p.code)})
        for p in PROFILES.values()
        if p.code != profile.code and function_words(p.code)
    ]
    shared = set().union(*(words for _, words in theirs)) if theirs else set()
    return own - shared, [(name, words - own) for name, words in theirs]


def language_problem(text: str, profile: LanguageProfile, min_share: float) -> str | None:
    """Why ``text`` does not read as ``profile``'s language, or None when it does.

    Counts function words, which any prose is full of whatever its topic: the text fails when
    another known language's own words outnumber the output language's (two at least), or when
    the output language's share is below ``min_share`` (0 for short texts such as names).
    """
    if not function_words(profile.code):
        return None
    words = [fold(w) for w in WORD.findall(text)]
    if not words:
        return None
    own, others = _function_words(profile)
    n_own = sum(w in own for w in words)
    for name, theirs in others:
        found = [w for w in words if w in theirs]
        if len(found) >= 2 and len(found) > n_own:
            top = ", ".join(w for w, _ in Counter(found).most_common(3))
            return f"reads as {name} ({top})"
    if min_share and n_own / len(words) < min_share:
        return f"has too few {profile.name} words to be prose in it"
    return None


def _feature_key(feature: str) -> str:
    return " ".join(WORD.findall(fold(feature)))


ECHO_SPAN_WORDS = 8
"""A run this long copied from the instructions is an echo, not a description: measured on Gemma
3 270M, passing cards opened with the field guide's own sentence."""


@lru_cache(maxsize=8)
def _runs(prompt: str, span: int) -> frozenset[tuple[str, ...]]:
    """Every run of ``span`` folded words of ``prompt`` (an engine's prompt is one string, so
    this is computed once per process, not once per attempt)."""
    said = [fold(w) for w in WORD.findall(prompt)]
    return frozenset(tuple(said[i : i + span]) for i in range(len(said) - span + 1))


def prompt_echo(text: str, prompt: str, span: int = ECHO_SPAN_WORDS) -> str | None:
    """The first run of ``span`` words of ``text`` that also stands in ``prompt``, if any."""
    runs = _runs(prompt, span)
    words = WORD.findall(text)
    folded = [fold(w) for w in words]
    for i in range(len(folded) - span + 1):
        if tuple(folded[i : i + span]) in runs:
            return " ".join(words[i : i + span])
    return None


def check_card(
    card: ProductCard,
    profile: LanguageProfile,
    min_words: int,
    *,
    language: bool = True,
    prompt: str | None = None,
) -> list[CheckFailure]:
    """All content rules that ``card`` breaks; an empty list means the card is acceptable.

    ``prompt``: the instructions the model was given; a description that copies a run of them
    fails ``description_echoes_prompt``."""
    failures: list[CheckFailure] = []
    if not card.product_name.strip():
        failures.append(CheckFailure("product_name_blank", "product_name is only whitespace"))
    failures += _description_failures(card.description_long, min_words, prompt)
    if not is_known_colour(card.color_primary, profile):
        failures.append(
            CheckFailure(
                "color_vocabulary",
                f"color_primary {card.color_primary!r} is not a {profile.name} colour name",
            )
        )
    if language:
        failures += _language_failures(card, profile)
    failures += _feature_failures(card.features_list)
    return failures


def _description_failures(text: str, min_words: int, prompt: str | None) -> list[CheckFailure]:
    """Too short, a repetition loop, or an echo of the instructions: the description's rules."""
    failures: list[CheckFailure] = []
    words = WORD.findall(text)
    if len(words) < min_words:
        failures.append(
            CheckFailure(
                "description_min_words",
                f"description_long has {len(words)} words; at least {min_words} are required",
            )
        )
    elif len({fold(w) for w in words}) / len(words) < MIN_DISTINCT_WORD_RATIO:
        top = ", ".join(w for w, _ in Counter(fold(w) for w in words).most_common(3))
        failures.append(
            CheckFailure("description_repetitive", f"description_long repeats itself ({top})")
        )
    echo = prompt_echo(text, prompt) if prompt else None
    if echo is not None:
        failures.append(
            CheckFailure(
                "description_echoes_prompt",
                f"description_long copies the instructions (\u201c{echo}\u201d) instead of "
                "describing the product",
            )
        )
    return failures


def _language_failures(card: ProductCard, profile: LanguageProfile) -> list[CheckFailure]:
    """The prose held to the output language's share; the short texts only to not reading as
    another language (a product name has few function words of any language)."""
    failures: list[CheckFailure] = []
    for field, text, share in (
        ("description_long", card.description_long, LANGUAGE_MIN_SHARE),
        ("product_name and features_list", " ".join([card.product_name, *card.features_list]), 0),
    ):
        problem = language_problem(text, profile, share)
        if problem:
            failures.append(
                CheckFailure("language", f"{field} is not written in {profile.name}: it {problem}")
            )
    return failures


def _feature_failures(features: list[str]) -> list[CheckFailure]:
    """Each selling point has words, and no two are the same point."""
    keys = [_feature_key(f) for f in features]
    if any(not k for k in keys):
        return [CheckFailure("features_blank", "a feature has no words")]
    if len(set(keys)) != len(keys):
        return [CheckFailure("features_distinct", "features_list repeats a selling point")]
    return []
