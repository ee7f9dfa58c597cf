"""Counting how often a job was handed to a worker that then died, using Kafka alone.

An exception is caught and becomes a ``failed`` result; what cannot be caught is the process
dying (a segfault in native code, the OOM killer, ``kill -9``).  The job is then redelivered, and
a job that kills every worker that touches it — a poison message — would block its partition
forever.  Before a delivery starts, the worker commits the *first* job's own offset with the
metadata ``inflight:<offset>:<n>:<end>``: delivery n of the jobs ``offset..end`` starts now.  It
is part of the consumer group's committed offsets, so it survives any worker; a worker that reads
a marker for the offset it is about to start knows that the previous delivery died.

Fast engines take several jobs per delivery (a batch, possibly across partitions).  When a batch
dies, nobody knows which of its jobs was to blame, so each partition's range becomes *suspect*:
it is re-run one job at a time — each such job delivered alone, with no other partition's jobs
beside it, so that only its own death is counted on it — and each job of the range starts with
the one death it shared.  A poison job then dies alone, its count climbs,
and past the limit it is parked on the dead-letter topic with a ``failed`` result; the innocent
jobs of the range go through on their second delivery.  A slow model never batches, and then
this is exactly one marker per job.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

PREFIX = "inflight"


@dataclass(frozen=True)
class Marker:
    offset: int
    count: int  # deliveries of ``offset`` started so far
    end: int  # last offset of the delivery that wrote it


def format_marker(offset: int, count: int, end: int) -> str:
    return f"{PREFIX}:{offset}:{count}:{end}"


def read_marker(metadata: str | None, offset: int) -> Marker | None:
    """The marker in a commit's metadata, if it is about ``offset``."""
    if not metadata or not metadata.startswith(PREFIX + ":"):
        return None
    try:
        fields = [int(f) for f in metadata.split(":")[1:]]
    except ValueError:
        return None
    if len(fields) == 2:  # inflight:<offset>:<n>, written before batches existed
        fields.append(fields[0])
    if len(fields) != 3 or fields[0] != offset:
        return None
    return Marker(*fields)


@dataclass(frozen=True)
class Delivery:
    first: int
    attempt: int  # 1-based delivery number of the job at ``first``
    suspect_end: int | None  # a delivery of first..suspect_end died: one job at a time
    last: int  # last offset this delivery runs

    @property
    def end(self) -> int:
        """The range the marker covers: a suspect range stays suspect until passed."""
        return self.last if self.suspect_end is None else self.suspect_end

    def after(self, offset: int) -> OffsetAndMetadata:
        """What to commit once the job at ``offset`` is finished."""
        if self.suspect_end is not None and offset < self.suspect_end:
            # the next job of the suspect range starts with the death it shared
            return OffsetAndMetadata(offset + 1, format_marker(offset + 1, 1, self.suspect_end))
        return OffsetAndMetadata(offset + 1, "")

    def not_started(self) -> OffsetAndMetadata:
        """What to commit when the delivery ends before its first job ran (or it was handed
        back): the marker as it was before, so this delivery does not count as a death."""
        if self.attempt > 1 and self.suspect_end is not None:
            return OffsetAndMetadata(
                self.first, format_marker(self.first, self.attempt - 1, self.suspect_end)
            )
        return OffsetAndMetadata(self.first, "")


class DeliveryCounter:
    def __init__(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, group: str) -> None:
        self.consumer = consumer
        self.admin = admin
        self.group = group

    async def plan(
        self, spans: dict[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, Delivery]:
        """What the delivery of ``first..last`` per partition would be, from the markers."""
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=list(spans))
        plan: dict[TopicPartition, Delivery] = {}
        for tp, (first, last) in spans.items():
            meta = committed.get(tp)
            previous = read_marker(meta.metadata if meta else None, first)
            if previous is None:
                plan[tp] = Delivery(first, 1, None, last)
            else:  # the delivery that wrote it died: this one is its first job alone
                plan[tp] = Delivery(first, previous.count + 1, max(previous.end, first), first)
        return plan

    async def begin(self, plan: dict[TopicPartition, Delivery]) -> None:
        """Mark these deliveries as started (one commit). Only partitions whose jobs really
        run may be marked: a marker left on a job that never ran would count as its death."""
        await self.consumer.commit(
            {tp: (d.first, format_marker(d.first, d.attempt, d.end)) for tp, d in plan.items()}
        )
