"""``vitrine dlq``: read the dead-letter topic, and put a fixed message back where it came from.

Every service parks in one shape (``services/runtime/dead_letters.py``): the record's key and
value untouched, headers naming the source topic, partition and offset, the service and the
reason.  Listing reads the topic from the start without joining a consumer group (nothing is
committed, so listing twice shows the same messages); replay publishes to the source topic with
the original key and a ``vitrine-replayed-from`` header, and the parked copy stays where it is:
the dead-letter topic is an append-only record of what went wrong.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.runtime import dead_letters as h
from services.runtime.settings import KafkaSettings
from vitrine.lag import topic_partitions


class DeadLetterError(RuntimeError):
    """The topic cannot be read, the position does not exist, or a replay cannot be sent."""


@dataclass(frozen=True)
class Parked:
    """One message on the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def source_topic(self) -> str | None:
        return self.headers.get(h.SOURCE_TOPIC)

    def to_dict(self) -> dict[str, Any]:
        value: Any
        try:
            value = json.loads(self.value) if self.value else None
        except ValueError:
            value = (self.value or b"").decode(errors="replace")
        return {
            "position": self.position,
            "timestamp_ms": self.timestamp_ms,
            "key": None if self.key is None else self.key.decode(errors="replace"),
            "headers": self.headers,
            "value": value,
        }


def parse_position(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` (or a bare offset, on partition 0)."""
    partition, sep, offset = text.partition(":")
    try:
        return (int(partition), int(offset)) if sep else (0, int(partition))
    except ValueError:
        raise DeadLetterError(f"not a position: {text!r} (want PARTITION:OFFSET)") from None


Span = Callable[[int, int, int], tuple[int, int]]
"""``(partition, first, end)`` → the offsets ``[from, to)`` to read of that partition."""


async def _read(settings: KafkaSettings, span: Span) -> list[Parked]:
    """The parked messages in each partition's ``span``, oldest first."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
    )
    try:
        await asyncio.wait_for(admin.start(), 15)
        await asyncio.wait_for(consumer.start(), 15)
        partitions = (await topic_partitions(admin, [settings.topic_dlq])).get(settings.topic_dlq)
    except (KafkaError, OSError, TimeoutError) as exc:
        await consumer.stop()
        await admin.close()
        raise DeadLetterError(f"Kafka at {settings.kafka_bootstrap} unreachable: {exc}") from None
    await admin.close()
    try:
        if not partitions:
            raise DeadLetterError(f"no topic {settings.topic_dlq!r} on {settings.kafka_bootstrap}")
        tps = [TopicPartition(settings.topic_dlq, p) for p in sorted(partitions)]
        consumer.assign(tps)
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        stops: dict[TopicPartition, int] = {}
        for tp in tps:
            begin, stop = span(tp.partition, firsts[tp], ends[tp])
            begin, stop = max(begin, firsts[tp]), min(stop, ends[tp])
            if begin < stop:
                consumer.seek(tp, begin)
                stops[tp] = stop
        found: list[Parked] = []
        while stops:
            batch = await consumer.getmany(*stops, timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                found += [
                    Parked(
                        r.partition,
                        r.offset,
                        r.timestamp,
                        r.key,
                        r.value,
                        h.headers_dict(r.headers),
                    )
                    for r in records
                    if r.offset < stops[tp]
                ]
                if records and records[-1].offset + 1 >= stops[tp]:
                    del stops[tp]
        found.sort(key=lambda p: (p.timestamp_ms, p.partition, p.offset))
        return found
    finally:
        await consumer.stop()


def read_parked(settings: KafkaSettings, limit: int | None = None) -> list[Parked]:
    """The parked messages, oldest first (the newest ``limit`` of them: those are among the
    newest ``limit`` of each partition, so no more is read)."""
    if limit is None:
        return asyncio.run(_read(settings, lambda _p, first, end: (first, end)))
    found = asyncio.run(_read(settings, lambda _p, first, end: (end - limit, end)))
    return found[-limit:]


def find(settings: KafkaSettings, position: str) -> Parked:
    """The message at ``position``, read alone."""
    partition, offset = parse_position(position)
    found = asyncio.run(
        _read(settings, lambda p, first, end: (offset, offset + 1) if p == partition else (0, 0))
    )
    if not found:
        raise DeadLetterError(f"nothing parked at {partition}:{offset} on {settings.topic_dlq}")
    return found[0]


async def _send(
    settings: KafkaSettings, topic: str, key: bytes | None, value: bytes, headers: Any
) -> tuple[int, int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    try:
        await asyncio.wait_for(producer.start(), 15)
        meta = await producer.send_and_wait(topic, key=key, value=value, headers=headers)
        return meta.partition, meta.offset
    except (KafkaError, OSError, TimeoutError) as exc:
        raise DeadLetterError(f"cannot publish to {topic}: {exc}") from None
    finally:
        await producer.stop()


def replay(
    settings: KafkaSettings, parked: Parked, value: bytes | None = None
) -> tuple[str, int, int]:
    """Publish ``parked`` (or ``value`` in its place: the fixed message) to its source topic;
    returns where it landed."""
    topic = parked.source_topic
    if not topic:
        raise DeadLetterError(
            f"{parked.position} has no {h.SOURCE_TOPIC} header (parked before the dead-letter "
            "policy): cannot tell where it belongs"
        )
    body = parked.value if value is None else value
    if body is None:
        raise DeadLetterError(f"{parked.position} has no value to replay")
    headers = [(h.REPLAYED_FROM, f"{settings.topic_dlq}/{parked.position}".encode())]
    partition, offset = asyncio.run(_send(settings, topic, parked.key, body, headers))
    return topic, partition, offset
