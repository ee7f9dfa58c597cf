"""The worker's delivery mechanics on an in-memory broker: at-least-once, rebalance, poison,
hand-back, malformed jobs, and rolling deliveries (up to ``parallel`` jobs in flight, each slot
taking more as it ends).  Fast and exact about offsets and markers; the same behaviours are
proven against real Kafka, with real process deaths, in tests/stack/test_faults.py.  Every commit is
checked as it is made: no offset is passed before the result of each job before it is in the
log."""

from __future__ import annotations

import asyncio
import json

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.inference.worker.deliveries import Delivery, format_marker, position
from services.inference.worker.delivery import InferenceWorker
from services.runtime import dead_letters as h
from tests.support.delivery_runs import (
    GROUP,
    JOBS,
    Handler,
    Run,
    put_jobs,
    result_keys,
    run,
    settings,
    until,
    went_around,
)
from tests.support.memory_broker import MemoryAdmin, MemoryBroker, MemoryConsumer, MemoryProducer


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
        # a pace target no job can miss: the batch size never depends on how fast this CPU ran
        # a.jpg (a slow or loaded one took one job at a time, and the marker read 1:1:1)
        first = Run(broker, handler, inference_batch_target_ms=1e9)
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


# -- rolling deliveries: up to ``parallel`` jobs in flight -----------------------------------------


def metadata_of(*runs: Run) -> list[str]:
    """Every metadata committed for the jobs partition, in order, across worker processes."""
    return [c[JOBS].metadata for r in runs for c in r.consumer.commits if JOBS in c]


def test_with_parallel_four_jobs_are_in_the_handler_at_once() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        keys = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
        put_jobs(broker, *keys)
        handler = Handler()
        handler.hold = set(keys)
        worker = Run(broker, handler, parallel=4)
        await handler.wait_entered(*keys[:4])  # all four entered, none released
        assert handler.running == 4 and "e.jpg" not in handler.seen
        assert broker.committed_offset(GROUP, JOBS) == (0, "inflight:0:1:3")
        handler.release.set()
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (5, ""), "all committed")
        await worker.shutdown()
        assert handler.most_running == 4
        assert sorted(result_keys(broker)) == keys

    run(go)


def test_a_held_job_does_not_stop_the_other_slots() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        fast = [f"f{i}.jpg" for i in range(1, 10)]
        put_jobs(broker, "slow.jpg", *fast)
        handler = Handler()
        handler.hold = {"slow.jpg"}
        worker = Run(broker, handler, parallel=4)
        # later jobs are published, and more are taken than the first poll's four, while it holds
        await until(lambda: sorted(result_keys(broker)) == fast, "the others published")
        assert handler.running == 1 and len(handler.seen) == 10
        # the commit stays at the held job; its marker covers everything in flight
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (0, "inflight:0:1:9"), "marker")
        handler.release.set()
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (10, ""), "all committed")
        await worker.shutdown()
        assert result_keys(broker)[-1] == "slow.jpg" and len(result_keys(broker)) == 10
        # the marker only ever grew while the held job was in flight, then a plain commit
        marks = [m for m in metadata_of(worker) if m]
        assert all(m.startswith("inflight:0:1:") for m in marks)

    run(go)


