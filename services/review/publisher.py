"""Approved cards → ``vitrine.cards.approved``, from the outbox in ``card_reviews``.

An approval commits its ``card_reviews`` row first; this loop then sends every approval whose
``published_at`` is NULL, oldest first, and marks them once Kafka has acknowledged them.  So a
broker that is down when a person approves delays the message, never loses it, and a crash
between the send and the mark sends it again (the message's ``review_id`` lets a consumer drop
the duplicate).  The desk wakes the loop after each approval; it also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from schemas.card import ProductCard
from schemas.messages import ApprovedCard, ObjectRef
from services.runtime.kafka import encode

log = logging.getLogger("vitrine.review")

PUBLISHED = Counter("vitrine_review_published_total", "Approved cards sent to Kafka.")
PUBLISH_ERRORS = Counter("vitrine_review_publish_errors_total", "Failed outbox rounds.")
UNPUBLISHABLE = Counter(
    "vitrine_review_unpublishable_total",
    "Approvals whose card no longer makes a valid message (left in the outbox, logged).",
)

OUTBOX = """
SELECT r.id, r.reviewer, r.at, r.after, r.fields, r.edited, r.note,
       p.bucket, p.object_key, p.version_id, p.etag, p.size_bytes, p.content_type, p.sequencer,
       p.event_time, p.model_id, p.prompt_version
FROM card_reviews r JOIN product_cards p USING (bucket, object_key)
WHERE r.decision = 'approve' AND r.published_at IS NULL AND r.id <> ALL(%s)
ORDER BY r.id LIMIT %s
"""


def message(row: dict[str, Any]) -> ApprovedCard:
    return ApprovedCard(
        review_id=row["id"],
        object=ObjectRef.from_row(row),
        card=ProductCard.model_validate(row["after"]),
        edited=row["edited"],
        edited_fields=list(row["fields"] or []),
        approved_by=row["reviewer"],
        approved_at=row["at"],
        note=row["note"],
        model_id=row["model_id"],
        prompt_version=row["prompt_version"],
    )


class Publisher:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        producer: AIOKafkaProducer,
        topic: str,
        interval: float,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.topic = topic
        self.interval = interval
        self.wake = asyncio.Event()
        self.broken: set[int] = set()  # approvals that make no valid message

    def nudge(self) -> None:
        """Start a round now rather than at the next poll: after an approval commits, so the
        card is published at once, and at shutdown, so the loop sees the stop."""
        self.wake.set()

    async def publish_pending(self, batch: int = 200) -> int:
        """One round: send what is unpublished, mark it; returns how many were sent.

        An approval that no longer makes a valid message (a card row edited by hand in SQL,
        say) is logged, counted and left in the outbox, where it can be seen; it is skipped
        for as long as this process runs, so it never holds back the approvals after it."""
        sent = 0
        while True:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(OUTBOX, (sorted(self.broken), batch))
                rows = await cur.fetchall()
            if not rows:
                return sent
            ready: list[tuple[dict[str, Any], bytes]] = []
            for r in rows:
                try:
                    ready.append((r, encode(message(r))))
                except ValueError as exc:  # pydantic's ValidationError is one
                    self.broken.add(r["id"])
                    UNPUBLISHABLE.inc()
                    log.error(
                        "review.unpublishable",
                        extra={
                            "key": f"{r['bucket']}/{r['object_key']}",
                            "review_id": r["id"],
                            "error": str(exc)[:500],
                        },
                    )
            futures = [
                await self.producer.send(
                    self.topic, key=f"{r['bucket']}/{r['object_key']}".encode(), value=value
                )
                for r, value in ready
            ]
            await asyncio.gather(*futures)
            if not ready:
                continue
            async with self.pool.connection() as conn:
                await conn.execute(
                    "UPDATE card_reviews SET published_at = now() WHERE id = ANY(%s)",
                    ([r["id"] for r, _ in ready],),
                )
            PUBLISHED.inc(len(ready))
            for r, _ in ready:
                log.info(
                    "review.published",
                    extra={"key": f"{r['bucket']}/{r['object_key']}", "review_id": r["id"]},
                )
            sent += len(ready)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()  # before the round: a wake during it runs another
            try:
                await self.publish_pending()
            except Exception:  # the broker or the database away: the outbox keeps it
                PUBLISH_ERRORS.inc()
                log.warning("review.publish_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)
