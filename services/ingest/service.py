"""The ingest service loop: ``minio.events`` → ``vitrine.jobs`` + ``vitrine.results``.

    python -m services.ingest

A stage on the shared runtime (``services/runtime/stage.py``): batches of notifications become
messages, every message is acknowledged by the broker, and only then are the batch's offsets
committed.  A crash replays the batch, and replays are harmless (job ids are deterministic, the
sink's upsert ignores what it has already applied).  A notification that does not parse is
parked on the dead-letter topic with the reason in its headers; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter
from pydantic import ValidationError

from schemas.messages import MinioEvent
from schemas.reasons import Reason
from services.ingest.dedup import RecentEvents, event_identity
from services.ingest.recall import try_recall_handled
from services.ingest.rules import decide
from services.ingest.settings import IngestSettings
from services.runtime.dead_letters import InvalidMessage
from services.runtime.kafka import encode, make_consumer, make_producer
from services.runtime.service import run_service
from services.runtime.stage import Item, Output, Stage, StageRunner

log = logging.getLogger("vitrine.ingest")

EVENTS = Counter(
    "vitrine_ingest_events_total", "Notification records seen, by outcome.", ["outcome", "reason"]
)
MALFORMED = Counter("vitrine_ingest_malformed_total", "Notifications that did not parse.")
PUBLISHED = Counter(
    "vitrine_ingest_published_total",
    "Messages published, by kind: job, result (queued/rejected/deleted rows); parked "
    "notifications are counted by vitrine_dead_letters_total.",
    ["kind"],
)


class Ingest(Stage[MinioEvent]):
    """A notification → the job and/or result messages the rules decide for each of its
    records; parked when it does not parse, or when a record is not a valid object."""

    service = "ingest"

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.dlq_topic = settings.topic_dlq
        self.recent = RecentEvents(settings.dedup_capacity)

    def decode(self, record: ConsumerRecord[Any, Any]) -> MinioEvent:
        try:
            return MinioEvent.model_validate_json(record.value or b"")
        except ValidationError as exc:
            MALFORMED.inc()
            raise InvalidMessage(Reason.malformed_event, str(exc)) from None

    async def handle(self, items: Sequence[Item[MinioEvent]]) -> list[Output]:
        outputs: list[Output] = []
        for item in items:
            outputs.extend(self._outputs(item))
        return outputs

    def committed(self, items: Sequence[Item[MinioEvent]]) -> None:
        self.recent.commit()

    def aborted(self) -> None:
        self.recent.abort()

    def _outputs(self, item: Item[MinioEvent]) -> list[Output]:
        s = self.settings
        outputs = []
        for s3_record in item.value.records:
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
                MALFORMED.inc()
                outputs.append(self.park(item.record, Reason.invalid_object, str(exc)))
                continue
            key = f"{ref.bucket}/{ref.key}"
            if decision.result is not None:
                PUBLISHED.labels("result").inc()
                outputs.append(Output(s.topic_results, ref.message_key, encode(decision.result)))
            if decision.job is not None:
                PUBLISHED.labels("job").inc()
                outputs.append(Output(s.topic_jobs, ref.message_key, encode(decision.job)))
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
        return outputs


async def serve(settings: IngestSettings, stop: asyncio.Event) -> None:
    stage = Ingest(settings)
    producer = make_producer(settings)
    consumer = make_consumer(settings, settings.topic_events, group_id=settings.ingest_group)
    runner = StageRunner(
        stage, consumer, producer, group=settings.ingest_group, batch_max=settings.ingest_batch_max
    )

    async def recall() -> None:  # before the consumer joins: nothing is read until it is done
        if settings.dedup_capacity:
            await try_recall_handled(
                settings,
                producer,
                settings.ingest_group,
                settings.bucket,
                settings.dedup_lookback_s,
                stage.recent,
            )

    await runner.serve(stop, before_consume=recall)


def main() -> None:
    settings = IngestSettings()
    run_service("ingest", settings, lambda stop: serve(settings, stop))
