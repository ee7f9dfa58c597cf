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

OUTBOX = """
SELECT r.id, r.reviewer, r.at, r.after, r.fields, r.edited, r.note,
       p.bucket, p.object_key, p.version_id, p.etag, p.size_bytes, p.content_type, p.sequencer,
       p.event_time, p.model_id, p.prompt_version
FROM card_reviews r JOIN product_cards p USING (bucket, object_key)
WHERE r.decision = 'approve' AND r.published_at IS NULL
ORDER BY r.id LIMIT %s
"""


def message(row: dict[str, Any]) -> ApprovedCard:
    return ApprovedCard(
        review_id=row["id"],
        object=ObjectRef(
            bucket=row["bucket"],
            key=row["object_key"],
            version_id=row["version_id"],
            etag=row["etag"],
            size=row["size_bytes"],
            content_type=row["content_type"],
            sequencer=format(int(row["sequencer"]), "X"),
            event_time=row["event_time"],
        ),
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
        self.idle = asyncio.Event()  # set while nothing is left to send (tests wait on it)

    async def publish_pending(self, batch: int = 200) -> int:
        """One round: send what is unpublished, mark it; returns how many were sent."""
        sent = 0
        while True:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(OUTBOX, (batch,))
                rows = await cur.fetchall()
            if not rows:
                return sent
            futures = [
                await self.producer.send(
                    self.topic,
                    key=f"{r['bucket']}/{r['object_key']}".encode(),
                    value=encode(message(r)),
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            async with self.pool.connection() as conn:
                await conn.execute(
                    "UPDATE card_reviews SET published_at = now() WHERE id = ANY(%s)",
                    ([r["id"] for r in rows],),
                )
            PUBLISHED.inc(len(rows))
            for r in rows:
                log.info(
                    "review.published",
                    extra={"key": f"{r['bucket']}/{r['object_key']}", "review_id": r["id"]},
                )
            sent += len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()  # before the round: a wake during it runs another
            self.idle.clear()
            try:
                await self.publish_pending()
                self.idle.set()
            except Exception:  # the broker or the database away: the outbox keeps it
                PUBLISH_ERRORS.inc()
                log.warning("review.publish_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)
