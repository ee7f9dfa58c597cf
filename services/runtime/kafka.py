"""Kafka clients configured for at-least-once delivery, started with patient retries.

Producers wait for all in-sync replicas and are idempotent, so a retried send cannot duplicate a
message; consumers never auto-commit — each service commits only after its output is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pydantic import BaseModel

from services.runtime.metrics import KAFKA_RETRIES
from services.runtime.retry import transient
from services.runtime.settings import KafkaSettings

T = TypeVar("T")


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def with_retry(
    what: str, call: Callable[[], Awaitable[T]], *, max_seconds: float = 300.0
) -> T:
    """Retry a Kafka operation through broker restarts: exponential backoff, logged, bounded."""
    async for attempt in transient(
        what,
        (KafkaError, OSError),
        max_seconds=max_seconds,
        max_wait=10,
        on_retry=KAFKA_RETRIES.labels(what).inc,
        # aiokafka marks what may succeed on a later try (connection, timeout, coordinator
        # moving); a commit refused after a rebalance is final and is not retried.
        when=lambda e: (
            isinstance(e, (OSError, KafkaConnectionError, KafkaTimeoutError))
            or getattr(e, "retriable", False)
        ),
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")


async def rewind_after_failure(
    consumer: Any, batch: dict[Any, list[Any]], error: BaseException, attempt: int
) -> None:
    """A batch whose outputs or commit failed (broker restarting): read it again, after a pause.

    Re-sending part of a batch duplicates messages, never loses them, and every consumer
    downstream is idempotent; skipping it would lose them.
    """
    delay = min(0.2 * 2**attempt, 10.0)
    logging.getLogger("vitrine.kafka").warning(
        "batch.retry", extra={"error": f"{type(error).__name__}: {error}"[:300], "delay_s": delay}
    )
    for tp, records in batch.items():
        consumer.seek(tp, records[0].offset)
    await asyncio.sleep(delay)
