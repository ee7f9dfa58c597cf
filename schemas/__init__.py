"""vitrine's contracts: Pydantic models imported by every service, exported as JSON Schema."""

from schemas.card import ProductCard, card_json_schema, card_model
from schemas.language import EN, PT_BR, LanguageProfile, profile_for

__all__ = [
    "EN",
    "PT_BR",
    "LanguageProfile",
    "ProductCard",
    "card_json_schema",
    "card_model",
    "profile_for",
]
