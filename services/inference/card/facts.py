"""The shop's facts bind the card: copied, forced by the grammar, or checked.

Given :class:`~schemas.facts.ProductFacts` for a photo (``schemas/facts.py``), a card:

- **carries** ``sku``, ``brand`` and ``gtin`` as given: :func:`with_identifiers` copies them
  onto the card after generation (the model never writes them);
- **is forced** to a given colour and to given category attributes: :func:`bind` turns the
  generation schema into one where ``color_primary`` and each such attribute are ``const``
  (for every category alternative that has the attribute), so the grammar of that generation
  writes nothing else; and its ``product_name`` to a pattern that contains the brand as given
  (the model chooses where), so the name carries it whatever the model.  A value the tree
  does not accept (an enum value it lacks, a number in another unit) is not forced, and the
  card says why (``FactsCheck.unused``);
- **is checked** (:func:`fact_failures`) on what no grammar can hold without writing the text
  for the model: the product name carries the brand; the text names no brand it was not
  given (from a list of well-known brands, ``brands.txt``, when the shop gave facts); the
  colour agrees with the given one; and the name is *informed* by the shop's working title
  without copying it blindly: it must share a content word with the title (else
  ``title_ignored``), and may not be the title verbatim when the title breaks the name's rules
  (shouting capitals, a price, promotional words, the SKU: ``title_copied``).

A broken check is a corrective retry like any other content rule; after the last attempt the
card fails ``semantic_check``: a card that contradicts the shop is worse than none.

Pure policy, no model: testable without llama.cpp.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.card import ProductCard
from schemas.facts import FactProblem, FactsCheck, ProductFacts
from schemas.language import LanguageProfile, fold
from schemas.taxonomy import Attribute, Taxonomy
from services.inference.card.checks import WORD, CheckFailure, is_known_colour
from services.language.function_words import function_words

BRANDS_FILE = Path(__file__).with_name("brands.txt")
PROMO_WORDS = (
    "promocao",
    "promo",
    "oferta",
    "liquidacao",
    "imperdivel",
    "frete gratis",
    "desconto",
    "sale",
    "free shipping",
    "best seller",
)
PRICE = re.compile(r"(r\$|us\$|\$|€)\s*\d|\d+[.,]\d{2}\b", re.IGNORECASE)
SHOUT = re.compile(r"\b[A-ZÀ-Ý]{3,}\b")
NUMBER = re.compile(r"^\s*(-?\d+(?:[.,]\d+)?)\s*([^\d\s].*)?$")
TRUE_WORDS = {"sim", "true", "yes", "1", "verdadeiro"}
FALSE_WORDS = {"nao", "false", "no", "0", "falso"}


@dataclass(frozen=True)
class Binding:
    """What one photo's facts do to its generation."""

    facts: ProductFacts
    schema: dict[str, Any]
    """The generation schema with the forced values as ``const``."""
    forced: dict[str, Any] = field(default_factory=dict)
    """``color_primary`` and ``attributes.<name>``: the values the grammar forces."""
    problems: list[FactProblem] = field(default_factory=list)
    """Facts no card of this tree could take."""

    @property
    def key(self) -> str:
        """Identifies the forced schema (the grammar a backend compiles for it); empty when
        nothing is forced and the engine's own grammar serves."""
        if not self.forced:
            return ""
        text = json.dumps(self.forced, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def attribute_value(attribute: Attribute, text: str) -> tuple[Any, str | None]:
    """The shop's text as a value of ``attribute`` (an enum value matched without case or
    accents, a number with the attribute's unit or none, sim/não), or why it is not one."""
    if attribute.type == "enum":
        for value in attribute.values:
            if fold(value) == fold(text):
                return value, None
        return None, f"{text!r} is not one of {list(attribute.values)}"
    if attribute.type == "string":
        if 1 <= len(text) <= attribute.max_length:
            return text, None
        return None, f"must be 1 to {attribute.max_length} characters"
    if attribute.type == "number":
        match = NUMBER.match(text)
        if not match:
            return None, f"{text!r} is not a number"
        unit = (match.group(2) or "").strip()
        if unit and fold(unit) != fold(attribute.unit or ""):
            return None, f"the unit is {attribute.unit!r}, not {unit!r}"
        number = float(match.group(1).replace(",", "."))
        amount: int | float = int(number) if number.is_integer() else number
        return {"value": amount, "unit": attribute.unit}, None
    folded = fold(text)
    if folded in TRUE_WORDS or folded in FALSE_WORDS:
        return folded in TRUE_WORDS, None
    return None, f"{text!r} is not yes or no"


def bind(
    facts: ProductFacts | None,
    schema: dict[str, Any],
    tree: Taxonomy,
    profile: LanguageProfile,
) -> Binding:
    """The generation ``schema`` (``schemas.card.generation_schema``) bound to ``facts``."""
    if facts is None:
        return Binding(ProductFacts(), schema)
    forced: dict[str, Any] = {}
    problems: list[FactProblem] = []
    bound = copy.deepcopy(schema)
    properties = bound["properties"]
    if facts.brand:
        pattern = brand_pattern(facts.brand, properties["product_name"].get("maxLength", 120))
        if pattern is not None:
            forced["product_name"] = f"… {facts.brand} …"
            spec = properties["product_name"]
            properties["product_name"] = {
                "description": spec.get("description", ""),
                "type": "string",
                "pattern": pattern,
            }
    if facts.color:
        if is_known_colour(facts.color, profile):
            forced["color_primary"] = facts.color
            spec = properties["color_primary"]
            properties["color_primary"] = {
                "description": spec.get("description", ""),
                "type": "string",
                "const": facts.color,
            }
        else:
            problems.append(
                FactProblem(fact="color", detail=f"not a {profile.name} colour name: not forced")
            )
    category = properties.get("category", {})
    alternatives = category.get("anyOf", [category])
    groups = tree.attribute_groups()
    for name, text in facts.attributes.items():
        problem = _force_attribute(name, text, groups, alternatives, forced)
        if problem:
            problems.append(FactProblem(fact=name, detail=problem))
    return Binding(facts, bound, forced, problems)


REGEX_SPECIAL = set("\\.^$*+?{}[]|()/-#&~")


def brand_pattern(brand: str, max_length: int) -> str | None:
    """A pattern for names that carry ``brand`` as given, as a word of its own, anywhere,
    within ``max_length`` characters: ``^(?:C{0,k}[ (/-])?BRAND(?:[ ,.;:)/-]C{0,k})?$`` where C
    is any character but a control one.  Written in the regex subset that llguidance,
    vitrine's GBNF translator and Pydantic read alike (no ``.``, every special escaped, a
    space left as it is).  None for a brand that leaves no room for a name."""
    room = (max_length - len(brand)) // 2 - 1
    if room < 2 or "\n" in brand:
        return None
    literal = "".join(f"\\{c}" if c in REGEX_SPECIAL else c for c in brand)
    free = "[^\\x00-\\x1f]"  # any character but a control one
    before, after = "[ (/\\-]", "[ ,.;:)/\\-]"
    return f"^(?:{free}{{0,{room}}}{before})?{literal}(?:{after}{free}{{0,{room}}})?$"


def _force_attribute(
    name: str,
    text: str,
    groups: list[tuple[tuple[Attribute, ...], list[Any]]],
    alternatives: list[dict[str, Any]],
    forced: dict[str, Any],
) -> str | None:
    """Make ``name`` a const in every category alternative whose attribute takes ``text``;
    why none could, or None."""
    found = False
    why: str | None = None
    for (attributes, _leaves), alternative in zip(groups, alternatives, strict=False):
        attribute = next((a for a in attributes if a.name == name), None)
        if attribute is None:
            continue
        found = True
        value, problem = attribute_value(attribute, text)
        if problem:
            why = problem
            continue
        slot = alternative["properties"]["attributes"]["properties"]
        slot[name] = {"description": attribute.description, "const": value}
        forced[f"attributes.{name}"] = value
    if not found:
        return "no category of the tree has this attribute"
    if f"attributes.{name}" not in forced:
        return why
    return None


def with_identifiers(card: ProductCard, facts: ProductFacts | None) -> ProductCard:
    """The card with the shop's sku, brand and gtin on it (never the model's)."""
    if facts is None or not (facts.sku or facts.brand or facts.gtin):
        return card
    return type(card).model_validate(
        {**card.model_dump(), "sku": facts.sku, "brand": facts.brand, "gtin": facts.gtin}
    )


def facts_check(binding: Binding, card: ProductCard) -> FactsCheck | None:
    """The record of how the facts bound ``card``, for the row and the desk."""
    facts = binding.facts
    if facts.empty and not binding.problems:
        return None
    copied = [n for n in ("sku", "brand", "gtin") if getattr(facts, n)]
    forced = {}
    unused = list(binding.problems)
    for name, value in binding.forced.items():
        if name == "product_name":
            continue  # the brand in the name: recorded as copied
        if not name.startswith("attributes."):
            forced[name] = value
            continue
        attribute = name.removeprefix("attributes.")
        if card.attributes.get(attribute) == value:
            forced[name] = value
            continue
        why = (
            "does not take this value"
            if attribute in card.attributes
            else "has no such attribute, or it was left empty"
        )
        unused.append(
            FactProblem(fact=attribute, detail=f"the card's category ({card.category_path}) {why}")
        )
    return FactsCheck(
        copied=copied,
        forced=forced,
        hinted=["title"] if facts.title else [],
        unused=unused,
    )


@lru_cache(maxsize=4)
def known_brands(path: Path = BRANDS_FILE) -> tuple[str, ...]:
    """Well-known brands, one per line (``#`` comments), folded."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(fold(line.strip()) for line in lines if line.strip() and not line.startswith("#"))


def _has_phrase(text: str, phrase: str) -> bool:
    """``phrase`` (folded) occurs in ``text`` (folded) as whole words."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def fact_failures(
    card: ProductCard, facts: ProductFacts | None, profile: LanguageProfile
) -> list[CheckFailure]:
    """The shop's facts that ``card`` contradicts (none without facts)."""
    if facts is None or facts.empty:
        return []
    failures: list[CheckFailure] = []
    name = fold(card.product_name)
    if facts.brand and not _has_phrase(name, fold(facts.brand)):
        failures.append(
            CheckFailure("brand_missing", f"product_name must carry the brand {facts.brand!r}")
        )
    text = fold(" ".join([card.product_name, card.description_long, *card.features_list]))
    given = fold(facts.brand) if facts.brand else None
    for brand in known_brands():
        if brand != given and _has_phrase(text, brand) and not (given and brand in given):
            failures.append(
                CheckFailure(
                    "other_brand",
                    f"the text names the brand {brand!r}, which the shop did not give"
                    + (f" (its brand is {facts.brand!r})" if facts.brand else ""),
                )
            )
            break
    if facts.color and not _colours_agree(card.color_primary, facts.color):
        failures.append(
            CheckFailure(
                "colour_fact",
                f"color_primary {card.color_primary!r} contradicts the shop's colour "
                f"{facts.color!r}",
            )
        )
    if facts.title:
        failures += _title_failures(card.product_name, facts, profile)
    return failures


