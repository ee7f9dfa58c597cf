"""The stage runtime: consume → decode → handle → publish → commit, written once.

A service is a :class:`Stage`: how a record is decoded with its contract, and what a batch of
decoded records turns into (messages to publish, rows to write).  :class:`StageRunner` owns the
rest, the same for every service:

1. poll a batch;
2. decode each record; one that raises :class:`InvalidMessage` is parked on the dead-letter
   topic (one policy, ``dead_letters.py``) and, if the stage offers a fallback, the fallback is
   handled in its place;
3. publish the parked records, then hand the batch to the stage, which may do its side effects
   (the sink's transaction) and returns what to publish;
4. publish, wait for every acknowledgement, and only then commit the batch's offsets;
5. on a Kafka error anywhere in 3–4, rewind to the batch's first offsets and read it again:
   outputs may be duplicated (every consumer downstream is idempotent), never lost.

The inference worker keeps its own delivery loop (it pauses partitions for minutes-long jobs and
counts deliveries to find poison), but parks through the same policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import Counter, Histogram

from schemas.reasons import Reason
from services.runtime.dead_letters import PARKED, DeadLetter, InvalidMessage
from services.runtime.kafka import rewind_after_failure, with_retry
from services.runtime.metrics import record_lag

T = TypeVar("T")

log = logging.getLogger("vitrine.stage")

BATCH_SECONDS = Histogram(
    "vitrine_stage_batch_seconds",
    "From a batch read to its outputs acknowledged and its offsets committed, by service.",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RETRIES = Counter(
    "vitrine_stage_batch_retries_total",
    "Batches read again after a Kafka error (broker restart, lost commit), by service.",
    ["service"],
)

Batch = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


@dataclass(frozen=True)
class Output:
    """One message a stage publishes."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone, parked as it came
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class Item(Generic[T]):
    """A decoded record: what the stage handles, with where it came from."""

    record: ConsumerRecord[Any, Any]
    value: T


class Stage(Generic[T]):
    """One service's logic; the runner calls these in order for every batch."""

    service: str = "stage"
    dlq_topic: str = "vitrine.jobs.dlq"

    def decode(self, record: ConsumerRecord[Any, Any]) -> T:
        """The record under its contract; raise :class:`InvalidMessage` to park it."""
        raise NotImplementedError

    async def handle(self, items: Sequence[Item[T]]) -> list[Output]:
        """Side effects of the batch, and what to publish.  A Kafka error rewinds the batch;
        raising :class:`InvalidMessage` is for decoding only (park from here with
        :meth:`park` instead)."""
        raise NotImplementedError

    def park(
        self,
        record: ConsumerRecord[Any, Any],
        reason: Reason,
        detail: str,
        extra: dict[str, str] | None = None,
    ) -> Output:
        """The dead-letter message for ``record``, logged and counted (published with the
        batch, so it is acknowledged before the record is committed)."""
        return dead_letter_output(self.service, record, reason, detail, self.dlq_topic, extra)

    def before_commit(self) -> None:
        """Called once outputs are acknowledged, just before the offsets are committed."""

    def committed(self, items: Sequence[Item[T]]) -> None:
        """The batch is durable and committed (e.g. log per row, promote a dedup window)."""

    def aborted(self) -> None:
        """The batch will be read again: forget what it did in memory."""


class StageRunner(Generic[T]):
    """The one consumer loop (see the module docstring)."""

    def __init__(
        self,
        stage: Stage[T],
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        *,
        group: str,
        batch_max: int,
        poll_ms: int = 200,
    ) -> None:
        self.stage = stage
        self.consumer = consumer
        self.producer = producer
        self.group = group
        self.batch_max = batch_max
        self.poll_ms = max(poll_ms, 1)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; the consumer and producer must be started by the caller."""
        failures = 0
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=self.poll_ms, max_records=self.batch_max)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                items, parked = self.decode(batch)
                await self.publish(parked)  # parked before anything is done with the batch
                outputs = await self.stage.handle(items)
                await self.publish(outputs)  # every output acknowledged ...
                self.stage.before_commit()
                await self.consumer.commit(  # ... before the input is committed
                    {tp: records[-1].offset + 1 for tp, records in batch.items()}
                )
            except KafkaError as exc:
                self.stage.aborted()
                failures += 1
                BATCH_RETRIES.labels(self.stage.service).inc()
                await rewind_after_failure(self.consumer, batch, exc, failures)
                continue
            failures = 0
            self.stage.committed(items)
            BATCH_SECONDS.labels(self.stage.service).observe(time.perf_counter() - started)
            await record_lag(self.consumer, self.group)

    async def serve(
        self, stop: asyncio.Event, before_consume: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        """Start the producer, then (after ``before_consume``, e.g. ingest's recall of what it
        handled) the consumer; log ``<service>.started``; :meth:`run`; stop both clients."""
        try:
            await with_retry("producer.start", self.producer.start)
            if before_consume is not None:
                await before_consume()
            await with_retry("consumer.start", self.consumer.start)
            log.info(
                f"{self.stage.service}.started",
                extra={"topic": ",".join(sorted(self.consumer.subscription()))},
            )
            await self.run(stop)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    def decode(self, batch: Batch) -> tuple[list[Item[T]], list[Output]]:
        items: list[Item[T]] = []
        parked: list[Output] = []
        for records in batch.values():
            for record in records:
                try:
                    items.append(Item(record, self.stage.decode(record)))
                except InvalidMessage as exc:
                    parked.append(self.stage.park(record, exc.reason, exc.detail))
                    if exc.fallback is not None:
                        items.append(Item(record, exc.fallback))
        return items, parked

    async def publish(self, outputs: Sequence[Output]) -> None:
        sends = [
            await self.producer.send(o.topic, key=o.key, value=o.value, headers=o.headers)
            for o in outputs
        ]
        await asyncio.gather(*sends)


def dead_letter_output(
    service: str,
    record: ConsumerRecord[Any, Any],
    reason: Reason,
    detail: str,
    dlq_topic: str,
    extra: Mapping[str, str] | None = None,
) -> Output:
    """``record``, untouched, as the dead-letter message ``service`` publishes for ``reason``;
    logged and counted once, here."""
    letter = DeadLetter(
        service,
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        reason,
        detail,
        extra or {},
    )
    PARKED.labels(service, record.topic, reason).inc()
    log.error(
        "message.parked",
        extra={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason,
            "error": detail[:500],
            "dlq": dlq_topic,
        },
    )
    return Output(dlq_topic, record.key, record.value, letter.headers())
