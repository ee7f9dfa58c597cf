"""The one dead-letter policy: what a stage cannot handle is parked, whole and explained.

Every service parks on the same topic (``VITRINE_TOPIC_DLQ``) in the same shape: the record's
key and value byte for byte, and headers that say where it came from and why it was parked.  So
one command (``vitrine dlq list|show|replay``) can inspect any parked message and put a fixed one
back on the topic it came from, whichever service parked it.

A stage signals a record it cannot decode by raising :class:`InvalidMessage`; the stage runtime
parks it and moves past it, so one bad message never stops a service and is never silently
dropped.  Every parked message, whoever parks it, is built by ``stage.dead_letter_output``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from schemas.reasons import Reason

PARKED = Counter(
    "vitrine_dead_letters_total",
    "Messages parked on the dead-letter topic, by service, source topic and reason.",
    ["service", "topic", "reason"],
)

# Header names: stable, read by `vitrine dlq` and by whoever consumes the topic.
SERVICE = "vitrine-service"
SOURCE_TOPIC = "vitrine-source-topic"
SOURCE_PARTITION = "vitrine-source-partition"
SOURCE_OFFSET = "vitrine-source-offset"
REASON = "vitrine-reason"
DETAIL = "vitrine-detail"
PARKED_AT = "vitrine-parked-at"
REPLAYED_FROM = "vitrine-replayed-from"
"""Set on a message `vitrine dlq replay` put back: the dead-letter position it came from."""

DETAIL_MAX_BYTES = 2000
"""Kafka headers are small by convention; the full story lives in the service's log line."""


class InvalidMessage(Exception):
    """A record this stage can never handle as it is: park it, move past it.

    ``fallback`` is what the stage can still do with it, handled in its place after parking:
    e.g. the sink records a result that breaks the contract as a failed row, so its object
    reaches a final status while the original waits in the dead-letter topic for a fix.
    """

    def __init__(self, reason: Reason, detail: str, *, fallback: Any = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fallback = fallback


@dataclass(frozen=True)
class DeadLetter:
    """One record to park, with why."""

    service: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: Reason
    detail: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def headers(self, now: datetime | None = None) -> list[tuple[str, bytes]]:
        detail = self.detail.encode()[:DETAIL_MAX_BYTES].decode(errors="ignore")
        fields = {
            SERVICE: self.service,
            SOURCE_TOPIC: self.topic,
            SOURCE_PARTITION: str(self.partition),
            SOURCE_OFFSET: str(self.offset),
            REASON: self.reason,
            DETAIL: detail,
            PARKED_AT: (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
            **self.extra,
        }
        return [(name, value.encode()) for name, value in fields.items()]


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """A parked record's headers as text (the last value of a repeated name wins)."""
    return {name: value.decode(errors="replace") for name, value in headers or ()}
