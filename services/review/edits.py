"""A person's edit of a card: merged onto the current card, validated by the deployment's card
contract, and described as the fields it changed.

The contract is the one the workers generate with (``EngineSettings.card_type``: the same tree,
colour rule and word minimum, read from the same ``VITRINE_*`` variables), so a card a person
saves is one the pipeline could have produced; a 20-word description is refused with the
validator's own message, per field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from schemas.api import EDITABLE_FIELDS
from schemas.card import ProductCard
from schemas.taxonomy import Attribute, Category, Taxonomy


class EditRefused(ValueError):
    """The edited card breaks the contract; ``fields`` maps a field to its message."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def card_fields(card: ProductCard | Mapping[str, Any]) -> dict[str, Any]:
    return card.model_dump() if isinstance(card, ProductCard) else dict(card)


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """The card fields whose values differ (derived category fields follow category_path)."""
    before, after = before or {}, after or {}
    return [name for name in EDITABLE_FIELDS if before.get(name) != after.get(name)]


def _message(error: Any) -> tuple[str, str]:
    loc = [str(p) for p in error["loc"]]
    field = loc[0] if loc else "card"
    if field in ("category_id", "category_standard"):
        field = "category_path"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a whole-card check (the tree's): its message names the field first
        for name in ("attributes", "category_path", "category_id", "category_standard"):
            if message.startswith(name):
                field = "attributes" if name == "attributes" else "category_path"
                message = message.removeprefix(f"{name}: ") if name == "attributes" else message
                break
    if field == "description_long" and error["type"] in (
        "string_pattern_mismatch",
        "string_too_short",
    ):
        text = str(error.get("input") or "")
        message = (
            f"the description is too short: {len(text.split())} words, {len(text)} characters "
            f"({message.lower() if error['type'] == 'string_too_short' else 'fewer words than '}"
            f"{'' if error['type'] == 'string_too_short' else 'this catalogue asks for'})"
        )
    if len(loc) > 1:
        message = f"{'.'.join(loc[1:])}: {message}"
    return field, message


def apply_edit(
    card_type: type[ProductCard], current: Mapping[str, Any], changes: Mapping[str, Any]
) -> ProductCard:
    """``current`` with ``changes`` applied, as a valid card of ``card_type``; raises
    :class:`EditRefused` with one message per offending field."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise EditRefused({name: "not an editable field" for name in unknown})
    merged = {**current, **changes}
    tree = card_type.taxonomy
    if tree is not None and "category_path" in changes:
        leaf = tree.leaf(str(changes["category_path"]))
        if leaf is None:
            raise EditRefused({"category_path": f"{changes['category_path']!r} is not a leaf"})
        merged.update(category_standard=leaf.top, category_id=leaf.id)
        if "attributes" not in changes:  # the old leaf's attributes may not fit the new one
            declared = {a.name for a in leaf.attributes}
            merged["attributes"] = {
                k: v for k, v in (merged.get("attributes") or {}).items() if k in declared
            }
    if "description_long" in changes:
        # browsers send CRLF line ends; a text left as it was must compare equal
        merged["description_long"] = str(changes["description_long"]).replace("\r\n", "\n").strip()
    try:
        return card_type.model_validate(merged)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors(include_url=False):
            field, message = _message(error)
            problems.setdefault(field, message)
        raise EditRefused(problems) from None


def attributes_of(tree: Taxonomy | None, path: str | None) -> tuple[Attribute, ...]:
    leaf: Category | None = tree.leaf(path) if tree is not None and path else None
    return leaf.attributes if leaf is not None else ()


def parse_attribute(attribute: Attribute, raw: str, unit_value: str | None = None) -> Any:
    """A form field's text as the attribute's JSON value; None when left empty."""
    text = raw.strip()
    if not text:
        return None
    if attribute.type == "boolean":
        return text.lower() in ("true", "1", "sim", "yes", "on")
    if attribute.type == "number":
        try:
            number: float | int = float(text.replace(",", "."))
        except ValueError:
            return text  # the contract refuses it, with its message
        if float(number).is_integer():
            number = int(number)
        return {"value": number, "unit": unit_value or attribute.unit}
    return text


def form_changes(
    card_type: type[ProductCard], current: Mapping[str, Any], form: Mapping[str, str]
) -> dict[str, Any]:
    """The edit a submitted card form stands for: every field it carries, compared later."""
    changes: dict[str, Any] = {}
    for name in ("product_name", "category_path", "description_long", "color_primary"):
        if name in form:
            changes[name] = form[name].strip() if name != "description_long" else form[name]
    features = [form.get(f"feature_{i}") for i in (1, 2, 3)]
    if any(f is not None for f in features):
        changes["features_list"] = [(f or "").strip() for f in features]
    path = changes.get("category_path", current.get("category_path"))
    if any(k.startswith("attr.") for k in form):
        attributes: dict[str, Any] = {}
        for attribute in attributes_of(card_type.taxonomy, path):
            value = parse_attribute(attribute, form.get(f"attr.{attribute.name}", ""))
            if value is not None:
                attributes[attribute.name] = value
        changes["attributes"] = attributes
    return changes
