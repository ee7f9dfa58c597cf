"""The approved cards, as PostgreSQL holds them: what every feed is built from.

PostgreSQL owns the review state, so a feed is always rebuilt from it rather than kept by
adding messages up: a card approved and then rejected, or regenerated (which sends it back to
pending), leaves the next feed by itself.  The card is the one approved (``approved_card``,
written with the approval: the person's edit where there was one); the facts, the photos and
the product's order come from the row the sink wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from schemas.card import ProductCard
from schemas.facts import GivenFacts, ProductFacts
from schemas.taxonomy import Taxonomy
from services.export.listing import Listing, channel_categories

log = logging.getLogger("vitrine.export")

APPROVED_ROWS = """
SELECT bucket, object_key, coalesce(approved_card, edited_card, card) AS card,
       edited_card IS NOT NULL AS edited, facts, photo_keys, main_photo, reviewed_at
FROM product_cards
WHERE status = 'done' AND review_state = 'approved'
  AND bucket = %(bucket)s
"""
"""The approved rows of one bucket, as :func:`listing_from_row` reads them (every reader of
approved cards starts from this: the stage, ``vitrine export``, the desk's Exports page)."""

LISTINGS_SQL = (
    APPROVED_ROWS
    + """
  AND (%(since)s::timestamptz IS NULL OR reviewed_at >= %(since)s::timestamptz)
  AND (%(keys)s::text[] IS NULL OR object_key = ANY(%(keys)s::text[]))
ORDER BY reviewed_at, object_key
"""
)
"""Approved rows of one bucket; ``since`` and ``keys`` narrow it (NULL: no narrowing)."""


def photos_of(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The product's photos, the main one first (a single photo: its own key)."""
    keys = list(row.get("photo_keys") or [row["object_key"]])
    main = row.get("main_photo")
    if main in keys:
        keys.remove(main)
        keys.insert(0, main)
    return tuple(keys)


def listing_from_row(row: Mapping[str, Any], taxonomy: Taxonomy) -> Listing:
    """One approved row as a :class:`Listing`; raises ValidationError for a card or facts that
    no longer hold (a row written under another contract)."""
    card = ProductCard.model_validate(row["card"])
    given = row.get("facts")
    facts = GivenFacts.model_validate(given).facts if given else ProductFacts()
    google, shopify = channel_categories(taxonomy, card)
    approved = row.get("reviewed_at") or datetime.now(UTC)
    return Listing(
        bucket=row["bucket"],
        key=row["object_key"],
        card=card,
        facts=facts,
        photos=photos_of(row),
        approved_at=approved,
        edited=bool(row.get("edited")),
        google_category=google,
        shopify_category=shopify,
    )


def listings_from_rows(
    rows: Iterable[Mapping[str, Any]], taxonomy: Taxonomy
) -> tuple[list[Listing], list[tuple[str, str]]]:
    """The rows as listings, and ``(bucket/key, why)`` for each that cannot be one: a bad row
    is reported, never the end of a feed."""
    listings: list[Listing] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        where = f"{row['bucket']}/{row['object_key']}"
        try:
            listings.append(listing_from_row(row, taxonomy))
        except ValidationError as exc:
            why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            log.warning("listing.unreadable", extra={"key": where, "error": why})
            skipped.append((where, why))
    return listings, skipped


async def load_listings(
    conn: psycopg.AsyncConnection[Any],
    taxonomy: Taxonomy,
    *,
    bucket: str,
    since: datetime | None = None,
    keys: Sequence[str] | None = None,
) -> tuple[list[Listing], list[tuple[str, str]]]:
    """The approved cards of ``bucket`` (approved at or after ``since``; only ``keys``)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            LISTINGS_SQL,
            {"bucket": bucket, "since": since, "keys": list(keys) if keys is not None else None},
        )
        rows = await cur.fetchall()
    return listings_from_rows(rows, taxonomy)
