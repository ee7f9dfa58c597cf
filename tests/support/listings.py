"""Listings for the channel tests: an approved card of the shipped pt-BR tree, the shop's facts
and photos, and the shop's settings, each overridable, so a test states only what it breaks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.card import ProductCard
from schemas.facts import ProductFacts
from services.export.listing import Listing
from services.export.shop import ShopSettings
from tests.support.card_text import card_values

GTIN = "7891234567895"  # a valid GS1 check digit
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
APPAREL = "1604"  # Google: Apparel & Accessories > Clothing
KITCHEN = (
    "3809"  # Google: Home & Garden > Kitchen & Dining > Food & Beverage Carriers > Water Bottles
)


def shop(**settings: Any) -> ShopSettings:
    """The shop's settings as a test gives them (the environment's VITRINE_SHOP_* ignored)."""
    values: dict[str, Any] = {
        "shop_currency": "BRL",
        "shop_product_url": "https://loja.example/p/{sku}",
        "shop_image_url": "https://cdn.loja.example/{bucket}/{key}",
        "shop_availability": "in_stock",
        "shop_condition": "new",
        "shop_vendor": "Loja Exemplo",
        "shop_shopify_status": "active",
        "shop_content_language": "pt",
        "shop_feed_label": "BR",
    }
    values.update(settings)
    return ShopSettings(**values)


def card(name: str = "Garrafa térmica de aço inox 500 ml", **fields: Any) -> ProductCard:
    return ProductCard.model_validate(card_values(name, **fields))


def listing(
    key: str = "loja/garrafa.jpg",
    *,
    facts: dict[str, Any] | None = None,
    photos: int = 1,
    google_category: str | None = KITCHEN,
    shopify_category: str | None = "Home & Garden > Kitchen & Dining > Food & Beverage Carriers",
    ai_generated: bool = True,
    **card_fields: Any,
) -> Listing:
    """An approved card with a price, a brand, a GTIN and a SKU (``facts`` overrides them; a
    value of None removes one) and ``photos`` photos."""
    given: dict[str, Any] = {"sku": "GT-500", "brand": "Termix", "gtin": GTIN, "price": "129.90"}
    given.update(facts or {})
    product = ProductFacts(**{k: v for k, v in given.items() if v is not None})
    stem = key.rsplit(".", 1)[0]
    keys = (key, *(f"{stem}-{i}.jpg" for i in range(2, photos + 1)))
    return Listing(
        bucket="incoming",
        key=key,
        card=card(
            **{"sku": product.sku, "brand": product.brand, "gtin": product.gtin, **card_fields}
        ),
        facts=product,
        photos=keys[:photos],
        approved_at=T0,
        ai_generated=ai_generated,
        google_category=google_category,
        shopify_category=shopify_category,
    )
