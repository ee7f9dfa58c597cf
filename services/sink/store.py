"""Writing results into ``product_cards`` — one row per object, newest event wins.

The guard is the whole idea: a result only replaces the row when its ``(sequencer, status rank,
produced_at)`` is strictly newer.  So a replayed batch is a no-op (same tuple), a late
``queued`` never hides a final status of the same event, and a result for an older version of the
object never overwrites the newer one, in whatever order Kafka delivers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from schemas.messages import CardResult

UPSERT = """
INSERT INTO product_cards (
    bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time,
    status, status_rank, product_name, category_standard, description_long, color_primary,
    features_list, card, reason, detail, model_id, prompt_version, attempts, timings,
    job_id, trace_id, produced_at, category_path, category_id, attributes, color_estimate,
    color_distance, checks, sku, brand, gtin, facts, photo_keys, main_photo
) VALUES (
    %(bucket)s, %(object_key)s, %(version_id)s, %(etag)s, %(size_bytes)s, %(content_type)s,
    %(sequencer)s, %(event_time)s, %(status)s, %(status_rank)s, %(product_name)s,
    %(category_standard)s, %(description_long)s, %(color_primary)s, %(features_list)s,
    %(card)s, %(reason)s, %(detail)s, %(model_id)s, %(prompt_version)s, %(attempts)s,
    %(timings)s, %(job_id)s, %(trace_id)s, %(produced_at)s, %(category_path)s, %(category_id)s,
    %(attributes)s, %(color_estimate)s, %(color_distance)s, %(checks)s, %(sku)s, %(brand)s,
    %(gtin)s, %(facts)s, %(photo_keys)s, %(main_photo)s
)
ON CONFLICT (bucket, object_key) DO UPDATE SET
    version_id = EXCLUDED.version_id,
    etag = COALESCE(EXCLUDED.etag, product_cards.etag),
    size_bytes = COALESCE(EXCLUDED.size_bytes, product_cards.size_bytes),
    content_type = COALESCE(EXCLUDED.content_type, product_cards.content_type),
    sequencer = EXCLUDED.sequencer,
    event_time = EXCLUDED.event_time,
    status = EXCLUDED.status,
    status_rank = EXCLUDED.status_rank,
    product_name = EXCLUDED.product_name,
    category_standard = EXCLUDED.category_standard,
    description_long = EXCLUDED.description_long,
    color_primary = EXCLUDED.color_primary,
    features_list = EXCLUDED.features_list,
    card = EXCLUDED.card,
    reason = EXCLUDED.reason,
    detail = EXCLUDED.detail,
    model_id = EXCLUDED.model_id,
    prompt_version = EXCLUDED.prompt_version,
    attempts = EXCLUDED.attempts,
    timings = EXCLUDED.timings,
    job_id = EXCLUDED.job_id,
    trace_id = EXCLUDED.trace_id,
    produced_at = EXCLUDED.produced_at,
    category_path = EXCLUDED.category_path,
    category_id = EXCLUDED.category_id,
    attributes = EXCLUDED.attributes,
    color_estimate = EXCLUDED.color_estimate,
    color_distance = EXCLUDED.color_distance,
    checks = EXCLUDED.checks,
    -- the facts belong to the upload: a result of the same event without them (a dead
    -- letter's, an older producer's) keeps them; a new version replaces them, none or not
    sku = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.sku, product_cards.sku) ELSE EXCLUDED.sku END,
    brand = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.brand, product_cards.brand) ELSE EXCLUDED.brand END,
    gtin = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.gtin, product_cards.gtin) ELSE EXCLUDED.gtin END,
    facts = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.facts, product_cards.facts) ELSE EXCLUDED.facts END,
    photo_keys = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.photo_keys, product_cards.photo_keys) ELSE EXCLUDED.photo_keys END,
    main_photo = CASE WHEN EXCLUDED.sequencer = product_cards.sequencer
        THEN COALESCE(EXCLUDED.main_photo, product_cards.main_photo) ELSE EXCLUDED.main_photo END,
    results_applied = product_cards.results_applied + 1,
    updated_at = now()
WHERE (EXCLUDED.sequencer, EXCLUDED.status_rank, EXCLUDED.produced_at)
    > (product_cards.sequencer, product_cards.status_rank, product_cards.produced_at)
"""


def row(result: CardResult) -> dict[str, Any]:
    o, card = result.object, result.card
    colour = result.checks.colour if result.checks else None
    facts = result.facts.facts if result.facts else None
    product = result.product
    return {
        "bucket": o.bucket,
        "object_key": o.key,
        "version_id": o.version_id,
        "etag": o.etag,
        "size_bytes": o.size,
        "content_type": o.content_type,
        "sequencer": o.sequence,
        "event_time": o.event_time,
        "status": result.status.value,
        "status_rank": 1 if result.status.final else 0,
        "product_name": card.product_name if card else None,
        "category_standard": card.category_standard if card else None,
        "description_long": card.description_long if card else None,
        "color_primary": card.color_primary if card else None,
        "features_list": Jsonb(card.features_list) if card else None,
        "card": Jsonb(card.model_dump()) if card else None,
        "reason": result.reason,
        "detail": result.detail,
        "model_id": result.model_id,
        "prompt_version": result.prompt_version,
        "attempts": result.attempts,
        "timings": Jsonb(result.timings.model_dump()) if result.timings else None,
        "job_id": result.job_id,
        "trace_id": result.trace_id,
        "produced_at": result.produced_at,
        "category_path": card.category_path if card else None,
        "category_id": card.category_id if card else None,
        "attributes": Jsonb(card.attributes) if card else None,
        "color_estimate": colour.estimate if colour else None,
        "color_distance": colour.distance if colour else None,
        "checks": Jsonb(result.checks.model_dump(exclude_none=True)) if result.checks else None,
        "sku": facts.sku if facts else None,
        "brand": facts.brand if facts else None,
        "gtin": facts.gtin if facts else None,
        "facts": Jsonb(result.facts.model_dump(exclude_defaults=True)) if result.facts else None,
        "photo_keys": list(product.photos) if product else None,
        "main_photo": product.photos[product.main] if product else None,
    }


async def upsert_batch(conn: AsyncConnection[Any], results: Sequence[CardResult]) -> int:
    """Apply ``results`` in order, in one transaction; returns how many rows changed."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(UPSERT, [row(r) for r in results], returning=False)
        return max(cur.rowcount, 0)
