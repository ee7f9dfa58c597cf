"""Shopify's product CSV (Shopify Help Center, "Using CSV files to import and export products").

The current template's columns, one product per handle: the first row carries the product and
its first image; each further photo is one more row with the same ``URL handle`` and only the
image columns (Shopify's rule for extra images).  ``Title`` is the only column a new product
needs; a product without a price is taken (Shopify leaves the variant's price empty), unlike
Google.  ``Description`` is HTML: built here from the card's text, every character of which is
escaped, so a ``<script>`` a model or a person wrote is shown as text, never run.  Older files
named the columns ``Handle``, ``Body (HTML)`` and ``Image Src``; Shopify reads both, this writes
the current names.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from services.export.channels.base import Problem, Record
from services.export.channels.rules import DECIMAL, cell, too_long, url_problem
from services.export.listing import Listing
from services.export.shop import ShopSettings

COLUMNS = (
    "Title",
    "URL handle",
    "Description",
    "Vendor",
    "Product category",
    "Type",
    "Tags",
    "Published on online store",
    "Status",
    "SKU",
    "Barcode",
    "Option1 name",
    "Option1 value",
    "Price",
    "Image source",
    "Image position",
    "Image alt text",
    "SEO title",
    "SEO description",
)
IMAGE_COLUMNS = ("URL handle", "Image source", "Image position", "Image alt text")
TITLE_MAX = 255
HANDLE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
HANDLE_MAX = 255
SEO_TITLE_MAX = 70
SEO_DESCRIPTION_MAX = 320
VENDOR_MAX = 255
ALT_MAX = 512
TAG_MAX = 255
STATUSES = ("active", "draft", "unlisted", "archived")


def description_html(paragraphs: str, features: Sequence[str]) -> str:
    """The card's text as Shopify's Description: paragraphs, then the selling points."""
    parts = [f"<p>{html.escape(p.strip())}</p>" for p in paragraphs.split("\n") if p.strip()]
    items = "".join(f"<li>{html.escape(f)}</li>" for f in features)
    return "".join(parts) + (f"<ul>{items}</ul>" if items else "")


def shortened(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (an ellipsis added)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.")
    return cut + "…"


class Shopify:
    name: ClassVar[str] = "shopify"
    title: ClassVar[str] = "Shopify"
    suffix: ClassVar[str] = "csv"
    content_type: ClassVar[str] = "text/csv; charset=utf-8"

    def records(self, listing: Listing, shop: ShopSettings) -> list[Record]:
        card = listing.card
        name = cell(card.product_name)
        images = listing.image_links(shop)
        path = card.category_path.split(" > ")
        tags = [*path, card.color_primary]
        first: dict[str, str] = dict.fromkeys(COLUMNS, "")
        first.update(
            {
                "Title": name,
                "URL handle": listing.handle,
                "Description": description_html(card.description_long, card.features_list),
                "Vendor": cell(listing.brand or shop.shop_vendor),
                "Product category": listing.shopify_category or "",
                "Type": path[-1],
                "Tags": ", ".join(dict.fromkeys(cell(t).replace(",", " ") for t in tags)),
                "Published on online store": "FALSE"
                if shop.shop_shopify_status == "draft"
                else "TRUE",
                "Status": shop.shop_shopify_status,
                "SKU": listing.sku or "",
                "Barcode": listing.gtin or "",
                "Option1 name": "Title",
                "Option1 value": "Default Title",
                "Price": listing.price or "",
                "SEO title": shortened(name, SEO_TITLE_MAX),
                "SEO description": shortened(cell(card.description_long), SEO_DESCRIPTION_MAX),
            }
        )
        rows: list[Record] = [first]
        for position, url in enumerate(images, 1):
            row = first if position == 1 else dict.fromkeys(COLUMNS, "")
            row.update(
                {
                    "URL handle": listing.handle,
                    "Image source": url,
                    "Image position": str(position),
                    "Image alt text": shortened(name, ALT_MAX),
                }
            )
            if position > 1:
                rows.append(row)
        return rows

    def problems(self, records: Sequence[Mapping[str, Any]]) -> list[Problem]:
        found: list[Problem] = []
        handles_with_title: set[str] = set()
        for record in records:
            for field, rule in self._record(record, handles_with_title):
                found.append(Problem(self.name, field, rule))
        return found

    def _record(self, r: Mapping[str, Any], handles_with_title: set[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []

        def text(field: str) -> str:
            value = r.get(field)
            return value if isinstance(value, str) else ""

        handle = text("URL handle") or text("Handle")
        if not handle:
            out.append(("URL handle", "required on every row (it ties a photo to its product)"))
        elif len(handle) > HANDLE_MAX or not HANDLE.match(handle):
            out.append(
                ("URL handle", f"lowercase letters, digits and hyphens, at most {HANDLE_MAX}")
            )
        title = text("Title")
        product_row = any(text(c) for c in COLUMNS if c not in IMAGE_COLUMNS)
        if product_row:
            if not title.strip():
                out.append(("Title", "required"))
            elif too_long(title, TITLE_MAX):
                out.append(("Title", str(too_long(title, TITLE_MAX))))
            handles_with_title.add(handle)
        elif handle and handle not in handles_with_title:
            out.append(("URL handle", "an image row comes after its product's row"))
        for column, limit in (
            ("SEO title", SEO_TITLE_MAX),
            ("SEO description", SEO_DESCRIPTION_MAX),
            ("Vendor", VENDOR_MAX),
            ("Image alt text", ALT_MAX),
        ):
            if too_long(text(column), limit):
                out.append((column, str(too_long(text(column), limit))))
        price = text("Price")
        if price and not DECIMAL.match(price):
            out.append(("Price", f"a non-negative decimal, at most two places ({price!r})"))
        image = text("Image source") or text("Image Src")
        if image and url_problem(image):
            out.append(("Image source", str(url_problem(image))))
        position = text("Image position")
        if position and (not position.isdigit() or int(position) < 1):
            out.append(("Image position", f"a positive whole number ({position!r})"))
        if image and not position:
            out.append(("Image position", "required beside Image source"))
        status = text("Status")
        if status and status not in STATUSES:
            out.append(("Status", f"one of {', '.join(STATUSES)} ({status!r})"))
        for tag in (t.strip() for t in text("Tags").split(",")):
            if too_long(tag, TAG_MAX):
                out.append(("Tags", f"each tag {too_long(tag, TAG_MAX)}"))
        return out

    def render(self, records: Sequence[Record]) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(
            out, fieldnames=COLUMNS, lineterminator="\r\n", extrasaction="raise"
        )
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().encode("utf-8")

    def extra_files(self, records: Sequence[Record], shop: ShopSettings) -> dict[str, bytes]:
        return {}


SHOPIFY = Shopify()
