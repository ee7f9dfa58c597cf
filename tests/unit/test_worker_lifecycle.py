"""The worker's lifecycle agrees with itself: the settings that time a job and a rebalance, what
a rebalance waits for, and a shutdown that hands jobs back.

A rebalance waits for a revoked partition's running job inside aiokafka's revoke callback, and
the broker drops a member that has not rejoined within its rebalance timeout: its commits are then
refused and the job runs twice.  So the rebalance timeout must cover one job's budget (the engine's
``VITRINE_JOB_TIMEOUT_S`` plus the margin to fetch, publish and commit), and a rebalance must wait
for no more than that: the revoked partition's running job, not the other jobs of its batch.
The process-level shutdown (SIGTERM mid-generation) is tests/stack/test_worker_shutdown.py's.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from pydantic import ValidationError

from services.inference.settings import REVOKE_MARGIN_S
from services.inference.worker.delivery import InferenceWorker
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
)
from tests.support.memory_broker import MemoryAdmin, MemoryBroker, MemoryProducer

# -- the settings ----------------------------------------------------------------------------------


def test_a_job_without_a_time_limit_is_refused_at_start() -> None:
    """No rebalance timeout covers a job that may run for ever: the worker would be dropped
    from the group mid-job and the job run again elsewhere."""
    with pytest.raises(ValidationError, match="VITRINE_JOB_TIMEOUT_S=0") as caught:
        settings(job_timeout_s=0)
    assert "rebalance" in str(caught.value)


def test_a_job_budget_over_what_kafka_can_wait_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="rebalance timeout"):
        settings(job_timeout_s=30 * 24 * 3600.0)  # 30 days: over Kafka's int32 milliseconds


@pytest.mark.parametrize("job_timeout_s", [1.0, 900.0, 7200.0])
def test_the_consumers_rebalance_timeout_covers_one_jobs_budget(job_timeout_s: float) -> None:
    """What the consumer tells the broker, with the default settings and others: the job's
    budget and the margin, whatever ``max_poll_interval_ms`` says (the worker keeps polling
    while its slots are busy, so that one does not bound a job)."""

    async def go() -> None:
        s = settings(job_timeout_s=job_timeout_s)
        broker = MemoryBroker()
        worker = InferenceWorker(
            s,
            Handler(),
            producer=MemoryProducer(broker),  # type: ignore[arg-type]
            admin=MemoryAdmin(broker),  # type: ignore[arg-type]
        )
        try:
            told = worker.consumer._rebalance_timeout_ms
            assert told == s.rebalance_timeout_ms >= (job_timeout_s + REVOKE_MARGIN_S) * 1000
            assert worker.consumer._max_poll_interval_ms == s.max_poll_interval_ms
        finally:
            await worker.consumer.stop()

    run(go)


def test_the_defaults_hold_together() -> None:
    s = settings()
    assert s.job_timeout_s > 0
    assert s.rebalance_timeout_ms >= (s.job_timeout_s + REVOKE_MARGIN_S) * 1000


# -- what a rebalance waits for --------------------------------------------------------------------


def test_a_rebalance_waits_for_the_revoked_partitions_job_not_the_rest_of_its_batch() -> None:
    """A fast engine's batch holds jobs of several partitions, run one after the other.  The
    revocation of one partition waits for its running job (published, committed) and not for
    the next job of the batch, which belongs to a partition the worker keeps: otherwise a batch
    of N jobs would hold the rebalance for N job budgets, past the rebalance timeout."""

    async def go() -> None:
        broker = MemoryBroker(partitions=2)
        other = TopicPartition("jobs", 1)
        put_jobs(broker, "first.jpg")
        handler = Handler()
        worker = Run(broker, handler, inference_batch_target_ms=1e9)  # batches once paced
        await until(lambda: broker.committed_offset(GROUP, JOBS) == (1, ""), "first committed")
        handler.hold = {"a.jpg", "b.jpg"}
        put_jobs(broker, "a.jpg", partition=0)  # no await between: one poll takes both,
        put_jobs(broker, "b.jpg", partition=1)  # one batch runs a (revoked) then b (kept)
        await handler.wait_entered("a.jpg")
        revoke = asyncio.create_task(worker.consumer.revoke({JOBS}))
        handler.let_go("a.jpg")
        await handler.wait_entered("b.jpg")
        await until(revoke.done, "the revocation, with b.jpg still running")
        assert broker.committed_offset(GROUP, JOBS) == (2, "")  # a published and committed
        assert sorted(result_keys(broker)) == ["a.jpg", "first.jpg"]
        assert handler.running == 1  # b.jpg goes on: its partition stays here
        handler.let_go("b.jpg")
        await until(lambda: broker.committed_offset(GROUP, other) == (1, ""), "b committed")
        await worker.shutdown()
        assert sorted(result_keys(broker)) == ["a.jpg", "b.jpg", "first.jpg"]  # once each

    run(go)
