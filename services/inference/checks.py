"""Semantic checks a grammar cannot express.

Constrained decoding guarantees the *shape* of the card (keys, enum, item count, lengths); these
checks guard its *content*: the description is long enough, the colour is a colour word of the
output language, the selling points are distinct, the text is not a degenerate loop.  A failure
makes the engine retry with a fresh seed and a corrective note, within a bounded budget.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from schemas.card import ProductCard
from schemas.language import LanguageProfile, fold

WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*|\d+(?:[.,]\d+)*", re.UNICODE)
MIN_DISTINCT_WORD_RATIO = 0.35
"""Below this share of distinct words a long description is a repetition loop, not prose."""


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


def _feature_key(feature: str) -> str:
    return " ".join(WORD.findall(fold(feature)))


def check_card(card: ProductCard, profile: LanguageProfile, min_words: int) -> list[CheckFailure]:
    """All content rules that ``card`` breaks; an empty list means the card is acceptable."""
    failures: list[CheckFailure] = []

    if not card.product_name.strip():
        failures.append(CheckFailure("product_name_blank", "product_name is only whitespace"))

    words = WORD.findall(card.description_long)
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

    if not is_known_colour(card.color_primary, profile):
        failures.append(
            CheckFailure(
                "color_vocabulary",
                f"color_primary {card.color_primary!r} is not a {profile.name} colour name",
            )
        )

    keys = [_feature_key(f) for f in card.features_list]
    if any(not k for k in keys):
        failures.append(CheckFailure("features_blank", "a feature has no words"))
    elif len(set(keys)) != len(keys):
        failures.append(CheckFailure("features_distinct", "features_list repeats a selling point"))

    return failures
