"""A :class:`Listing`: one approved card as a channel sees it, with what the shop knows.

Every feed row is made from one: the card as approved (the person's edit where there is one),
the shop's facts (price, availability, SKU, brand, GTIN), the photos in order (main first), and
the channel categories its leaf maps to (``schemas/taxonomy.py``: a node's Google and Shopify
categories, inherited by its leaves).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from schemas.card import ProductCard
from schemas.facts import ProductFacts
from schemas.taxonomy import Taxonomy, slug
from services.export.shop import ShopSettings

ITEM_ID_MAX = 50  # Google Merchant Center's id limit; the derived id is far below it
HANDLE_MAX = 255


@dataclass(frozen=True)
class Listing:
    """One approved product card, ready for the channels."""

    bucket: str
    key: str
    card: ProductCard
    facts: ProductFacts
    photos: tuple[str, ...]
    """Object keys of the product's photos, the main one first (one key for a single photo)."""
    approved_at: datetime
    edited: bool = False
    ai_generated: bool = True
    """The text was written by a model (every approved card's is, even when a person edited
    it: ``ApprovedCard.ai_generated``); channels that ask label it (GMC's structured_title)."""
    google_category: str | None = None
    """Google's product category id of the card's leaf (inherited), or None: unmapped."""
    shopify_category: str | None = None
    """Shopify's category of the card's leaf (inherited), or None: unmapped."""

    @property
    def sku(self) -> str | None:
        return self.card.sku or self.facts.sku

    @property
    def brand(self) -> str | None:
        return self.card.brand or self.facts.brand

    @property
    def gtin(self) -> str | None:
        return self.card.gtin or self.facts.gtin

    @property
    def price(self) -> str | None:
        return self.facts.price

    def availability(self, shop: ShopSettings) -> str:
        return self.facts.availability or shop.shop_availability

    @property
    def item_id(self) -> str:
        """The feed's id of this product: the SKU when the shop gave one (what it knows the
        product by), else ``vt-`` and 16 hex digits of the object's identity, stable across
        re-approvals of the same object."""
        if self.sku:
            return self.sku
        digest = hashlib.sha256(f"{self.bucket}/{self.key}".encode()).hexdigest()[:16]
        return f"vt-{digest}"

    @property
    def handle(self) -> str:
        """Shopify's URL handle: the name's slug, then the item id's, so two products of the
        same name never share one."""
        name = slug(self.card.product_name)[:180]
        return f"{name}-{slug(self.item_id)}"[:HANDLE_MAX]

    def link(self, shop: ShopSettings) -> str | None:
        """The product page, from VITRINE_SHOP_PRODUCT_URL; None when it is not set."""
        template = shop.shop_product_url
        if not template:
            return None
        values = {"sku": self.sku or self.item_id, "id": self.item_id, "handle": self.handle}
        return template.format(**{k: quote(v, safe="") for k, v in values.items()})

    def image_links(self, shop: ShopSettings) -> list[str]:
        """Every photo's public address (VITRINE_SHOP_IMAGE_URL), the main one first."""
        return [
            shop.shop_image_url.format(bucket=quote(self.bucket, safe=""), key=quote(k, safe="/"))
            for k in self.photos
        ]


def channel_categories(taxonomy: Taxonomy, card: ProductCard) -> tuple[str | None, str | None]:
    """The Google and Shopify categories of the card's leaf in ``taxonomy`` (None each when the
    leaf is unknown to this tree or unmapped)."""
    node = taxonomy.by_id.get(card.category_id) or taxonomy.by_path.get(card.category_path)
    if node is None:
        return None, None
    return node.google_category, node.shopify_category