def test_a_death_with_several_in_flight_makes_them_suspect_and_parks_only_the_poison() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "x.jpg", "poison.jpg", "y.jpg", "z.jpg")
        handler = Handler()
        handler.hold = {"x.jpg", "poison.jpg", "y.jpg"}  # z finishes; the others are in flight
        first = Run(broker, handler, parallel=4, max_deliveries=3)
        await handler.wait_entered("x.jpg", "poison.jpg", "y.jpg")
        await until(lambda: "z.jpg" in result_keys(broker), "z published")
        assert broker.committed_offset(GROUP, JOBS) == (0, "inflight:0:1:3")
        await first.kill()  # the shared death of offsets 0..3

        handler.hold = {"poison.jpg"}  # it "dies" on every delivery from now on
        handler.most_running = 0
        runs = [first]
        for death in (2, 3):
            handler.entered.pop("poison.jpg", None)
            runs.append(Run(broker, handler, parallel=4, max_deliveries=3))
            await handler.wait_entered("poison.jpg")
            assert broker.committed_offset(GROUP, JOBS) == (1, f"inflight:1:{death}:3")
            await runs[-1].kill()
        runs.append(Run(broker, handler, parallel=4, max_deliveries=3))  # parks it
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (4, ""), "all committed")
        await runs[-1].shutdown()

        # every job of the dead range ran again alone, with the death it shared counted
        meta = metadata_of(*runs)
        for offset in (0, 2, 3):
            assert format_marker(offset, 2, 3) in meta
        assert handler.most_running == 1
        [parked] = broker.records("dlq")
        assert h.headers_dict(parked.headers)["vitrine-deaths"] == "3"
        assert h.headers_dict(parked.headers)[h.SOURCE_OFFSET] == "1"
        results = [json.loads(r.value) for r in broker.records("results")]
        assert {r["object"]["key"] for r in results if r["reason"] == "poison"} == {"poison.jpg"}
        # nothing lost: x and y once each, z again (its first result was not committed past)
        assert sorted(r["object"]["key"] for r in results) == [
            "poison.jpg",
            "x.jpg",
            "y.jpg",
            "z.jpg",
            "z.jpg",
        ]
        assert handler.seen.count("poison.jpg") == 3

    run(go)


def test_a_rebalance_with_several_in_flight_waits_for_them_and_commits_before_letting_go() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
        handler = Handler()
        handler.hold = {"a.jpg", "b.jpg", "c.jpg"}
        worker = Run(broker, handler, parallel=3)
        await handler.wait_entered("a.jpg", "b.jpg", "c.jpg")
        revoke = asyncio.create_task(worker.consumer.revoke({JOBS}))
        handler.let_go("b.jpg")  # a slot frees: it must not take d from a partition going away
        await asyncio.sleep(0.3)
        assert not revoke.done(), "the revocation must wait for the running jobs"
        assert sorted(handler.seen) == ["a.jpg", "b.jpg", "c.jpg"]
        handler.let_go("a.jpg")
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, "inflight:2:1:2"), "prefix")
        assert not revoke.done()
        handler.let_go("c.jpg")
        await asyncio.wait_for(revoke, 10)
        # published and committed before the partition went away; no new job started
        assert sorted(result_keys(broker)) == ["a.jpg", "b.jpg", "c.jpg"]
        assert broker.committed_offset(GROUP, JOBS) == (3, "")
        assert sorted(handler.seen) == ["a.jpg", "b.jpg", "c.jpg"]
        await worker.shutdown()

    run(go)


def test_a_shutdown_past_the_grace_hands_several_in_flight_back_uncounted() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        put_jobs(broker, "a.jpg", "b.jpg", "c.jpg", "d.jpg")
        handler = Handler()
        handler.hold = {"b.jpg", "d.jpg"}
        worker = Run(broker, handler, parallel=4, shutdown_grace_s=0.3)
        await handler.wait_entered("b.jpg", "d.jpg")
        await until(lambda: sorted(result_keys(broker)) == ["a.jpg", "c.jpg"], "a, c published")
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (1, "inflight:1:1:3"), "marker")
        await worker.shutdown()
        # past the finished prefix, and not a death: a plain commit
        assert broker.committed_offset(GROUP, JOBS) == (1, "")

        handler.hold = set()
        again = Run(broker, handler, parallel=4)
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (4, ""), "committed")
        await again.shutdown()
        # every job handed back started as a first delivery
        assert all(not m or m.split(":")[2] == "1" for m in metadata_of(again))
        assert sorted(result_keys(broker)) == ["a.jpg", "b.jpg", "c.jpg", "c.jpg", "d.jpg"]

    run(go)


