"""The worker's delivery mechanics on an in-memory broker: at-least-once, rebalance, poison,
hand-back, malformed jobs.  Fast and exact about offsets and markers; the same behaviours are
proven against real Kafka, with real process deaths, in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from memory_broker import MemoryAdmin, MemoryBroker, MemoryConsumer, MemoryProducer
from test_sink_store import make_ref

from schemas.messages import CardResult, CardStatus, ImageJob
from schemas.reasons import Reason
from services.inference.delivery import InferenceWorker
from services.inference.results import not_done
from services.inference.settings import InferenceSettings
from services.runtime import dead_letters as h

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
    """Answers every job at once, except keys in ``hold``: those wait for ``release``."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.hold: set[str] = set()
        self.entered: dict[str, asyncio.Event] = {}
        self.release = asyncio.Event()

    async def __call__(self, job: ImageJob) -> CardResult:
        key = job.object.key
        self.seen.append(key)
        if key in self.hold:
            self.entered.setdefault(key, asyncio.Event()).set()
            await self.release.wait()
        return not_done(job, status=CardStatus.rejected, reason=Reason.bad_image, detail="test")

    async def wait_entered(self, key: str) -> None:
        await asyncio.wait_for(self.entered.setdefault(key, asyncio.Event()).wait(), 10)


class Run:
    """One worker process on the memory broker; ``kill`` is its death (nothing more runs)."""

    def __init__(self, broker: MemoryBroker, handler: Handler, **overrides: Any) -> None:
        self.consumer = MemoryConsumer(broker, GROUP)
        self.worker = InferenceWorker(
            settings(**overrides),
            handler,
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


def put_jobs(broker: MemoryBroker, *keys: str) -> list[ImageJob]:
    jobs = [job_for(k) for k in keys]
    for job in jobs:
        broker.append("jobs", job.model_dump_json().encode(), key=b"k", partition=0)
    return jobs


def result_keys(broker: MemoryBroker) -> list[str]:
    return [json.loads(r.value)["object"]["key"] for r in broker.records("results")]


async def until(check: Callable[[], Any], what: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)
    assert check(), what


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_every_job_is_published_before_its_offset_is_committed() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "a.jpg", "b.jpg", "c.jpg")
        broker.fail_next_acks = 1  # the first acknowledgement fails: sent again, not lost
        worker = Run(broker, Handler())
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (3, ""), "all committed")
        await worker.shutdown()
        assert sorted(result_keys(broker)) == ["a.jpg", "b.jpg", "c.jpg"]
        # every commit past a job came after its result was in the log
        for commit in worker.consumer.commits:
            meta = commit.get(JOBS)
            if meta is not None and not meta.metadata:
                assert len(broker.records("results")) >= meta.offset

    run(go)


def test_a_death_mid_job_redelivers_it_with_its_count_and_loses_nothing() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "a.jpg", "dies.jpg", "c.jpg")
        handler = Handler()
        handler.hold = {"dies.jpg"}
        first = Run(broker, handler)
        await handler.wait_entered("dies.jpg")
        # marked as begun: the fast handler's pace took the rest (offsets 1..2) in one delivery
        assert broker.committed_offset(GROUP, JOBS) == (1, "inflight:1:1:2")
        await first.kill()
        assert result_keys(broker) == ["a.jpg"]

        handler.hold = set()
        second = Run(broker, handler)
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (3, ""), "all committed")
        await second.shutdown()
        assert result_keys(broker) == ["a.jpg", "dies.jpg", "c.jpg"]  # once each
        assert handler.seen == ["a.jpg", "dies.jpg", "dies.jpg", "c.jpg"]

    run(go)


def test_a_poison_job_is_parked_after_max_deliveries_and_its_neighbours_go_on() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        [poison, _after] = put_jobs(broker, "poison.jpg", "after.jpg")
        handler = Handler()
        handler.hold = {"poison.jpg"}
        for death in range(1, 4):
            handler.entered.pop("poison.jpg", None)
            worker = Run(broker, handler, max_deliveries=3)
            await handler.wait_entered("poison.jpg")
            assert broker.committed_offset(GROUP, JOBS) == (0, f"inflight:0:{death}:0")
            await worker.kill()
        last = Run(broker, handler, max_deliveries=3)  # the fourth delivery parks it
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, ""), "all committed")
        await last.shutdown()
        assert handler.seen.count("poison.jpg") == 3
        [parked] = broker.records("dlq")
        headers = h.headers_dict(parked.headers)
        assert parked.value == poison.model_dump_json().encode()
        assert headers[h.REASON] == "poison" and headers["vitrine-deaths"] == "3"
        assert headers[h.SOURCE_TOPIC] == "jobs" and headers[h.SOURCE_OFFSET] == "0"
        assert headers[h.SERVICE] == "inference"
        results = {
            json.loads(r.value)["object"]["key"]: json.loads(r.value)
            for r in broker.records("results")
        }
        assert results["poison.jpg"]["status"] == "failed"
        assert results["poison.jpg"]["reason"] == "poison"
        assert "after.jpg" in results

    run(go)


def test_a_rebalance_waits_for_the_running_job_and_commits_it_before_letting_go() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "long.jpg", "next.jpg")
        handler = Handler()
        handler.hold = {"long.jpg"}
        worker = Run(broker, handler)
        await handler.wait_entered("long.jpg")
        revoke = asyncio.create_task(worker.consumer.revoke({JOBS}))
        await asyncio.sleep(0.2)
        assert not revoke.done(), "the revocation must wait for the running job"
        handler.release.set()
        await asyncio.wait_for(revoke, 10)
        # published and committed before the partition went away; the next job is not started
        assert result_keys(broker) == ["long.jpg"]
        assert broker.committed_offset(GROUP, JOBS) == (1, "")
        assert handler.seen == ["long.jpg"]
        await worker.shutdown()

    run(go)


def test_a_job_past_the_shutdown_grace_is_handed_back_uncounted() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "slow.jpg")
        handler = Handler()
        handler.hold = {"slow.jpg"}
        worker = Run(broker, handler, shutdown_grace_s=0.2)
        await handler.wait_entered("slow.jpg")
        await worker.shutdown()
        # not a death: the marker is cleared, the next worker starts it as delivery 1
        assert broker.committed_offset(GROUP, JOBS) == (0, "")
        assert result_keys(broker) == []

        handler.hold = set()
        again = Run(broker, handler)
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (1, ""), "committed")
        await again.shutdown()
        assert result_keys(broker) == ["slow.jpg"]

    run(go)


def test_a_malformed_job_is_parked_with_headers_and_skipped() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        broker.append("jobs", b'{"not": "a job"}', key=b"x", partition=0)
        put_jobs(broker, "fine.jpg")
        worker = Run(broker, Handler())
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, ""), "committed")
        await worker.shutdown()
        [parked] = broker.records("dlq")
        headers = h.headers_dict(parked.headers)
        assert parked.value == b'{"not": "a job"}' and parked.key == b"x"
        assert headers[h.REASON] == "malformed_job" and headers[h.SOURCE_OFFSET] == "0"
        assert "job_id" in headers[h.DETAIL]
        assert result_keys(broker) == ["fine.jpg"]

    run(go)
