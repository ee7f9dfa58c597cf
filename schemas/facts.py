"""What a shop already knows about a product: the facts that travel with its photo.

A shop has the SKU, the brand, the GTIN/EAN, often a working title and a few attributes, and
a card that contradicts them is worse than none.  They travel as S3 user metadata on the
upload (``aws s3 cp photo.jpg s3://incoming/shop-42/123.jpg --metadata sku=123,brand=Tramontina``,
boto3 ``Metadata=``, ``mc cp --attr``); MinIO's notification carries them (``userMetadata``,
keys ``X-Amz-Meta-<name>``), so ingest puts them on the job without another request.

The recognised facts, each with its limits (:data:`LIMITS`):

- ``sku``: the shop's own code, copied onto the card (letters, digits, ``. _ - /``);
- ``brand``: copied onto the card; the product name must carry it, and the text must name no
  other brand (``services/inference/card/facts_checks.py``);
- ``gtin`` (also ``ean``, ``upc``): GTIN-8/12/13/14 digits with a valid check digit (GS1's
  mod-10), copied onto the card;
- ``title``: the shop's working title, given to the model as a hint (never copied blindly);
- ``color`` (also ``cor``): the product's colour, which ``color_primary`` must agree with;
- ``price`` (also ``preco``): the price, a decimal with up to two places (``129.90`` or
  ``129,90``) in the shop's currency (``VITRINE_SHOP_CURRENCY``); never shown to the model, read
  by the channel feeds (``services/export``), which need it;
- ``availability`` (also ``disponibilidade``): ``in_stock``, ``out_of_stock``, ``preorder`` or
  ``backorder`` (Google's values), for the feeds; absent, the shop's default
  (``VITRINE_SHOP_AVAILABILITY``);
- anything else: a category attribute by name (``material=aço inox``), forced on the card when
  the chosen category has that attribute and the value is one it accepts.

A fact that breaks its rule (an invalid GTIN check digit, an over-long title, a control
character) is not used: the card is still made, and the row says which fact was dropped and
why (:class:`FactProblem`).  Facts are *data*: the prompt quotes each one (JSON string
escaping), bounded, under a line that says they are not instructions.

Non-ASCII values: HTTP headers carry ASCII, so S3 clients send other text as RFC 2047 encoded
words (``=?UTF-8?B?...?=``), which are decoded here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from email.header import decode_header, make_header
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.storable import text_problem

META_PREFIX = "x-amz-meta-"
"""How MinIO's notification names user metadata (``X-Amz-Meta-Brand``); its other entries are
standard headers (``content-type``), never facts."""

ALIASES = {
    "ean": "gtin",
    "upc": "gtin",
    "cor": "color",
    "colour": "color",
    "preco": "price",
    "disponibilidade": "availability",
}
CORE = ("sku", "brand", "gtin", "title", "color", "price", "availability")
AVAILABILITY = ("in_stock", "out_of_stock", "preorder", "backorder")
"""Google Merchant Center's availability values, the ones the feeds speak."""

LIMITS = {
    "sku": 64,
    "brand": 70,
    "gtin": 14,
    "title": 150,
    "color": 40,
    "price": 16,
    "availability": 12,
}
PRICE_RE = re.compile(r"^\d{1,9}([.,]\d{1,2})?$")
ATTRIBUTE_VALUE_MAX = 80
MAX_ATTRIBUTES = 16
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
GTIN_LENGTHS = (8, 12, 13, 14)