def _colours_agree(card_colour: str, given: str) -> bool:
    """The same colour: the same base name (the first word: 'azul' in 'azul-marinho')."""

    def base(colour: str) -> str:
        parts = re.split(r"[\s\-/]+", fold(colour).strip())
        return parts[0] if parts else ""

    return fold(card_colour) == fold(given) or base(card_colour) == base(given)


def _content_words(text: str, profile: LanguageProfile) -> set[str]:
    stop = {fold(w) for w in function_words(profile.code)}
    return {w for w in (fold(x) for x in WORD.findall(text)) if len(w) >= 4 and w not in stop}


def _title_failures(name: str, facts: ProductFacts, profile: LanguageProfile) -> list[CheckFailure]:
    title = facts.title or ""
    brand = _content_words(facts.brand or "", profile)  # the brand alone is its own check
    if not (_content_words(name, profile) & _content_words(title, profile)) - brand:
        return [
            CheckFailure(
                "title_ignored",
                f"product_name shares no word but the brand with the shop's title {title!r}",
            )
        ]
    if fold(name).strip() == fold(title).strip():
        flaws = _title_flaws(title, facts)
        if flaws:
            return [
                CheckFailure(
                    "title_copied",
                    f"product_name copies the shop's title, which has {', '.join(flaws)}",
                )
            ]
    return []


def _title_flaws(title: str, facts: ProductFacts) -> list[str]:
    """What a product name may not have and the shop's title has."""
    flaws = []
    if len(SHOUT.findall(title)) >= 2:
        flaws.append("words in capitals")
    if PRICE.search(title):
        flaws.append("a price")
    folded = fold(title)
    if any(_has_phrase(folded, w) for w in PROMO_WORDS):
        flaws.append("promotional words")
    if facts.sku and _has_phrase(folded, fold(facts.sku)):
        flaws.append("the SKU")
    return flaws
