"""Google Merchant Center: the product data specification's TSV feed and the Merchant API.

The feed is Google's *text data source* (Merchant Center help, "Product data specification",
answer 7052112, and "Create a tab-delimited data feed", answer 160588): a header row of
attribute names, one product per row, tab-separated.  Cells are quoted the CSV way where they
need it (a cell holding a double quote is wrapped in quotes, the quote inside doubled): Google's
"Quoted fields" (answer 14998273), on by default for every data source created since 2024, reads
exactly that, and so does ``csv.DictReader(f, delimiter="\t")``.  No cell holds a tab or a line
break anyway (:func:`~.rules.cell`), which keeps the file right for an old data source whose
quoted fields are off as long as no text has a double quote.

Repeated attributes (answer 7278995, "About attributes with repeated fields") sit in one cell,
comma-separated: ``additional_image_link`` as bare URLs (a comma inside one is %2C-encoded,
answer 6324370), ``product_highlight`` with an item that holds a comma or a double quote in
double quotes (a quote inside doubled), as answer 14998273 asks of repeated values.

AI-written text: every approved card's text was written by a model (``ApprovedCard.ai_generated``).
Since April 2024 Google asks for such text in ``structured_title`` / ``structured_description``
(answer 6324415, "Title [title] and structured title [structured_title]", and its description
twin) with the sub-attribute ``digital_source_type`` = ``trained_algorithmic_media``; in a text
feed the sub-attributes are joined by a colon, the content quoted:
``trained_algorithmic_media:"<content>"``.  Google uses one of ``title`` and ``structured_title``
(when both are given, ``title`` wins and the AI label is lost), so such a card is sent *only* in
the structured attributes, ``title`` and ``description`` left empty; the limits of ``title``
(150) and ``description`` (5,000) hold for their content.  A card whose text is not a model's
(``Listing.ai_generated`` False) goes in ``title`` and ``description``.

``identifier_exists`` (answer 6324478): a new product needs its unique identifiers, a brand in
Apparel & Accessories, a GTIN (or an MPN, which a card does not have) with the brand elsewhere;
a product without them is marked ``no``, one with a GTIN never is.

The same data as Merchant API ``ProductInput`` objects (merchantapi v1 ``products``:
``offerId``, ``contentLanguage``, ``feedLabel``, ``productAttributes`` in the API's camelCase
names, ``price`` in micros, ``availability`` and ``condition`` as the API's enums) is the feed's
extra file ``products.json``, for a shop that inserts products through the API instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from schemas.facts import AVAILABILITY, gtin_problem
from services.export.channels.base import Problem, Record
from services.export.channels.rules import (
    APPAREL_CATEGORIES,
    CURRENCIES,
    PRICE,
    cell,
    too_long,
    url_problem,
)
from services.export.listing import Listing
from services.export.shop import ShopSettings

COLUMNS = (
    "id",
    "title",
    "structured_title",
    "description",
    "structured_description",
    "link",
    "image_link",
    "additional_image_link",
    "availability",
    "price",
    "condition",
    "brand",
    "gtin",
    "identifier_exists",
    "color",
    "google_product_category",
    "product_type",
    "product_highlight",
)
AI_SOURCE = "trained_algorithmic_media"
ID_MAX = 50
TITLE_MAX = 150
DESCRIPTION_MAX = 5000
BRAND_MAX = 70
COLOR_MAX = 100
ONE_COLOUR_MAX = 40
COLOURS_MOST = 3
EXTRA_IMAGES_MOST = 10
HIGHLIGHTS = (2, 100)
HIGHLIGHT_MAX = 150
PRODUCT_TYPE_MAX = 750
CONDITIONS = ("new", "refurbished", "used")
CATEGORY = re.compile(r"^\d{1,10}$")
STRUCTURED = re.compile(r'^(?P<source>[a-z_]*):(?:"(?P<quoted>(?:[^"]|"")*)"|(?P<plain>[^"]*))$')
CODE_OR_NUMBER = re.compile(r"#|\d")
APPAREL_PATH = "Apparel & Accessories"
IDENTIFIER_EXISTS = ("yes", "true", "no", "false")


def structured(text: str) -> str:
    """``trained_algorithmic_media:"<text>"`` (quotes inside doubled)."""
    return f'{AI_SOURCE}:"{text.replace(chr(34), chr(34) * 2)}"'


def unstructured(value: str) -> tuple[str, str] | None:
    """``(digital_source_type, content)`` of a structured attribute's text form, or None."""
    match = STRUCTURED.match(value)
    if match is None:
        return None
    quoted = match.group("quoted")
    content = quoted.replace('""', '"') if quoted is not None else match.group("plain")
    return match.group("source"), content


