"""Counting how often a job was handed to a worker that then died, using Kafka alone.

An exception is caught and becomes a ``failed`` result; what cannot be caught is the process
dying (a segfault in native code, the OOM killer, ``kill -9``).  The job is then redelivered, and
a job that kills every worker that touches it — a poison message — would block its partition
forever.  Before a job starts, the worker commits the *lowest* unfinished offset of its
partition with the metadata ``inflight:<offset>:<n>:<end>``: delivery n of the job at ``offset``
has started, and every job up to ``end`` may be running beside it.  It is part of the consumer
group's committed offsets, so it survives any worker; a worker that reads a marker for the
offset it is about to start knows that the previous delivery died.

A worker keeps several jobs in flight (a fast engine takes many per poll, a batched engine runs
``parallel`` at once, and a job taken later may finish first), so what is committed for a
partition is :func:`position` of its jobs taken and not yet committed past: the offset moves
over the contiguous prefix of finished jobs (their results acknowledged), the marker stays on
the lowest unfinished one and its ``end`` covers the highest taken, so taking more from a
partition with jobs in flight extends ``end`` (committed before they start); with nothing left
in flight it is a plain commit.

When a worker dies with a range in flight, nobody knows which of its jobs was to blame, so the
range becomes *suspect*: it is re-run one job at a time — each such job delivered alone, with no
other job of any partition beside it, so that only its own death is counted on it — and each
job of the range starts with the one death it shared (a worker that finds such a range while
it has jobs in flight finishes those first).  A poison job then dies alone, its count
climbs, and past the limit it is parked on the dead-letter topic with a ``failed`` result; the
innocent jobs of the range go through on their second delivery.  A slow model with
``parallel`` 1 never has more than one job in flight, and then this is exactly one marker per
job.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition
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
    """One Kafka delivery of a partition's jobs ``first..last`` to this worker, as counted."""

    first: int
    attempt: int  # 1-based delivery number of the job at ``first``
    suspect_end: int | None  # a delivery of first..suspect_end died: one job at a time
    last: int  # last offset this delivery runs

    @classmethod
    def fresh(cls, first: int, last: int) -> Delivery:
        """A first delivery of ``first..last`` (no marker for ``first``: nobody died on it)."""
        return cls(first, 1, None, last)

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
    """Reads the markers back (the group's committed offsets, through the admin client)."""

    def __init__(self, admin: AIOKafkaAdminClient, group: str) -> None:
        self.admin = admin
        self.group = group

    async def read(
        self, spans: dict[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, Delivery]:
        """What the delivery of ``first..last`` per partition would be, from the markers.  Only
        for a partition with nothing of this worker's in flight: a marker there is a previous
        owner's (or a previous process's)."""
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=list(spans))
        found: dict[TopicPartition, Delivery] = {}
        for tp, (first, last) in spans.items():
            meta = committed.get(tp)
            previous = read_marker(meta.metadata if meta else None, first)
            if previous is None:
                found[tp] = Delivery.fresh(first, last)
            else:  # the delivery that wrote it died: this one is its first job alone
                found[tp] = Delivery(first, previous.count + 1, max(previous.end, first), first)
        return found


def position(taken: dict[int, Delivery], done: set[int], dropped: set[int]) -> OffsetAndMetadata:
    """What to commit for one partition's jobs taken and not yet committed past.

    ``taken`` maps each job's offset to the delivery it is part of; the others are *live*
    (waiting in their batch, running, or their result not yet acknowledged), ``done`` (result
    acknowledged) or ``dropped`` (they will not run here: cut before they started by a
    rebalance or a shutdown, or handed back).  The offset moves past the contiguous finished
    prefix; while anything is live, the marker sits on the lowest unfinished job and its end
    covers every job taken, so a death makes them all suspect; with nothing live it is a plain
    commit, and a dropped job is not a death (the marker goes back to what it was before).
    """
    offsets = sorted(taken)
    if not offsets:
        raise ValueError("no jobs taken: nothing to commit")
    prefix = 0
    while prefix < len(offsets) and offsets[prefix] in done:
        prefix += 1
    rest = offsets[prefix:]
    if any(o not in done and o not in dropped for o in rest):
        low = rest[0]
        delivery = taken[low]
        count = delivery.attempt if low == delivery.first else 1
        end = max(max(rest), *(taken[o].end for o in rest))
        return OffsetAndMetadata(low, format_marker(low, count, end))
    if prefix:
        last = offsets[prefix - 1]
        return taken[last].after(last)
    low = rest[0]
    delivery = taken[low]
    return delivery.not_started() if low == delivery.first else OffsetAndMetadata(low, "")
