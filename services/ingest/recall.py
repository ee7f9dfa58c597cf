"""Remembering, at start, the notifications the previous ingest process handled last.

The durable copy of an event arrives a few seconds after the fast one (services/ingest/dedup.py).
When ingest restarts inside that gap, the fast copy is behind the committed offset and the
durable copy ahead of it; a fresh process with an empty memory would turn the durable copy into
a second job, which costs a second generation on the model.  The events topic already records
what was handled: the messages just before the group's committed offset.  So before the loop
starts, ingest reads back the messages appended within ``dedup_lookback_s`` of the last handled
one on each partition and remembers their identities as handled.

Reading back is an optimisation, never a precondition: on any Kafka error or after
``RECALL_TIMEOUT_S`` ingest logs it and starts with what it has (a late copy then costs one
duplicate job, which the sink absorbs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Iterable, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.messages import MinioEvent
from services.ingest.dedup import RecentEvents, event_identity
from services.runtime.kafka import make_consumer
from services.runtime.settings import KafkaSettings

log = logging.getLogger("vitrine.ingest")

RECALL_TIMEOUT_S = 30.0
POLL_MS = 1000


def identities(value: bytes | None, bucket: str) -> Iterator[Hashable]:
    """The identities of the records of one notification that ingest would have handled."""
    try:
        event = MinioEvent.model_validate_json(value or b"")
    except ValidationError:
        return  # parked on the dead-letter topic then, nothing to remember
    for record in event.records:
        if record.s3.bucket.name == bucket:
            yield event_identity(record)


async def _read_back(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int, lookback_ms: int
) -> list[bytes | None]:
    """Values of ``tp`` from ``lookback_ms`` before its message ``end - 1`` up to ``end``."""
    consumer.seek(tp, end - 1)
    last = (await consumer.getmany(tp, timeout_ms=POLL_MS, max_records=1)).get(tp)
    if not last:
        return []
    found = await consumer.offsets_for_times({tp: max(last[0].timestamp - lookback_ms, 0)})
    at = found.get(tp)
    consumer.seek(tp, min(at.offset, end - 1) if at is not None else end - 1)
    values: list[bytes | None] = []
    while await consumer.position(tp) < end:
        records = (await consumer.getmany(tp, timeout_ms=POLL_MS, max_records=1000)).get(tp)
        if not records:
            break  # nothing more readable before ``end`` (a transaction marker, retention)
        values += [r.value for r in records if r.offset < end]
    return values


async def recall_handled(
    settings: KafkaSettings,
    partitions: Iterable[int],
    group: str,
    bucket: str,
    lookback_s: float,
    recent: RecentEvents,
) -> int:
    """Remember the events handled within ``lookback_s`` before ``group``'s committed offsets
    on ``partitions`` of the events topic; returns how many identities were remembered."""
    if lookback_s <= 0 or not recent.capacity:
        return 0
    started = time.perf_counter()
    topic = settings.topic_events
    # The group's id to read its committed offsets; assigned by hand, so it never joins the
    # group (and auto-commit is off in make_consumer): the service's own consumer is unaffected.
    consumer = make_consumer(settings, group_id=group)
    remembered = 0
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            # One partition at a time: with several assigned, the fetcher also waits on the
            # others (fetch_max_wait_ms each time) while they have nothing new.
            consumer.assign([tp])
            end = await consumer.committed(tp)
            if end is None or end <= starts[tp]:
                continue
            handled = [
                identity
                for value in await _read_back(consumer, tp, end, int(lookback_s * 1000))
                for identity in identities(value, bucket)
            ]
            remembered += recent.remember(handled)
    finally:
        await consumer.stop()
    log.info(
        "ingest.recalled",
        extra={
            "topic": topic,
            "remembered": remembered,
            "ms": round((time.perf_counter() - started) * 1000.0, 1),
        },
    )
    return remembered


async def try_recall_handled(
    settings: KafkaSettings,
    producer: AIOKafkaProducer,
    group: str,
    bucket: str,
    lookback_s: float,
    recent: RecentEvents,
) -> int:
    """``recall_handled`` that never stops the service from starting; the started ``producer``
    knows the events topic's partitions (a consumer's metadata covers only what it reads)."""

    async def recall() -> int:
        partitions = await producer.partitions_for(settings.topic_events)
        return await recall_handled(settings, partitions, group, bucket, lookback_s, recent)

    try:
        return await asyncio.wait_for(recall(), RECALL_TIMEOUT_S)
    except Exception as exc:  # whatever it was, starting without the memory is the fallback
        log.warning(
            "ingest.recall_failed",
            extra={"error": f"{type(exc).__name__}: {exc}"[:300], "topic": settings.topic_events},
        )
        return 0
