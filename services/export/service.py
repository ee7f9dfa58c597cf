"""The export stage: ``vitrine.cards.approved`` → the channels' feeds in the exports bucket.

    python -m services.export

A stage on the shared runtime (``services/runtime/stage.py``).  Each batch of approvals (a burst
waits up to VITRINE_EXPORT_WAIT_MS to become one batch) rebuilds every channel's full feed from
the approved rows in PostgreSQL, writes the batch's own cards as each channel's delta, and only
then lets the runner commit the offsets: a crash in between writes the same feeds again, never
fewer.  PostgreSQL and MinIO faults are retried with backoff; a message that breaks the
ApprovedCard contract is parked on the dead-letter topic.  The stage needs nothing from the
message but *which* cards changed: the review state it exports is PostgreSQL's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import urllib3
from aiokafka.structs import ConsumerRecord
from minio import Minio
from minio.error import S3Error
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from schemas.messages import ApprovedCard
from schemas.reasons import Reason
from schemas.taxonomy import Taxonomy
from services.export.channels import CHANNELS, build_feed
from services.export.listing import Listing
from services.export.settings import ExportSettings
from services.export.source import load_listings
from services.export.store import ChannelWrite, write_feeds
from services.runtime.dead_letters import InvalidMessage
from services.runtime.kafka import make_consumer, make_producer
from services.runtime.pg import Reconnecting
from services.runtime.retry import transient
from services.runtime.s3 import make_minio
from services.runtime.service import run_service
from services.runtime.stage import Item, Output, Stage, StageRunner

log = logging.getLogger("vitrine.export")

FEEDS_WRITTEN = Counter(
    "vitrine_export_feeds_written_total", "Full feeds written to the exports bucket.", ["channel"]
)
LISTED = Gauge("vitrine_export_listed", "Approved cards in the channel's feed.", ["channel"])
LEFT_OUT = Gauge(
    "vitrine_export_left_out", "Approved cards the channel's rules leave out.", ["channel"]
)
PROBLEMS = Counter(
    "vitrine_export_problems_total",
    "Rules broken by left-out cards, per written feed, by channel and field.",
    ["channel", "field"],
)
UNREADABLE = Gauge("vitrine_export_unreadable", "Approved rows whose card no longer validates.")
BATCH_SECONDS = Histogram(
    "vitrine_export_batch_seconds",
    "From a batch of approvals read to every feed written.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter("vitrine_export_retries_total", "Reads or writes retried, by what.", ["what"])
MALFORMED = Counter("vitrine_export_malformed_total", "Approved-card messages that did not parse.")


class Export(Stage[ApprovedCard]):
    """Approvals → feeds: one rebuild per batch, retried through outages."""

    service = "export"

    def __init__(self, settings: ExportSettings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.dlq_topic = settings.topic_dlq
        self.stop = stop
        self.tree: Taxonomy = settings.card_contract().tree()
        self.minio: Minio = make_minio(settings)
        self.db = Reconnecting(
            settings.pg_dsn.get_secret_value(), "vitrine-export", autocommit=True
        )

    def decode(self, record: ConsumerRecord[Any, Any]) -> ApprovedCard:
        try:
            return ApprovedCard.model_validate_json(record.value or b"")
        except ValidationError as exc:
            MALFORMED.inc()
            raise InvalidMessage(Reason.malformed_approval, str(exc)) from None

    async def handle(self, items: Sequence[Item[ApprovedCard]]) -> list[Output]:
        ours = [i.value for i in items if i.value.object.bucket == self.settings.bucket]
        if not ours:
            return []  # approvals of another pipeline's bucket: not this feed's cards
        started = time.perf_counter()
        listings, skipped = await self._listings()
        changed = {a.object.key for a in ours}
        writes = []
        for channel in CHANNELS.values():
            full = build_feed(channel, listings, self.settings)
            delta = full.only(changed)
            writes.append(ChannelWrite(full, delta if delta.listed else None))
        at = datetime.now(UTC)
        last = max(a.review_id for a in ours)
        await self._write(writes, at, skipped, last)
        for write in writes:
            name = write.full.channel.name
            FEEDS_WRITTEN.labels(name).inc()
            LISTED.labels(name).set(len(write.full.listed))
            LEFT_OUT.labels(name).set(len(write.full.left_out))
            for entry in write.full.left_out:
                for problem in entry.problems:
                    PROBLEMS.labels(name, problem.field).inc()
        UNREADABLE.set(len(skipped))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "feeds.written",
            extra={
                "keys": sorted(f"{self.settings.bucket}/{k}" for k in changed),
                "listed": {w.full.channel.name: len(w.full.listed) for w in writes},
                "left_out": {w.full.channel.name: len(w.full.left_out) for w in writes},
            },
        )
        return []

    async def _listings(self) -> tuple[list[Listing], list[tuple[str, str]]]:
        return await self.db.run(
            "db.approved",
            lambda conn: load_listings(conn, self.tree, bucket=self.settings.bucket),
            stop=self.stop,
            on_retry=RETRIES.labels("db").inc,
        )

    async def _write(
        self,
        writes: list[ChannelWrite],
        at: datetime,
        skipped: list[tuple[str, str]],
        last: int,
    ) -> None:
        async for attempt in transient(
            "s3.feeds",
            (S3Error, urllib3.exceptions.HTTPError, OSError),
            max_wait=10,
            stop_event=self.stop,
            on_retry=RETRIES.labels("s3").inc,
        ):
            with attempt:
                await asyncio.to_thread(
                    write_feeds, self.minio, self.settings.exports_bucket, writes, at, skipped, last
                )
                return
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.db.close()


async def serve(settings: ExportSettings, stop: asyncio.Event) -> None:
    export = Export(settings, stop)
    consumer = make_consumer(settings, settings.topic_approved, group_id=settings.export_group)
    producer = make_producer(settings)  # for the dead-letter topic
    runner = StageRunner(
        export,
        consumer,
        producer,
        group=settings.export_group,
        batch_max=settings.export_batch_max,
        poll_ms=settings.export_wait_ms,
    )
    try:
        await runner.serve(stop)
    finally:
        await export.close()


def main() -> None:
    settings = ExportSettings()
    run_service("export", settings, lambda stop: serve(settings, stop))
