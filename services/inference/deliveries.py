"""Counting how often a job was handed to a worker that then died, using Kafka alone.

An exception is caught and becomes a ``failed`` result; what cannot be caught is the process
dying (a segfault in native code, the OOM killer, ``kill -9``).  The job is then redelivered, and
a job that kills every worker that touches it — a poison message — would block its partition
forever.  Before a job starts, the worker commits the job's *own* offset with the metadata
``inflight:<offset>:<n>``; a worker receiving the job again reads that marker (it is part of the
consumer group's committed offsets, so it survives any worker) and knows it is delivery n+1.
Past the limit, the job is parked on the dead-letter topic with a ``failed`` result instead.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

PREFIX = "inflight"


def parse_marker(metadata: str | None, offset: int) -> int:
    """Deliveries already started for ``offset`` according to a commit's metadata."""
    if not metadata or not metadata.startswith(PREFIX + ":"):
        return 0
    try:
        _, marked_offset, count = metadata.split(":")
        return int(count) if int(marked_offset) == offset else 0
    except ValueError:
        return 0


class DeliveryCounter:
    def __init__(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, group: str) -> None:
        self.consumer = consumer
        self.admin = admin
        self.group = group

    async def begin(self, tp: TopicPartition, offset: int) -> int:
        """Record that delivery n of the job at ``offset`` starts now; returns n (1-based)."""
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=[tp])
        meta = committed.get(tp)
        previous = parse_marker(meta.metadata if meta else None, offset)
        attempt = previous + 1
        await self.consumer.commit({tp: (offset, f"{PREFIX}:{offset}:{attempt}")})
        return attempt
