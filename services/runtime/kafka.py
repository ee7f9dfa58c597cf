"""Kafka clients configured for at-least-once delivery, started with patient retries.

Producers wait for all in-sync replicas and are idempotent, so a retried send cannot duplicate a
message; consumers never auto-commit — each service commits only after its output is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import BaseModel

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
        what, (KafkaConnectionError, KafkaError, OSError), max_seconds=max_seconds, max_wait=10
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")
