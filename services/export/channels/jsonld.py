"""schema.org ``Product`` in JSON-LD, as Google's merchant listing structured data reads it.

One object per card: ``name``, ``image``, ``description``, ``sku``, ``gtin8/12/13/14`` (by the
GTIN's length), ``brand``, ``color``, ``category`` and an ``Offer`` with ``price``,
``priceCurrency``, ``availability``, ``itemCondition`` and ``url`` (Google Search Central,
"Merchant listing (Product, Offer) structured data": name, image and offers.price with
priceCurrency are what a product page must carry; ``price`` is written as a JSON number, as
that page's examples write it, and a decimal string, which schema.org also allows, is accepted
when read back).  The feed is one document with an ``@graph`` of every card;
``items/<id>.jsonld`` holds each card alone, the object a product page embeds in
``<script type="application/ld+json">``.  ``<`` is written as ``\\u003c``, so a card's text
cannot close that script element.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from schemas.facts import gtin_problem
from services.export.channels.base import Problem, Record
from services.export.channels.rules import CURRENCIES, DECIMAL, url_problem
from services.export.listing import Listing
from services.export.shop import ShopSettings

CONTEXT = "https://schema.org"
AVAILABILITY = {
    "in_stock": "https://schema.org/InStock",
    "out_of_stock": "https://schema.org/OutOfStock",
    "preorder": "https://schema.org/PreOrder",
    "backorder": "https://schema.org/BackOrder",
}
CONDITION = {
    "new": "https://schema.org/NewCondition",
    "refurbished": "https://schema.org/RefurbishedCondition",
    "used": "https://schema.org/UsedCondition",
}
GTIN_KEYS = {8: "gtin8", 12: "gtin12", 13: "gtin13", 14: "gtin14"}


def dumps(value: Any) -> bytes:
    """JSON safe to embed in an HTML script element."""
    text = json.dumps(value, ensure_ascii=False, indent=1).replace("<", "\\u003c")
    return (text + "\n").encode("utf-8")


class JsonLd:
    name: ClassVar[str] = "jsonld"
    title: ClassVar[str] = "schema.org JSON-LD"
    suffix: ClassVar[str] = "jsonld"
    content_type: ClassVar[str] = "application/ld+json"

    def records(self, listing: Listing, shop: ShopSettings) -> list[Record]:
        card = listing.card
        offer: dict[str, Any] = {
            "@type": "Offer",
            "priceCurrency": shop.shop_currency,
            "availability": AVAILABILITY[listing.availability(shop)],
            "itemCondition": CONDITION[shop.shop_condition],
        }
        if listing.price:
            offer["price"] = float(listing.price)  # a JSON number, as Google's examples give it
        link = listing.link(shop)
        if link:
            offer["url"] = link
        product: dict[str, Any] = {
            "@context": CONTEXT,
            "@type": "Product",
            "@id": f"urn:vitrine:{quote(listing.item_id, safe='')}",
            "name": card.product_name,
            "image": listing.image_links(shop),
            "description": card.description_long,
            "color": card.color_primary,
            "category": card.category_path,
            "offers": offer,
        }
        if listing.sku:
            product["sku"] = listing.sku
        if listing.gtin:
            product[GTIN_KEYS.get(len(listing.gtin), "gtin")] = listing.gtin
        if listing.brand:
            product["brand"] = {"@type": "Brand", "name": listing.brand}
        return [product]

    def problems(self, records: Sequence[Mapping[str, Any]]) -> list[Problem]:
        return [Problem(self.name, f, r) for record in records for f, r in self._record(record)]

    def _record(self, p: Mapping[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if p.get("@type") != "Product":
            out.append(("@type", "Product"))
        name = p.get("name")
        if not isinstance(name, str) or not name.strip():
            out.append(("name", "required"))
        images = p.get("image")
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images:
            out.append(("image", "required: at least one image URL"))
        else:
            for url in images:
                problem = url_problem(url) if isinstance(url, str) else "a URL"
                if problem:
                    out.append(("image", problem))
        for key in GTIN_KEYS.values():
            value = p.get(key)
            if value is not None:
                problem = gtin_problem(str(value))
                if problem or len(str(value)) != int(key[4:]):
                    out.append((key, problem or f"{key[4:]} digits"))
        offer = p.get("offers")
        if not isinstance(offer, Mapping):
            return [*out, ("offers", "required: an Offer with price and priceCurrency")]
        price = offer.get("price")
        if price is None or price == "":
            out.append(("offers.price", "required: give the product a price fact (price=129.90)"))
        elif isinstance(price, bool) or not (
            (isinstance(price, int | float) and math.isfinite(price) and price >= 0)
            or (isinstance(price, str) and DECIMAL.match(price))
        ):
            out.append(("offers.price", f"a number of at least 0, '.' for decimals ({price!r})"))
        if offer.get("priceCurrency") not in CURRENCIES:
            out.append(
                ("offers.priceCurrency", f"an ISO 4217 code ({offer.get('priceCurrency')!r})")
            )
        if offer.get("availability") not in (None, *AVAILABILITY.values()):
            out.append(("offers.availability", "a schema.org ItemAvailability URL"))
        url = offer.get("url")
        if url is not None:
            problem = url_problem(url) if isinstance(url, str) else "a URL"
            if problem:
                out.append(("offers.url", problem))
        return out

    def render(self, records: Sequence[Record]) -> bytes:
        graph = [{k: v for k, v in r.items() if k != "@context"} for r in records]
        return dumps({"@context": CONTEXT, "@graph": graph})

    def extra_files(self, records: Sequence[Record], shop: ShopSettings) -> dict[str, bytes]:
        files = {}
        for record in records:
            item = str(record["@id"]).removeprefix("urn:vitrine:")
            files[f"items/{item}.jsonld"] = dumps(record)
        return files


JSONLD = JsonLd()
