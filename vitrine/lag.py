"""Consumer lag per group, as Kafka itself sees it: committed offsets against end offsets.

The services export their own lag gauges, but only while they run and only for the partitions
they hold; an operator asking "is work piling up?" needs the answer most when a service is
down.  So this reads the group's committed offsets (admin API) and the partitions' end offsets
from the broker.  A partition the group never committed counts from its beginning offset: with
``auto_offset_reset=earliest`` that is what the group would still have to read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError


@dataclass
class GroupLag:
    group: str
    topic: str
    partitions: dict[int, int] = field(default_factory=dict)
    committed: int = 0  # messages the group has committed, all partitions together
    members: int | None = None
    state: str | None = None
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


class KafkaUnreachable(ConnectionError):
    """The broker did not answer within the timeout."""


async def _committed(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    # A broker that has never seen a consumer group has no __consumer_offsets yet; the first
    # coordinator lookup creates it, a retry a moment later finds it.
    for attempt in range(3):
        try:
            found = await admin.list_consumer_group_offsets(group)
            return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}
        except GroupCoordinatorNotAvailableError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)
    return {}


async def _group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[int, str]:
    # One group per request: aiokafka 0.14 misparses a DescribeGroups answer with several.
    response = await admin.describe_consumer_groups([group])
    _, _, state, _, _, members = response[0].groups[0]
    return len(members), str(state)


async def topic_partitions(
    admin: AIOKafkaAdminClient, topics: Iterable[str]
) -> dict[str, list[int]]:
    """Each existing topic's partitions (a missing topic is left out)."""
    described = await admin.describe_topics(sorted(set(topics)))
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if t["error_code"] == 0
    }


async def _lag(bootstrap: str, groups: Mapping[str, str], timeout_s: float) -> list[GroupLag]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=3000
    )
    try:
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            await asyncio.wait_for(consumer.start(), timeout_s)
        except Exception as exc:
            raise KafkaUnreachable(f"{bootstrap}: {type(exc).__name__}: {exc}") from None
        partitions = await topic_partitions(admin, set(groups.values()))
        lags = []
        for group, topic in groups.items():
            lag = GroupLag(group, topic)
            lags.append(lag)
            if topic not in partitions:
                lag.error = f"topic {topic} does not exist"
                continue
            tps = [TopicPartition(topic, p) for p in partitions[topic]]
            try:
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
                committed = await _committed(admin, group)
                lag.members, lag.state = await _group_state(admin, group)
            except Exception as exc:  # one group's trouble must not hide the others
                lag.error = f"{type(exc).__name__}: {exc}"
                continue
            for tp in tps:
                position = committed.get(tp, starts[tp])
                lag.partitions[tp.partition] = max(ends[tp] - max(position, starts[tp]), 0)
                lag.committed += max(position - starts[tp], 0)
        return lags
    finally:
        await consumer.stop()
        await admin.close()


def consumer_lag(bootstrap: str, groups: Mapping[str, str], timeout_s: float = 5) -> list[GroupLag]:
    """Lag of each ``group`` on its input ``topic`` (``groups`` maps group → topic).

    Raises KafkaUnreachable when the broker cannot be reached at all; a group or topic that
    cannot be read is reported in its ``error`` instead.
    """
    # aiokafka logs every refused connection on its own; the caller reports the outcome once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(asyncio.wait_for(_lag(bootstrap, groups, timeout_s), timeout_s * 4))
