"""The ingest service loop: ``minio.events`` → ``vitrine.jobs`` + ``vitrine.results``.

    python -m services.ingest

Batches of notifications are turned into messages, every message is acknowledged by the broker,
and only then are the batch's offsets committed: a crash replays the batch, and replays are
harmless (job ids are deterministic, the sink's upsert ignores what it has already applied).
A notification that does not parse is logged, counted and parked on the dead-letter topic; it
never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from schemas.messages import MinioEvent
from services.ingest.dedup import RecentEvents, event_identity
from services.ingest.recall import try_recall_handled
from services.ingest.rules import decide
from services.runtime.kafka import (
    encode,
    make_consumer,
    make_producer,
    rewind_after_failure,
    with_retry,
)
from services.runtime.metrics import record_lag
from services.runtime.service import run_service
from services.runtime.settings import KafkaSettings

log = logging.getLogger("vitrine.ingest")

EVENTS = Counter(
    "vitrine_ingest_events_total", "Notification records seen, by outcome.", ["outcome", "reason"]
)
MALFORMED = Counter("vitrine_ingest_malformed_total", "Notifications that did not parse.")
PUBLISHED = Counter(
    "vitrine_ingest_published_total",
    "Messages published, by kind: job, result (queued/rejected/deleted rows), dlq.",
    ["kind"],
)
BATCH_SECONDS = Histogram(
    "vitrine_ingest_batch_seconds",
    "From a batch of notifications read to its outputs acknowledged and its offsets committed.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RETRIES = Counter(
    "vitrine_ingest_batch_retries_total", "Batches re-read after a Kafka error (broker restart)."
)


class IngestSettings(KafkaSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    ingest_group: str = "vitrine-ingest"
    bucket: str = Field("incoming", description="Events of other buckets are ignored.")
    image_max_bytes: int = Field(30 * 1024 * 1024, ge=1)
    batch_max: int = Field(500, ge=1)
    dedup_capacity: int = Field(
        200_000,
        ge=0,
        description="Handled notifications remembered to drop the second copy MinIO's two "
        "targets send (services/ingest/dedup.py); 0 turns the check off.",
    )
    dedup_lookback_s: float = Field(
        60.0,
        ge=0,
        description="At start, events handled this long before the last committed one are read "
        "back from the events topic and remembered, so a copy arriving across a restart is "
        "dropped too (services/ingest/recall.py); 0 turns it off.",
    )


class Ingest:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer = make_producer(settings)
        self.consumer = make_consumer(
            settings, settings.topic_events, group_id=settings.ingest_group
        )
        self.recent = RecentEvents(settings.dedup_capacity)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        await with_retry("producer.start", self.producer.start)
        if s.dedup_capacity:  # before the consumer joins: nothing is read until it is done
            await try_recall_handled(
                s, self.producer, s.ingest_group, s.bucket, s.dedup_lookback_s, self.recent
            )
        await with_retry("consumer.start", self.consumer.start)
        log.info("ingest.started", extra={"topic": self.settings.topic_events})
        failures = 0
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max
                )
                if not batch:
                    continue
                started = time.perf_counter()
                try:
                    sends: list[asyncio.Future[Any]] = []
                    for records in batch.values():
                        for record in records:
                            sends.extend(await self._handle(record))
                    await asyncio.gather(*sends)  # every output acknowledged ...
                    await self.consumer.commit(  # ... before the input is committed
                        {tp: records[-1].offset + 1 for tp, records in batch.items()}
                    )
                    self.recent.commit()
                    failures = 0
                except KafkaError as exc:
                    self.recent.abort()
                    failures += 1
                    BATCH_RETRIES.inc()
                    await rewind_after_failure(self.consumer, batch, exc, failures)
                    continue
                BATCH_SECONDS.observe(time.perf_counter() - started)
                await record_lag(self.consumer, self.settings.ingest_group)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    async def _park(self, record: ConsumerRecord[Any, Any], exc: Exception) -> asyncio.Future[Any]:
        """A notification we cannot read: logged, counted, kept on the dead-letter topic."""
        MALFORMED.inc()
        PUBLISHED.labels("dlq").inc()
        log.error(
            "event.malformed",
            extra={"offset": record.offset, "partition": record.partition, "error": str(exc)[:500]},
        )
        return await self.producer.send(self.settings.topic_dlq, key=record.key, value=record.value)

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> list[asyncio.Future[Any]]:
        s = self.settings
        try:
            event = MinioEvent.model_validate_json(record.value or b"")
        except ValidationError as exc:
            return [await self._park(record, exc)]
        sends = []
        for s3_record in event.records:
            if s3_record.s3.bucket.name != s.bucket:  # another pipeline's bucket
                EVENTS.labels("ignored", "other_bucket").inc()
                continue
            if s.dedup_capacity and not self.recent.first_time(event_identity(s3_record)):
                EVENTS.labels("duplicate", "").inc()  # the durable target's copy
                continue
            try:
                decision = decide(s3_record, s.image_max_bytes)
                ref = s3_record.object_ref()
            except ValidationError as exc:  # parses as an event, but not a valid object
                sends.append(await self._park(record, exc))
                continue
            key = f"{ref.bucket}/{ref.key}"
            if decision.result is not None:
                PUBLISHED.labels("result").inc()
                sends.append(
                    await self.producer.send(
                        s.topic_results, key=ref.message_key, value=encode(decision.result)
                    )
                )
            if decision.job is not None:
                PUBLISHED.labels("job").inc()
                sends.append(
                    await self.producer.send(
                        s.topic_jobs, key=ref.message_key, value=encode(decision.job)
                    )
                )
            outcome = (
                "job"
                if decision.job
                else decision.result.status.value
                if decision.result
                else "ignored"
            )
            reason = decision.result.reason if decision.result else None
            EVENTS.labels(outcome, reason or "").inc()
            log.info(
                f"event.{outcome}",
                extra={
                    "key": key,
                    "event_name": s3_record.event_name,
                    "reason": reason,
                    "trace_id": decision.result.trace_id if decision.result else None,
                    "sequencer": ref.sequencer,
                },
            )
        return sends


def main() -> None:
    settings = IngestSettings()
    run_service("ingest", settings, lambda stop: Ingest(settings).run(stop))
