"""An in-memory Kafka for unit tests of the delivery mechanics: topics, one consumer group's
committed offsets (with metadata), pausing, seeking and rebalance callbacks.

It models what the worker relies on and nothing more: records appended per partition, a
consumer that reads from its positions and skips paused partitions, commits that store
``(offset, metadata)`` per group (a test can make some refused), a producer whose
acknowledgements a test can make fail, and an admin client that reads the committed offsets
back.  ``kill()`` stands for a dead process: the worker's task is cancelled and nothing it had
not committed survives.  The real-Kafka tests (tests/stack/test_faults.py,
tests/stack/test_pipeline.py) stay the proof; these pin the logic down fast.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata


@dataclass
class MemoryBroker:
    partitions: int = 1
    logs: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    committed: dict[tuple[str, TopicPartition], OffsetAndMetadata] = field(default_factory=dict)
    fail_next_acks: int = 0
    """Acknowledgements to fail (a broker restarting) before sends succeed again."""
    refuse_next_commits: int = 0
    """Offset commits to refuse (the group rebalanced under the member) before they succeed."""

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> ConsumerRecord[Any, Any]:
        if partition is None:
            partition = hash(key) % self.partitions if key is not None else 0
        tp = TopicPartition(topic, partition)
        log = self.logs[tp]
        record: ConsumerRecord[Any, Any] = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=0,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=tuple(headers or ()),
        )
        log.append(record)
        return record

    def records(self, topic: str) -> list[ConsumerRecord[Any, Any]]:
        return [
            r
            for tp in sorted(self.logs, key=lambda t: t.partition)
            if tp.topic == topic
            for r in self.logs[tp]
        ]

    def committed_offset(self, group: str, tp: TopicPartition) -> OffsetAndMetadata | None:
        return self.committed.get((group, tp))


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, group: str) -> None:
        self.broker = broker
        self.group = group
        self.topics: list[str] = []
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.paused_set: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.topics, self.listener = topics, listener

    async def start(self) -> None:
        tps = {TopicPartition(t, p) for t in self.topics for p in range(self.broker.partitions)}
        await self.assign(tps)

    async def assign(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            meta = self.broker.committed_offset(self.group, tp)
            self.positions[tp] = meta.offset if meta is not None else 0
        self.assigned |= tps
        if self.listener is not None:
            await self.listener.on_partitions_assigned(tps)

    async def revoke(self, tps: set[TopicPartition]) -> None:
        """A rebalance taking ``tps`` away: the callback runs first, as in aiokafka."""
        if self.listener is not None:
            await self.listener.on_partitions_revoked(tps)
        self.assigned -= tps
        self.paused_set -= tps

    async def stop(self) -> None:
        self.assigned.clear()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.broker.logs[tp])

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        out: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        budget = max_records or 10**9
        for tp in sorted(set(partitions) or self.assigned, key=lambda t: t.partition):
            if tp in self.paused_set or tp not in self.assigned or budget <= 0:
                continue
            log = self.broker.logs[tp]
            start = self.positions[tp]
            taken = log[start : start + budget]
            if taken:
                out[tp] = taken
                self.positions[tp] = start + len(taken)
                budget -= len(taken)
        if not out:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
        return out

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.broker.refuse_next_commits > 0:
            self.broker.refuse_next_commits -= 1
            raise CommitFailedError("the group rebalanced (memory broker)")
        stored = {}
        for tp, value in offsets.items():
            if isinstance(value, OffsetAndMetadata):
                meta = value
            elif isinstance(value, tuple):
                meta = OffsetAndMetadata(value[0], value[1])
            else:
                meta = OffsetAndMetadata(int(value), "")
            self.broker.committed[(self.group, tp)] = meta
            stored[tp] = meta
        self.commits.append(stored)


class _Client:
    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        pass


class MemoryProducer(_Client):
    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.broker.fail_next_acks > 0:
            self.broker.fail_next_acks -= 1
            future.set_exception(KafkaConnectionError("broker restarting (memory broker)"))
        else:
            future.set_result(self.broker.append(topic, value, key, headers))
        return future

    async def send_and_wait(self, topic: str, **kwargs: Any) -> Any:
        return await (await self.send(topic, **kwargs))


class MemoryAdmin(_Client):
    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        found = {tp: self.broker.committed_offset(group, tp) for tp in partitions}
        return {tp: meta for tp, meta in found.items() if meta is not None}
