"""``vitrine/eval/export.py`` row by row, without a database: what a decided row of
product_cards becomes, and which rows are skipped and why (the stack test drives the SQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from vitrine.eval import export
from vitrine.eval.export import ExportSummary, facts_of, item_of

MODEL_CARD = {
    "product_name": "Garrafa térmica",
    "category_path": "Casa > Garrafas",
    "category_id": "casa.garrafas",
    "color_primary": "azul",
    "attributes": {"material": "aço inox"},
    "description_long": "Uma garrafa.",
}
AT = datetime(2026, 12, 1, 7, 0, tzinfo=timezone(timedelta(hours=-3)))


def row(key: str = "shop/mug.jpg", **over: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "bucket": "incoming",
        "object_key": key,
        "review_state": "approved",
        "reviewed_by": "ana",
        "reviewed_at": AT,
        "review_note": None,
        "card": MODEL_CARD,
        "edited_card": None,
        "approved_card": MODEL_CARD,
        "model_id": "gemma",
        "prompt_version": "card-v3",
        "sku": None,
        "brand": None,
        "gtin": None,
        "facts": None,
        "photo_keys": None,
        "main_photo": None,
        "edited": False,
        "edited_fields": [],
    }
    values.update(over)
    return values


def test_an_approved_photo_is_its_card_with_the_labels_copied() -> None:
    item = item_of(row(sku="CAN-1"))
    assert item.model_dump(exclude_defaults=True) == {
        "id": "incoming/shop/mug.jpg",
        "photos": ["s3://incoming/shop/mug.jpg"],
        "facts": {"sku": "CAN-1"},
        "category": "Casa > Garrafas",
        "category_id": "casa.garrafas",
        "color": "azul",
        "attributes": {"material": "aço inox"},
        "description": "Uma garrafa.",
        "card": MODEL_CARD,
        "model_card": MODEL_CARD,
        "verdict": "approved",
        "source": {
            "bucket": "incoming",
            "key": "shop/mug.jpg",
            "model_id": "gemma",
            "prompt_version": "card-v3",
            "reviewed_by": "ana",
            "reviewed_at": "2026-12-01T10:00:00+00:00",  # in UTC, whatever the session's zone
        },
    }


def test_an_edited_approval_holds_the_person_s_card() -> None:
    truth = {**MODEL_CARD, "color_primary": "vermelho"}
    item = item_of(row(approved_card=truth, edited=True, edited_fields=["color_primary"]))
    assert item.verdict == "edited" and item.card == truth and item.model_card == MODEL_CARD
    assert item.color == "vermelho"
    assert item.source is not None and item.source["edited_fields"] == ["color_primary"]


def test_a_rejection_is_a_negative_of_the_card_refused() -> None:
    edited = {**MODEL_CARD, "product_name": "Outra"}
    item = item_of(row(review_state="rejected", edited_card=edited, review_note="errado"))
    assert item.verdict == "rejected" and item.card is None and item.rejected_card == edited
    assert item.category is None and item.color is None and item.attributes is None
    assert item.source is not None and item.source["note"] == "errado"
    assert item_of(row(review_state="rejected")).rejected_card == MODEL_CARD


def test_products_are_their_folder() -> None:
    photos = ["shop/1/a.jpg", "shop/1/b.jpg"]
    item = item_of(row("shop/1/product.json", photo_keys=photos, main_photo="shop/1/b.jpg"))
    assert item.folder == "s3://incoming/shop/1/" and item.photos == [] and item.facts == {}
    at_root = item_of(row("product.json", photo_keys=["a.jpg"], main_photo="a.jpg"))
    assert at_root.folder == "s3://incoming/"
    # a product row keyed otherwise (none is written so): its photos in order, main kept
    odd = item_of(row("shop/1/x.json", photo_keys=photos, main_photo="shop/1/b.jpg", sku="S"))
    assert odd.photos == ["s3://incoming/shop/1/a.jpg", "s3://incoming/shop/1/b.jpg"]
    assert odd.main == 1 and odd.facts == {"sku": "S"}


def test_facts_come_from_the_facts_column_as_metadata_names_them() -> None:
    given = {
        "facts": {
            "sku": "A-1",
            "brand": "Acme",
            "title": "Caneca",
            "attributes": {"material": "vidro"},
        },
        "problems": [{"fact": "gtin", "detail": "bad check digit"}],
    }
    assert facts_of(row(facts=given, sku="A-1", brand="Acme")) == {
        "sku": "A-1",
        "brand": "Acme",
        "title": "Caneca",
        "material": "vidro",
    }
    assert facts_of(row(gtin="7891234567895")) == {"gtin": "7891234567895"}


def test_a_row_that_makes_no_item_is_skipped_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [
        row("a.jpg"),
        row("b" * 1100),  # an id longer than a set takes
        row("c.jpg", approved_card=None),
        row("d.jpg", card=["not", "a", "card"], review_state="rejected"),
        row("e.jpg", review_state="rejected", edited=False),
        row("f.jpg", approved_card={**MODEL_CARD, "color_primary": 7}),
    ]
    summary = ExportSummary(path=Path("x.jsonl"))
    items = list(export._items(rows, summary))
    assert [i.id for i in items] == ["incoming/a.jpg", "incoming/e.jpg"]
    assert (summary.approved, summary.edited, summary.rejected) == (1, 0, 1)
    reasons = {s.id: s.reason for s in summary.skipped}
    assert reasons["incoming/" + "b" * 1100] == "id: String should have at most 1024 characters"
    assert reasons["incoming/c.jpg"] == "an approved row without approved_card"
    assert reasons["incoming/d.jpg"] == "the model's card is not a JSON object"
    assert reasons["incoming/f.jpg"] == "color: Input should be a valid string"
    assert sum(summary.skipped_reasons.values()) == 4

    monkeypatch.setattr(export, "MAX_ITEMS", 1)
    capped = ExportSummary(path=Path("x.jsonl"))
    assert len(list(export._items([row("a.jpg"), row("e.jpg")], capped))) == 1
    assert capped.truncated and capped.written == 1


def test_reviewed_at_naive_stays_as_it_is() -> None:
    naive = datetime(2026, 12, 1, 10, 0)
    assert export._iso(naive) == "2026-12-01T10:00:00"
    assert export._iso(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "2026-12-01T10:00:00+00:00"