def test_a_suspect_range_found_with_jobs_in_flight_waits_for_them_then_runs_alone() -> None:
    async def go() -> None:
        broker = MemoryBroker(partitions=2)
        other = TopicPartition("jobs", 1)
        put_jobs(broker, "held.jpg")
        handler = Handler()
        handler.hold = {"held.jpg", "s0.jpg"}
        worker = Run(broker, handler, parallel=4)
        await handler.wait_entered("held.jpg")
        # a previous process died running offsets 0..1 of partition 1
        broker.committed[(GROUP, other)] = OffsetAndMetadata(0, format_marker(0, 1, 1))
        since = worker.consumer.polls
        put_jobs(broker, "s0.jpg", "s1.jpg", partition=1)
        await went_around(worker, since)
        assert (1, 0) in worker.consumer.served, "the worker was handed the suspect job"
        assert "s0.jpg" not in handler.seen, "the suspect job must wait for the slots in flight"
        since = worker.consumer.polls
        put_jobs(broker, "more.jpg")
        await went_around(worker, since)
        assert "more.jpg" not in handler.seen, "nothing new starts while they drain"
        handler.let_go("held.jpg")
        await handler.wait_entered("s0.jpg")
        assert broker.committed_offset(GROUP, other) == (0, format_marker(0, 2, 1))
        await went_around(worker, worker.consumer.polls)
        assert handler.running == 1 and "more.jpg" not in handler.seen, "s0 runs alone"
        handler.let_go("s0.jpg")
        await until(lambda: broker.committed_offset(GROUP, other) == (2, ""), "suspects done")
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, ""), "more done")
        await worker.shutdown()
        assert handler.seen == ["held.jpg", "s0.jpg", "s1.jpg", "more.jpg"]
        assert format_marker(1, 2, 1) in [
            c[other].metadata for c in worker.consumer.commits if other in c
        ]

    run(go)


def test_many_fast_jobs_on_several_partitions_with_parallel_slots_each_once() -> None:
    async def go() -> None:
        broker = MemoryBroker(partitions=3)
        keys = {p: [f"p{p}/{i:03d}.jpg" for i in range(120)] for p in range(3)}
        for p, ks in keys.items():
            put_jobs(broker, *ks, partition=p)
        broker.fail_next_acks = 3  # some acknowledgements fail: sent again, never lost
        worker = Run(broker, Handler(), parallel=4)
        tps = [TopicPartition("jobs", p) for p in range(3)]
        await until(
            lambda: all(broker.committed_offset(GROUP, tp) == (120, "") for tp in tps), "all done"
        )
        await worker.shutdown()
        assert sorted(result_keys(broker)) == sorted(k for ks in keys.values() for k in ks)

    run(go)


def test_parallel_is_one_when_a_single_death_parks_a_job() -> None:
    broker = MemoryBroker()
    worker = InferenceWorker(
        settings(max_deliveries=1),
        Handler(),
        parallel=4,
        consumer=MemoryConsumer(broker, GROUP),  # type: ignore[arg-type]
        producer=MemoryProducer(broker),  # type: ignore[arg-type]
        admin=MemoryAdmin(broker),  # type: ignore[arg-type]
    )
    assert worker.parallel == 1


def test_the_position_of_a_partition_with_jobs_finished_out_of_order() -> None:
    fresh = Delivery.fresh(10, 13)
    taken = dict.fromkeys(range(10, 14), fresh)
    later = Delivery.fresh(14, 15)  # taken while 10..13 were in flight: extends the marker
    taken |= dict.fromkeys((14, 15), later)
    # 11 and 12 finished first: the commit stays on 10, the marker covers 10..15
    assert position(taken, {11, 12}, set()) == (10, format_marker(10, 1, 15))
    # 10 finished: past the contiguous prefix 10..12, still covering what is in flight
    assert position(taken, {10, 11, 12}, set()) == (13, format_marker(13, 1, 15))
    assert position(taken, set(range(10, 16)), set()) == (16, "")
    # cut (rebalance, hand-back): what did not run is not a death
    assert position(taken, {10, 11}, {12, 13, 14, 15}) == (12, "")
    assert position(taken, set(), set(taken)) == (10, "")
    # a suspect job run alone: the shared death carried on, or put back when cut
    alone = Delivery(first=10, attempt=2, suspect_end=13, last=10)
    assert position({10: alone}, set(), set()) == (10, format_marker(10, 2, 13))
    assert position({10: alone}, {10}, set()) == (11, format_marker(11, 1, 13))
    assert position({10: alone}, set(), {10}) == (10, format_marker(10, 1, 13))
