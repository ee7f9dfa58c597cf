"""A labelled set: photos and what their cards should say.

One item per line of a JSONL file (or one row of a CSV with the same column names; ``photos``,
``attributes``, ``facts``, ``card`` as JSON text there)::

    {"id": "mug-1", "photos": ["photos/mug-1.jpg"], "category": "Casa > Cozinha > Canecas",
     "color": "vermelho", "attributes": {"material": "cerâmica"}}
    {"id": "shop-42/123", "folder": "s3://incoming/shop-42/123/", "category_id": "tenis-corrida"}

Every label is optional: an item is scored on what it has.  Photos are file paths (relative to
the set's file), ``s3://bucket/key`` objects, or a product ``folder`` (a directory or an
``s3://bucket/prefix/``) whose ``product.json`` names the photos in order and the shop's facts.
A reviewed set (``vitrine eval export-reviewed``) also carries ``card``, the card a person
approved (their edits included) — the truth every field is held to — and ``model_card``, what
the model wrote then; a rejected card is a negative (``verdict: rejected``, ``card`` null,
``rejected_card`` the card the person refused).

Why JSONL and not a folder convention: a label row must name several photos, facts and nested
attributes, and be appendable by a script; CSV is read for people who keep labels in a sheet.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_ITEMS = 100_000
JSON_COLUMNS = ("photos", "attributes", "facts", "card", "model_card", "rejected_card", "source")

Verdict = Literal["approved", "edited", "rejected"]


class LabelError(ValueError):
    """The set cannot be read: which line and why, for a person to fix."""


class LabelledItem(BaseModel):
    """One photo (or product) and its labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=1024, description="Unique in the set.")
    photos: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Photo files (relative to the set) or s3://bucket/key, in order.",
    )
    folder: str | None = Field(
        None, description="A product folder (a directory or s3://bucket/prefix/) instead."
    )
    main: int = Field(0, ge=0, description="Which photo the pixel colour is read from.")
    facts: dict[str, str] = Field(default_factory=dict, description="The shop's facts.")
    category: str | None = Field(None, description="Expected leaf path, 'A > B > C'.")
    category_id: str | None = Field(None, description="Expected leaf id (or give the path).")
    color: str | None = Field(None, description="Expected primary colour, a colour name.")
    attributes: dict[str, Any] | None = Field(
        None, description="Expected attribute values; {} = labelled as having none."
    )
    description: str | None = Field(None, description="A reference description.")
    card: dict[str, Any] | None = Field(None, description="A reviewed card: every field's truth.")
    model_card: dict[str, Any] | None = Field(None, description="What the model wrote then.")
    verdict: Verdict | None = None
    rejected_card: dict[str, Any] | None = None
    source: dict[str, Any] | None = Field(None, description="Provenance (bucket, key, model).")

    @field_validator("photos")
    @classmethod
    def _photos(cls, photos: list[str]) -> list[str]:
        if any(not p.strip() for p in photos):
            raise ValueError("a photo is blank")
        return photos

    @model_validator(mode="after")
    def _where(self) -> LabelledItem:
        if bool(self.photos) == (self.folder is not None):
            raise ValueError("give photos or a folder (one of the two)")
        if self.photos and self.main >= len(self.photos):
            raise ValueError(f"main {self.main} is not one of the {len(self.photos)} photos")
        if self.verdict == "rejected" and self.rejected_card is None:
            raise ValueError("a rejected item names the rejected_card")
        return self

    @property
    def expected_category(self) -> str | None:
        """The label's leaf (path or id), the card's when the item is reviewed."""
        if self.category or self.category_id:
            return self.category or self.category_id
        if self.card is not None:
            path = self.card.get("category_path")
            return path if isinstance(path, str) else None
        return None

    @property
    def expected_color(self) -> str | None:
        if self.color is not None:
            return self.color
        if self.card is not None and isinstance(self.card.get("color_primary"), str):
            return str(self.card["color_primary"])
        return None

    @property
    def expected_attributes(self) -> dict[str, Any] | None:
        if self.attributes is not None:
            return self.attributes
        if self.card is not None and isinstance(self.card.get("attributes"), dict):
            return dict(self.card["attributes"])
        return None


def read_set(path: Path) -> list[LabelledItem]:
    """Every item of a ``.jsonl``/``.json`` or ``.csv`` set; :class:`LabelError` names the
    first bad line.  Ids must be unique (results are keyed on them)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read it as UTF-8 text: {exc}") from None
    rows = _csv_rows(text) if path.suffix.lower() == ".csv" else _jsonl_rows(text)
    items: list[LabelledItem] = []
    seen: set[str] = set()
    for line, row in rows:
        if len(items) >= MAX_ITEMS:
            raise LabelError(f"{path}: more than {MAX_ITEMS} items; split the set")
        try:
            item = LabelledItem.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            raise LabelError(f"{path}:{line}: {problems}") from None
        if item.id in seen:
            raise LabelError(f"{path}:{line}: id {item.id!r} is used twice")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise LabelError(f"{path}: no items")
    return items


def _jsonl_rows(text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise LabelError(f"line {number}: not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise LabelError(f"line {number}: expected a JSON object, not {type(row).__name__}")
        yield number, row


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        number = reader.line_num
        if None in row:
            raise LabelError(f"line {number}: more cells than columns")
        cleaned: dict[str, Any] = {}
        for name, value in row.items():
            if value is None or value == "":
                continue
            if name in JSON_COLUMNS and not (
                name == "photos" and not value.lstrip().startswith("[")
            ):
                try:
                    cleaned[name] = json.loads(value)
                except ValueError as exc:
                    raise LabelError(f"line {number}: column {name}: not JSON: {exc}") from None
            elif name == "photos":
                cleaned[name] = [p.strip() for p in value.split("|")]
            elif name == "main":
                cleaned[name] = value.strip()
            else:
                cleaned[name] = value
        yield number, cleaned


def write_set(items: Iterable[LabelledItem], path: Path) -> int:
    """Write a JSONL set (only the fields an item has); returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(item.model_dump_json(exclude_defaults=True) + "\n")
            count += 1
    return count