def apparel(category: str) -> bool:
    """Whether a ``google_product_category`` (an id or a path) is in Apparel & Accessories."""
    return category in APPAREL_CATEGORIES or category.startswith(APPAREL_PATH)


def identifier_exists(listing: Listing) -> str:
    """``no`` when the product lacks the identifiers Google asks of its category (answer
    6324478: a GTIN, else a brand in Apparel & Accessories), else empty (Google's default,
    yes)."""
    if listing.gtin:
        return ""
    if listing.brand and apparel(listing.google_category or ""):
        return ""
    return "no"


def highlights(items: Sequence[str]) -> str:
    """The items of a repeated attribute in one cell, comma-separated; an item holding a comma
    or a double quote is quoted (a quote inside doubled), the others are left bare, so a cell
    of plain items needs no quoting of its own in the TSV."""
    return ",".join(
        '"' + item.replace('"', '""') + '"' if ("," in item or '"' in item) else item
        for item in items
    )


def split_highlights(value: str) -> list[str]:
    """The items of a ``product_highlight`` cell (the inverse of :func:`highlights`)."""
    if not value:
        return []
    return next(csv.reader([value], skipinitialspace=True))


class GoogleMerchantCenter:
    name: ClassVar[str] = "gmc"
    title: ClassVar[str] = "Google Merchant Center"
    suffix: ClassVar[str] = "tsv"
    content_type: ClassVar[str] = "text/tab-separated-values; charset=utf-8"

    def records(self, listing: Listing, shop: ShopSettings) -> list[Record]:
        card = listing.card
        images = listing.image_links(shop)
        name = cell(card.product_name)
        text = cell(card.description_long)
        record: dict[str, str] = dict.fromkeys(COLUMNS, "")
        record.update(
            id=listing.item_id,
            link=listing.link(shop) or "",
            image_link=images[0] if images else "",
            additional_image_link=",".join(images[1:]),
            availability=listing.availability(shop),
            price=f"{listing.price} {shop.shop_currency}" if listing.price else "",
            condition=shop.shop_condition,
            brand=cell(listing.brand or ""),
            gtin=listing.gtin or "",
            identifier_exists=identifier_exists(listing),
            color=cell(card.color_primary),
            google_product_category=listing.google_category or "",
            product_type=cell(card.category_path),
            product_highlight=highlights([cell(f) for f in card.features_list]),
        )
        if listing.ai_generated:
            record.update(
                structured_title=structured(name), structured_description=structured(text)
            )
        else:
            record.update(title=name, description=text)
        return [record]

    def problems(self, records: Sequence[Mapping[str, Any]]) -> list[Problem]:
        found: list[Problem] = []
        for record in records:
            found += [Problem(self.name, f, r) for f, r in self._record(record)]
        return found

    def _record(self, r: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []

        def text(field: str) -> str:
            value = r.get(field)
            return value if isinstance(value, str) else ""

        item_id = text("id")
        if not item_id:
            out.append(("id", "required"))
        elif len(item_id) > ID_MAX:
            out.append(("id", f"at most {ID_MAX} characters (has {len(item_id)})"))
        for plain, rich, limit in (
            ("title", "structured_title", TITLE_MAX),
            ("description", "structured_description", DESCRIPTION_MAX),
        ):
            if text(rich):
                parts = unstructured(text(rich))
                if parts is None:
                    out.append(
                        (rich, 'digital_source_type:"content" (e.g. trained_algorithmic_media:"…")')
                    )
                    continue
                source, content = parts
                if source not in ("", "default", AI_SOURCE):
                    out.append(
                        (rich, f"digital_source_type is default or {AI_SOURCE} ({source!r})")
                    )
                if not content.strip():
                    out.append((rich, "its content is required"))
                elif too_long(content, limit):
                    out.append((rich, f"content {too_long(content, limit)}"))
            elif not text(plain).strip():
                out.append((plain, f"required (or {rich})"))
            elif too_long(text(plain), limit):
                out.append((plain, str(too_long(text(plain), limit))))
        link = text("link")
        if not link:
            out.append(
                (
                    "link",
                    "required: set VITRINE_SHOP_PRODUCT_URL (e.g. https://loja.example/p/{sku})",
                )
            )
        elif url_problem(link):
            out.append(("link", str(url_problem(link))))
        image = text("image_link")
        if not image:
            out.append(("image_link", "required"))
        elif url_problem(image):
            out.append(("image_link", str(url_problem(image))))
        extra = [u for u in text("additional_image_link").split(",") if u]
        if len(extra) > EXTRA_IMAGES_MOST:
            out.append(
                ("additional_image_link", f"at most {EXTRA_IMAGES_MOST} images (has {len(extra)})")
            )
        for url in extra:
            if url_problem(url):
                out.append(("additional_image_link", str(url_problem(url))))
        if text("availability") not in AVAILABILITY:
            out.append(
                ("availability", f"one of {', '.join(AVAILABILITY)} ({text('availability')!r})")
            )
        price = text("price")
        match = PRICE.match(price)
        if not price:
            out.append(("price", "required: give the product a price fact (price=129.90)"))
        elif match is None:
            out.append(("price", f"an amount and an ISO 4217 code, '129.90 BRL' ({price!r})"))
        elif match.group(2) not in CURRENCIES:
            out.append(("price", f"an ISO 4217 currency ({match.group(2)!r})"))
        elif Decimal(match.group(1)) <= 0:
            out.append(("price", f"more than zero ({price!r})"))
        if text("condition") and text("condition") not in CONDITIONS:
            out.append(("condition", f"one of {', '.join(CONDITIONS)}"))
        if too_long(text("brand"), BRAND_MAX):
            out.append(("brand", str(too_long(text("brand"), BRAND_MAX))))
        if text("gtin") and gtin_problem(text("gtin")):
            out.append(("gtin", str(gtin_problem(text("gtin")))))
        exists = text("identifier_exists")
        if exists and exists not in IDENTIFIER_EXISTS:
            out.append(("identifier_exists", f"one of {', '.join(IDENTIFIER_EXISTS)} ({exists!r})"))
        elif exists in ("no", "false") and text("gtin"):
            out.append(("identifier_exists", "not 'no' for a product with a GTIN"))
        out += self._colour(text("color"), text("google_product_category"))
        category = text("google_product_category")
        if category and not CATEGORY.match(category) and " > " not in category:
            out.append(("google_product_category", f"Google's id or full path ({category!r})"))
        if too_long(text("product_type"), PRODUCT_TYPE_MAX):
            out.append(("product_type", str(too_long(text("product_type"), PRODUCT_TYPE_MAX))))
        items = split_highlights(text("product_highlight"))
        if items and not HIGHLIGHTS[0] <= len(items) <= HIGHLIGHTS[1]:
            out.append(
                (
                    "product_highlight",
                    f"{HIGHLIGHTS[0]} to {HIGHLIGHTS[1]} items (has {len(items)})",
                )
            )
        for i, item in enumerate(items, 1):
            if not item.strip():
                out.append(("product_highlight", f"item {i} is empty"))
            elif len(item) > HIGHLIGHT_MAX:
                out.append(
                    (
                        "product_highlight",
                        f"item {i}: at most {HIGHLIGHT_MAX} characters (has {len(item)})",
                    )
                )
        return out

    def _colour(self, colour: str, category: str) -> list[tuple[str, str]]:
        if not colour:
            if apparel(category):
                return [("color", f"required for Apparel & Accessories ({category!r})")]
            return []
        if len(colour) > COLOR_MAX:
            return [("color", f"at most {COLOR_MAX} characters (has {len(colour)})")]
        names = [c.strip() for c in colour.split("/")]
        if len(names) > COLOURS_MOST:
            return [("color", f"at most {COLOURS_MOST} colours joined by '/' (has {len(names)})")]
        for name in names:
            if not name:
                return [("color", "an empty colour between '/'")]
            if len(name) > ONE_COLOUR_MAX:
                return [("color", f"each colour at most {ONE_COLOUR_MAX} characters ({name!r})")]
            if CODE_OR_NUMBER.search(name):
                return [("color", f"a colour name, not a code or a number ({name!r})")]
        return []

    def render(self, records: Sequence[Record]) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            fieldnames=COLUMNS,
            delimiter="\t",
            lineterminator="\n",
            quoting=csv.QUOTE_MINIMAL,
            extrasaction="raise",
        )
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().encode("utf-8")

    def extra_files(self, records: Sequence[Record], shop: ShopSettings) -> dict[str, bytes]:
        products = [merchant_api_product(r, shop) for r in records]
        body = json.dumps(products, ensure_ascii=False, indent=1) + "\n"
        return {"products.json": body.encode("utf-8")}


