"""Delivery markers: how a worker knows that the previous delivery of a job (or batch) died;
and what a commit refused after the results were published does to them."""

from __future__ import annotations

import logging

import pytest
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from services.inference.worker.deliveries import Delivery, Marker, format_marker, read_marker
from services.inference.worker.delivery import Pace
from tests.support.delivery_runs import GROUP, JOBS, Handler, Run, put_jobs, result_keys, run, until
from tests.support.memory_broker import MemoryBroker


def test_markers_round_trip_and_older_three_field_markers_still_read() -> None:
    assert read_marker(format_marker(41, 2, 47), 41) == Marker(41, 2, 47)
    assert read_marker("inflight:41:2", 41) == Marker(41, 2, 41)  # one job per marker
    assert read_marker("inflight:41:2:47", 42) is None  # about another offset
    assert read_marker("inflight:41:2", 42) is None
    assert read_marker("", 41) is read_marker(None, 41) is read_marker("handed-back", 41) is None
    assert read_marker("inflight:x:y:z", 41) is None
    assert read_marker("inflight:x:y", 41) is None


def test_a_normal_delivery_commits_plain_offsets() -> None:
    d = Delivery(first=10, attempt=1, suspect_end=None, last=14)
    assert d.end == 14
    assert d.after(14) == OffsetAndMetadata(15, "")
    assert d.not_started() == OffsetAndMetadata(10, "")


def test_a_suspect_range_carries_one_shared_death_to_each_next_job() -> None:
    d = Delivery(first=10, attempt=2, suspect_end=13, last=10)  # alone
    assert d.end == 13  # the marker keeps the whole range suspect
    assert d.after(10) == OffsetAndMetadata(11, format_marker(11, 1, 13))
    assert d.after(13) == OffsetAndMetadata(14, "")  # past the range: batches again
    # cut before it ran: the marker goes back to what it was, this is not a death
    assert d.not_started() == OffsetAndMetadata(10, format_marker(10, 1, 13))


def test_pace_takes_one_job_until_it_knows_and_when_jobs_are_slow() -> None:
    pace = Pace(target_ms=100, most=64)
    assert pace.batch_size() == 1
    pace.observe(2.0)
    assert pace.batch_size() == 50
    for _ in range(20):
        pace.observe(3000.0)  # a real model on a CPU
    assert pace.batch_size() == 1
    assert Pace(target_ms=100, most=1).batch_size() == 1


# -- a commit refused after its results were published ------------------------------------------


def commits_lost() -> float:
    return REGISTRY.get_sample_value("vitrine_inference_commits_lost_total") or 0.0


def uncommitted(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "jobs.uncommitted"]


async def refused_after_publishing(
    caplog: pytest.LogCaptureFixture, refusals: int
) -> tuple[MemoryBroker, Run, float]:
    """A worker whose commit after ``a.jpg`` (published) is refused, and ``refusals - 1`` after;
    with the broker and the count of commits lost before."""
    caplog.set_level(logging.INFO, logger="vitrine.inference")
    broker = MemoryBroker()
    put_jobs(broker, "a.jpg")
    handler = Handler()
    handler.hold = {"a.jpg"}
    lost = commits_lost()
    worker = Run(broker, handler)
    await handler.wait_entered("a.jpg")
    broker.refuse_next_commits = refusals
    handler.let_go("a.jpg")
    await until(lambda: uncommitted(caplog), "the refused commit logged")
    [entry] = uncommitted(caplog)
    assert entry.__dict__["partitions"] == [0] and entry.__dict__["jobs"] == 1
    assert result_keys(broker) == ["a.jpg"]  # published once, not sent again
    assert broker.committed_offset(GROUP, JOBS) == (0, format_marker(0, 1, 0))  # as it was
    return broker, worker, lost


def test_a_refused_commit_is_counted_and_logged_and_the_next_commit_moves_past_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        broker, worker, lost = await refused_after_publishing(caplog, refusals=1)
        assert commits_lost() == lost + 1
        # the partition stayed ours: the next job's begin marker is past a.jpg, nothing lost
        put_jobs(broker, "b.jpg")
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, ""), "all committed")
        await worker.shutdown()
        assert [c[JOBS] for c in worker.consumer.commits] == [
            (0, format_marker(0, 1, 0)),
            (1, format_marker(1, 1, 1)),
            (2, ""),
        ]
        assert result_keys(broker) == ["a.jpg", "b.jpg"]  # each once

    run(go)


def test_a_refused_commit_lost_to_a_rebalance_runs_the_job_again_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        broker, first, lost = await refused_after_publishing(caplog, refusals=2)
        await first.consumer.revoke({JOBS})  # the rebalance: its commit is refused too
        assert commits_lost() == lost + 2
        second = Run(broker, Handler())  # the partition's next owner reads from the last commit
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (1, ""), "committed")
        await second.shutdown()
        await first.shutdown()
        # the result twice, which the sink's idempotent upsert absorbs; the marker the refused
        # commit left counts as one death of the job (it runs alone, as a suspect)
        assert result_keys(broker) == ["a.jpg", "a.jpg"]
        assert (0, format_marker(0, 2, 0)) in [c[JOBS] for c in second.consumer.commits]

    run(go)


def test_a_refused_begin_commit_starts_nothing_and_the_jobs_are_taken_again() -> None:
    async def go() -> None:
        broker = MemoryBroker()
        broker.refuse_next_commits = 1  # the first marker: a rebalance under the first poll
        put_jobs(broker, "a.jpg", "b.jpg")
        handler = Handler()
        worker = Run(broker, handler, inference_batch_target_ms=1e9)
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (2, ""), "all committed")
        await worker.shutdown()
        assert handler.seen == ["a.jpg", "b.jpg"] and result_keys(broker) == ["a.jpg", "b.jpg"]

    run(go)