class FactProblem(BaseModel):
    """A fact that was given but not used, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fact: str = Field(max_length=60)
    detail: str = Field(max_length=300)


class ProductFacts(BaseModel):
    """The facts a shop gave for a product (each one checked; absent when not given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str | None = Field(None, min_length=1, max_length=LIMITS["sku"], pattern=SKU_RE.pattern)
    brand: str | None = Field(None, min_length=1, max_length=LIMITS["brand"])
    gtin: str | None = Field(None, pattern=r"^(\d{8}|\d{12}|\d{13}|\d{14})$")
    title: str | None = Field(None, min_length=1, max_length=LIMITS["title"])
    color: str | None = Field(None, min_length=2, max_length=LIMITS["color"])
    price: str | None = Field(
        None,
        pattern=r"^\d{1,9}\.\d{2}$",
        description="Price in the shop's currency, two decimal places (the feeds read it).",
    )
    availability: Literal["in_stock", "out_of_stock", "preorder", "backorder"] | None = Field(
        None, description="Stock state for the feeds; absent: the shop's default."
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Category attributes by name (values as given; the card's category decides "
        "whether each applies).",
    )

    @property
    def empty(self) -> bool:
        given = (self.sku, self.brand, self.gtin, self.title, self.color, self.price)
        return not any(given) and not self.availability and not self.attributes


class GivenFacts(BaseModel):
    """The facts and the ones dropped: what a job and a row carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    facts: ProductFacts = Field(default_factory=ProductFacts)
    problems: list[FactProblem] = Field(default_factory=list, max_length=64)


class FactsCheck(BaseModel):
    """How the shop's facts bound one card: which fields the shop gave and which the model
    wrote (the review desk shows the difference)."""

    model_config = ConfigDict(extra="forbid")

    copied: list[str] = Field(
        default_factory=list, description="Card fields copied from the facts (sku, brand, gtin)."
    )
    forced: dict[str, Any] = Field(
        default_factory=dict,
        description="Values the grammar forced from the facts: 'color_primary' and "
        "'attributes.<name>'.",
    )
    hinted: list[str] = Field(
        default_factory=list, description="Facts given to the model as hints only (title)."
    )
    unused: list[FactProblem] = Field(
        default_factory=list,
        description="Valid facts this card could not take (an attribute its category lacks, a "
        "value it does not accept).",
    )


def gtin_problem(digits: str) -> str | None:
    """Why ``digits`` is not a GTIN (GS1 General Specifications, 7.9.1: mod-10 check digit),
    or None."""
    if not digits.isdigit() or not digits.isascii():
        return "a GTIN is digits only"
    if len(digits) not in GTIN_LENGTHS:
        return f"a GTIN has 8, 12, 13 or 14 digits, not {len(digits)}"
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    expected = (10 - total % 10) % 10
    if expected != check:
        return f"the check digit is {check}, it should be {expected}"
    return None


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded (``=?UTF-8?B?...?=``); anything else as it is."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


def _clean(value: str) -> tuple[str, str | None]:
    """The value normalised (NFC, whitespace collapsed), or why it cannot be used."""
    value = unicodedata.normalize("NFC", _decoded(value))
    problem = text_problem(value)
    if problem:
        return value, problem
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value if c not in "\t\n\r "):
        return value, "must not contain control or format characters"
    return " ".join(value.split()), None


def _one(name: str, value: str) -> tuple[str, str | None]:
    """A core fact's value checked against its rule."""
    limit = LIMITS[name]
    if len(value) > limit:
        return value, f"over {limit} characters ({len(value)})"
    if name == "sku" and not SKU_RE.match(value):
        return value, "a SKU is letters, digits and . _ - / only"
    if name == "gtin":
        digits = value.replace(" ", "").replace("-", "")
        return digits, gtin_problem(digits)
    if name == "color" and len(value) < 2:
        return value, "too short"
    if name == "price":
        if not PRICE_RE.match(value):
            return value, "a price is digits with up to two decimal places (129.90 or 129,90)"
        whole, _, cents = value.replace(",", ".").partition(".")
        return f"{int(whole)}.{cents.ljust(2, '0')}", None
    if name == "availability":
        folded = value.lower().replace(" ", "_").replace("-", "_")
        if folded not in AVAILABILITY:
            return value, f"availability is one of {', '.join(AVAILABILITY)}"
        return folded, None
    return value, None


def _label(name: str) -> str:
    """A rejected fact's name as the row may show it: printable (a NUL or a lone surrogate
    escaped; PostgreSQL's text takes neither) and bounded."""
    shown = name if name.isprintable() else ascii(name)[1:-1]
    return shown[:60] or "?"


def facts_from_metadata(metadata: Mapping[str, Any] | None) -> GivenFacts:
    """The facts in an object's user metadata (MinIO's ``userMetadata``, a HEAD's headers),
    or in a plain mapping of names to values as a form or a manifest gives them; never raises:
    what cannot be used is listed as a problem."""
    core: dict[str, str] = {}
    attributes: dict[str, str] = {}
    problems: list[FactProblem] = []
    items = list((metadata or {}).items())
    # headers (a notification's userMetadata, a HEAD's): only the X-Amz-Meta-* ones are the
    # user's; a plain mapping (a form, a manifest) is all facts
    headers = any(str(k).strip().lower().startswith(META_PREFIX) for k, _ in items)
    for raw_name, raw_value in items:
        name = str(raw_name).strip().lower()
        if name.startswith(META_PREFIX):
            name = name[len(META_PREFIX) :]
        elif headers or name == "content-type":
            continue  # a standard header beside the user's (content-type, date, etag, ...)
        name = name.removeprefix("attr-").removeprefix("attr_").replace("-", "_")
        name = ALIASES.get(name, name)
        label = _label(name)
        if not NAME_RE.match(name):
            problems.append(FactProblem(fact=label, detail="not a fact name (a-z, 0-9, _)"))
            continue
        if not isinstance(raw_value, str):
            problems.append(FactProblem(fact=label, detail="the value must be text"))
            continue
        value, problem = _clean(raw_value)
        if not problem and not value:
            problem = "empty"
        if not problem and name in CORE:
            value, problem = _one(name, value)
        elif not problem and len(value) > ATTRIBUTE_VALUE_MAX:
            problem = f"over {ATTRIBUTE_VALUE_MAX} characters ({len(value)})"
        elif not problem and name not in CORE and len(attributes) >= MAX_ATTRIBUTES:
            problem = f"more than {MAX_ATTRIBUTES} attributes"
        if problem:
            problems.append(FactProblem(fact=label, detail=problem))
        elif name in CORE:
            core[name] = value
        else:
            attributes[name] = value
    return GivenFacts(facts=ProductFacts(**core, attributes=attributes), problems=problems)


def prompt_lines(facts: ProductFacts) -> list[tuple[str, str]]:
    """The facts as ``(name, quoted value)`` pairs for the prompt: each value a JSON string, so
    a quote or a newline in it cannot end the data and start an instruction."""
    import json

    pairs = [(n, getattr(facts, n)) for n in ("brand", "title", "sku", "gtin", "color")]
    pairs += sorted(facts.attributes.items())
    return [(n, json.dumps(v, ensure_ascii=False)) for n, v in pairs if v]