def merchant_api_product(record: Mapping[str, str], shop: ShopSettings) -> dict[str, Any]:
    """One TSV record as the Merchant API's ``ProductInput`` (merchantapi v1 ``products``):
    the same values, in the API's names and types."""
    attributes: dict[str, Any] = {}
    for plain, rich, api in (
        ("title", "structured_title", "structuredTitle"),
        ("description", "structured_description", "structuredDescription"),
    ):
        parts = unstructured(record[rich]) if record.get(rich) else None
        if parts is not None:
            source, content = parts
            kind = "TRAINED_ALGORITHMIC_MEDIA" if source == AI_SOURCE else "DEFAULT"
            attributes[api] = {"digitalSourceType": kind, "content": content}
        elif record.get(plain):
            attributes[plain] = record[plain]
    match = PRICE.match(record.get("price", ""))
    if match:
        micros = int(Decimal(match.group(1)) * 1_000_000)
        attributes["price"] = {"amountMicros": str(micros), "currencyCode": match.group(2)}
    simple = {
        "link": "link",
        "image_link": "imageLink",
        "brand": "brand",
        "color": "color",
        "google_product_category": "googleProductCategory",
    }
    for column, api in simple.items():
        if record.get(column):
            attributes[api] = record[column]
    if record.get("additional_image_link"):
        attributes["additionalImageLinks"] = record["additional_image_link"].split(",")
    if record.get("availability"):
        attributes["availability"] = record["availability"].upper()
    if record.get("condition"):
        attributes["condition"] = record["condition"].upper()
    if record.get("gtin"):
        attributes["gtins"] = [record["gtin"]]
    if record.get("identifier_exists") in ("no", "false"):
        attributes["identifierExists"] = False
    if record.get("product_type"):
        attributes["productTypes"] = [record["product_type"]]
    if record.get("product_highlight"):
        attributes["productHighlights"] = split_highlights(record["product_highlight"])
    return {
        "offerId": record["id"],
        "contentLanguage": shop.shop_content_language,
        "feedLabel": shop.shop_feed_label,
        "productAttributes": attributes,
    }


GMC = GoogleMerchantCenter()
