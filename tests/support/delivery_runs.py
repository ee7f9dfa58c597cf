"""One inference worker on the in-memory broker, as the delivery tests drive it: a handler that
holds chosen jobs, a consumer that checks at-least-once at every commit, and the loops that wait
for the worker to have really done something."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from schemas.messages import CardResult, CardStatus, ImageJob
from schemas.reasons import Reason
from services.inference.settings import InferenceSettings
from services.inference.worker.delivery import InferenceWorker
from services.inference.worker.results import not_done
from tests.support.memory_broker import MemoryAdmin, MemoryBroker, MemoryConsumer, MemoryProducer
from tests.support.messages import make_ref

GROUP = "g"
JOBS = TopicPartition("jobs", 0)


def settings(**overrides: Any) -> InferenceSettings:
    values: dict[str, Any] = {
        "topic_jobs": "jobs",
        "topic_results": "results",
        "topic_dlq": "dlq",
        "inference_group": GROUP,
        "max_deliveries": 3,
        "shutdown_grace_s": 5.0,
        "bucket": "shop",
    }
    values.update(overrides)
    return InferenceSettings(**values)


def job_for(key: str) -> ImageJob:
    ref = make_ref("shop", key=key, sequencer=secrets.token_hex(8).upper())
    return ImageJob(job_id=ImageJob.job_id_for(ref), trace_id=secrets.token_hex(16), object=ref)


class Handler:
    """Answers every job at once, except keys in ``hold``: those wait for ``release`` (all of
    them) or ``let_go(key)``.  ``most_running`` is the most jobs it had at once."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.hold: set[str] = set()
        self.entered: dict[str, asyncio.Event] = {}
        self.release = asyncio.Event()
        self.gates: dict[str, asyncio.Event] = {}
        self.running = 0
        self.most_running = 0

    async def __call__(self, job: ImageJob) -> CardResult:
        key = job.object.key
        self.seen.append(key)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if key in self.hold:
                self.entered.setdefault(key, asyncio.Event()).set()
                await first_of(self.release, self.gates.setdefault(key, asyncio.Event()))
        finally:
            self.running -= 1
        return not_done(job, status=CardStatus.rejected, reason=Reason.bad_image, detail="test")

    async def wait_entered(self, *keys: str) -> None:
        for key in keys:
            await asyncio.wait_for(self.entered.setdefault(key, asyncio.Event()).wait(), 10)

    def let_go(self, key: str) -> None:
        self.gates.setdefault(key, asyncio.Event()).set()


async def first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class CheckedConsumer(MemoryConsumer):
    """Fails the test at the commit that would pass a job whose result (or dead letter) is not
    in the log yet: at-least-once, checked at every commit rather than at the end.  Counts the
    worker's polls, and which poll first served each record, so that a test can wait for the
    worker to have really looked at something rather than for a while."""

    def __init__(self, broker: MemoryBroker, group: str) -> None:
        super().__init__(broker, group)
        self.polls = 0  # polls begun
        self.served: dict[tuple[int, int], int] = {}  # (partition, offset): first poll serving it

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        poll = self.polls
        out = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        for tp, records in out.items():
            for record in records:
                self.served.setdefault((tp.partition, record.offset), poll)
        return out

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        published = set(result_keys(self.broker)) | {r.value for r in self.broker.records("dlq")}
        for tp, value in offsets.items():
            upto = value.offset if isinstance(value, OffsetAndMetadata) else value[0]
            for record in self.broker.logs[tp][:upto]:
                try:
                    key = json.loads(record.value)["object"]["key"]
                except (KeyError, TypeError):
                    key = None
                assert key in published or record.value in published, (
                    f"committed {tp.partition}@{upto} before the result of offset {record.offset}"
                )
        await super().commit(offsets)


class Run:
    """One worker process on the memory broker; ``kill`` is its death (nothing more runs)."""

    def __init__(
        self, broker: MemoryBroker, handler: Handler, *, parallel: int = 1, **overrides: Any
    ) -> None:
        self.consumer = CheckedConsumer(broker, GROUP)
        self.worker = InferenceWorker(
            settings(**overrides),
            handler,
            parallel=parallel,
            consumer=self.consumer,  # type: ignore[arg-type]
            producer=MemoryProducer(broker),  # type: ignore[arg-type]
            admin=MemoryAdmin(broker),  # type: ignore[arg-type]
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.worker.run(self.stop))

    async def kill(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)


def put_jobs(broker: MemoryBroker, *keys: str, partition: int = 0) -> list[ImageJob]:
    jobs = [job_for(k) for k in keys]
    for job in jobs:
        broker.append("jobs", job.model_dump_json().encode(), key=b"k", partition=partition)
    return jobs


def result_keys(broker: MemoryBroker) -> list[str]:
    return [json.loads(r.value)["object"]["key"] for r in broker.records("results")]


async def until(check: Callable[[], Any], what: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


async def went_around(run: Run, since: int) -> None:
    """Until the worker has begun two polls after poll ``since``: whatever the first of them
    served was planned, and any batch started for it has run its first step (the worker yielded
    before the second), so a job not in the handler by then was really held back."""
    await until(lambda: run.consumer.polls >= since + 2, "two more polls")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())
