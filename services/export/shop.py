"""What the feeds need that a card does not have: the shop's currency, links, defaults.

Read from ``VITRINE_SHOP_*`` variables by every process that builds a feed or judges a card
against a channel (the export stage, ``vitrine export``, the review desk), so all three agree.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from services.runtime.settings import VitrineSettings

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
LINK_FIELDS = ("sku", "id", "handle")
IMAGE_FIELDS = ("bucket", "key")


def _template(value: str, allowed: tuple[str, ...], name: str) -> str:
    value = value.strip()
    if not value:
        return value
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} must start with http:// or https://")
    unknown = sorted(set(PLACEHOLDER.findall(value)) - set(allowed))
    if unknown:
        known = ", ".join("{" + a + "}" for a in allowed)
        raise ValueError(f"{name}: unknown placeholder(s) {unknown}; use {known}")
    if "{" in PLACEHOLDER.sub("", value) or "}" in PLACEHOLDER.sub("", value):
        raise ValueError(f"{name}: an unmatched brace")
    return value


class ShopSettings(VitrineSettings):
    """The shop as the channels see it."""

    shop_currency: str = Field(
        "BRL", description="ISO 4217 code of the prices (the price fact is in this currency)."
    )
    shop_product_url: str = Field(
        "",
        description="The product page's address, from the card: placeholders {sku}, {id} (the "
        "feed's item id: the SKU, else one derived from the object key) and {handle}; empty: "
        "no link, and Google Merchant Center refuses every card (link is required there).",
    )
    shop_image_url: str = Field(
        "http://127.0.0.1:29000/{bucket}/{key}",
        description="A photo's public address, from its object: placeholders {bucket} and "
        "{key} (URL-quoted); point it at the CDN or public bucket the channels can fetch.",
    )
    shop_availability: Literal["in_stock", "out_of_stock", "preorder", "backorder"] = Field(
        "in_stock", description="Availability of a product whose facts do not say."
    )
    shop_condition: Literal["new", "refurbished", "used"] = Field(
        "new", description="Google Merchant Center's condition of every product."
    )
    shop_vendor: str = Field(
        "", max_length=255, description="Shopify's Vendor when the card has no brand."
    )
    shop_shopify_status: Literal["active", "draft", "unlisted"] = Field(
        "active", description="Shopify Status of the exported products."
    )
    shop_content_language: str = Field(
        "pt", description="Merchant API contentLanguage (ISO 639-1) of the card text."
    )
    shop_feed_label: str = Field(
        "BR", description="Merchant API feedLabel (the target country, as Google suggests)."
    )

    @field_validator("shop_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        from services.export.channels.rules import CURRENCIES

        code = value.strip().upper()
        if code not in CURRENCIES:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code (BRL, EUR, USD, ...)")
        return code

    @field_validator("shop_product_url")
    @classmethod
    def _product_url(cls, value: str) -> str:
        return _template(value, LINK_FIELDS, "VITRINE_SHOP_PRODUCT_URL")

    @field_validator("shop_image_url")
    @classmethod
    def _image_url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("VITRINE_SHOP_IMAGE_URL is needed: every channel wants an image")
        return _template(value, IMAGE_FIELDS, "VITRINE_SHOP_IMAGE_URL")

    @field_validator("shop_content_language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{2}", value.strip()):
            raise ValueError("a two-letter ISO 639-1 code (pt, en, es)")
        return value.strip()

    @field_validator("shop_feed_label")
    @classmethod
    def _feed_label(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z0-9_-]{1,20}", value.strip()):
            raise ValueError("uppercase letters, digits, - and _, at most 20 (BR, PT)")
        return value.strip()
