"""The worker's delivery mechanics: jobs from ``vitrine.jobs`` in, results out, nothing lost.

For each ``ImageJob`` the handler (``job.py``) makes a ``CardResult``; it is published and only
then is the job's offset committed — a crash at any point means the job is redelivered, never
lost; the sink's idempotent upsert absorbs the duplicate.  Before a delivery starts, a marker is
committed (``deliveries.py``), so a job that kills every worker is found and parked.

A card takes seconds on a GPU and minutes on a CPU, far longer than a consumer may stay silent.
While a job runs, the worker pauses its partitions and keeps polling (heartbeats and the poll
interval stay healthy, nothing new is fetched).  If a rebalance revokes the job's partition, the
revocation callback waits for the job, publishes and commits before letting go, so a rebalance
does not start a second copy.  On SIGTERM it stops taking jobs and finishes the current one
within ``shutdown_grace_s``; past that it hands the job back uncommitted and leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import ValidationError

from schemas.messages import CardResult, CardStatus, ImageJob
from schemas.reasons import Reason
from services.inference import metrics
from services.inference.deliveries import Delivery, DeliveryCounter
from services.inference.results import not_done
from services.inference.settings import InferenceSettings
from services.runtime.kafka import encode, make_consumer, make_producer, with_retry
from services.runtime.metrics import record_lag
from services.runtime.stage import dead_letter_output

log = logging.getLogger("vitrine.inference")

Handler = Callable[[ImageJob], Awaitable[CardResult]]


@dataclass
class _Send:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: asyncio.Future[Any]

    def again(self, producer: AIOKafkaProducer) -> Callable[[], Awaitable[Any]]:
        return lambda: producer.send_and_wait(
            self.topic, key=self.key, value=self.value, headers=self.headers
        )


@dataclass
class _Batch:
    """Jobs taken in one poll, run one after the other by one engine."""

    plan: dict[TopicPartition, Delivery]
    work: list[tuple[TopicPartition, ConsumerRecord[Any, Any]]]
    task: asyncio.Task[None] = field(init=False)
    sent: list[_Send] = field(default_factory=list)
    finished: dict[TopicPartition, int] = field(default_factory=dict)  # last finished offset
    cut: bool = False  # start no further job (rebalance, shutdown)
    settled: bool = False

    def offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Past every finished job; where none finished, back to before this delivery began
        (a cut or a hand-back is not a death).  Eager rebalancing revokes every partition, so
        a cut batch's unstarted jobs are re-read from these offsets by their next owner."""
        return {
            tp: delivery.after(self.finished[tp]) if tp in self.finished else delivery.not_started()
            for tp, delivery in self.plan.items()
        }


class Pace:
    """How many jobs to take per poll: as many as fit in ``target_ms`` at the recent pace.

    A model that takes seconds per card gets one job at a time, exactly as before batching
    existed, so a rebalance or a shutdown never waits for more than the running job; a fast
    engine gets up to ``most`` jobs per poll, so the per-poll costs (the delivery marker, the
    commit, the broker round trips for results) are shared.
    """

    def __init__(self, target_ms: float, most: int) -> None:
        self.target_ms = target_ms
        self.most = most
        self.job_ms: float | None = None

    def observe(self, ms: float) -> None:
        self.job_ms = ms if self.job_ms is None else 0.8 * self.job_ms + 0.2 * ms

    def batch_size(self) -> int:
        if self.job_ms is None or self.most == 1:
            return 1
        return max(1, min(self.most, int(self.target_ms / max(self.job_ms, 0.01))))


class _FinishBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, worker: InferenceWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions.revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})
        await self.worker.settle(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions.assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )
        if self.worker.busy:  # a new partition must not deliver while a job is running
            self.worker.consumer.pause(*assigned)


class InferenceWorker:
    def __init__(
        self,
        settings: InferenceSettings,
        handle: Handler,
        *,
        consumer: AIOKafkaConsumer | None = None,
        producer: AIOKafkaProducer | None = None,
        admin: AIOKafkaAdminClient | None = None,
    ) -> None:
        """``handle`` turns a job into its result (``job.JobHandler``); the clients default to
        real ones from ``settings`` (the unit tests pass an in-memory broker's)."""
        self.settings = settings
        self.handle = handle
        self.consumer: AIOKafkaConsumer = consumer or make_consumer(
            settings,
            group_id=settings.inference_group,
            max_poll_records=settings.inference_batch_max,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(settings.session_timeout_ms // 10, 1000),
            max_poll_interval_ms=settings.max_poll_interval_ms,
            rebalance_timeout_ms=settings.max_poll_interval_ms,
        )
        self.producer: AIOKafkaProducer = producer or make_producer(settings)
        self.admin = admin or AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self.deliveries = DeliveryCounter(self.consumer, self.admin, settings.inference_group)
        self._batch: _Batch | None = None
        # one job per poll when max_deliveries is 1: a dead batch would park every job in it
        self.pace = Pace(
            settings.inference_batch_target_ms,
            settings.inference_batch_max if settings.max_deliveries > 1 else 1,
        )

    @property
    def busy(self) -> bool:
        return self._batch is not None and not self._batch.task.done()

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await with_retry("producer.start", self.producer.start)
        await with_retry("admin.start", self.admin.start)
        self.consumer.subscribe([self.settings.topic_jobs], listener=_FinishBeforeRevoke(self))
        await with_retry("consumer.start", self.consumer.start)
        log.info("worker.started", extra={"group": self.settings.inference_group})
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=500, max_records=self.pace.batch_size()
                )
                if batch:
                    await self._run_batch(batch, stop)
                await record_lag(self.consumer, self.settings.inference_group)
        finally:
            await self.consumer.stop()  # leaves the group: partitions move on at once
            await self.producer.stop()
            await self.admin.close()
            log.info("worker.stopped")

    async def _run_batch(
        self, records: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], stop: asyncio.Event
    ) -> None:
        spans = {tp: (recs[0].offset, recs[-1].offset) for tp, recs in records.items()}
        plan = await with_retry("deliveries.plan", lambda: self.deliveries.plan(spans))
        suspects = [tp for tp, d in plan.items() if d.suspect_end is not None]
        if suspects:
            # A delivery from here died: its first job runs alone (no other partition's jobs
            # beside it), one at a time until the culprit is found.
            plan = {suspects[0]: plan[suspects[0]]}
            records = {suspects[0]: records[suspects[0]][:1]}
        for tp, (first, last) in spans.items():
            if tp not in records:
                self.consumer.seek(tp, first)  # not delivered now: read again next poll
            elif records[tp][-1].offset < last:
                self.consumer.seek(tp, records[tp][-1].offset + 1)
        await with_retry("deliveries.begin", lambda: self.deliveries.begin(plan))
        work = [(tp, r) for tp, recs in records.items() for r in recs]
        metrics.STARTED.inc(len(work))
        metrics.BATCH_JOBS.observe(len(work))
        metrics.REDELIVERED.inc(sum(d.attempt > 1 for d in plan.values()))
        batch = _Batch(plan, work)
        batch.task = asyncio.create_task(self._work_through(batch))
        self._batch = batch
        self.consumer.pause(*self.consumer.assignment())
        metrics.BUSY.set(1)
        try:
            while not batch.task.done():
                if stop.is_set():
                    batch.cut = True  # finish the job that is running, start no other
                    finished, _ = await asyncio.wait(
                        {batch.task}, timeout=self.settings.shutdown_grace_s
                    )
                    if not finished:
                        await self._hand_back(batch)
                        return
                    break
                # Wake the moment the batch ends; meanwhile poll once a second so the consumer
                # stays a live group member (a rebalance callback may run inside this poll).
                await asyncio.wait({batch.task}, timeout=1.0)
                await record_lag(self.consumer, self.settings.inference_group)
                stray = await self.consumer.getmany(timeout_ms=0)
                for stray_tp, stray_records in stray.items():  # from a partition assigned mid-job
                    self.consumer.seek(stray_tp, stray_records[0].offset)
            await self.settle(self.consumer.assignment())
        finally:
            self._batch = None
            self.consumer.resume(*self.consumer.assignment())
            metrics.BUSY.set(0)

    async def _work_through(self, batch: _Batch) -> None:
        """Run the batch's jobs in order; each result is sent, and all are acknowledged."""
        for tp, record in batch.work:
            if batch.cut:
                break
            started = time.perf_counter()
            delivery = batch.plan[tp]
            if delivery.first == record.offset and delivery.attempt > self.settings.max_deliveries:
                sends = await self._park(record, delivery.attempt - 1)
            else:
                sends = await self._process(record)
            batch.sent.extend(sends)
            batch.finished[tp] = record.offset
            self.pace.observe(_ms_since(started))
        await self._acknowledged(batch.sent)
        if len(batch.work) > 1:
            log.info(
                "batch.finished",
                extra={"jobs": len(batch.work), "job_ms": round(self.pace.job_ms or 0.0, 2)},
            )

    async def _acknowledged(self, sent: list[_Send]) -> None:
        """Wait for the broker's acks; what failed is sent again until it works."""
        for send in sent:
            try:
                await send.future
            except KafkaError:
                await with_retry("result.send", send.again(self.producer))
        sent.clear()

    async def _hand_back(self, batch: _Batch) -> None:
        """Shutdown grace spent mid-job: commit what finished, return the rest to the group."""
        batch.task.cancel()  # the engine thread runs on, but nothing more is sent
        await self._acknowledged(batch.sent)
        await self.consumer.commit(batch.offsets())
        metrics.HANDED_BACK.inc()
        log.warning(
            "job.handed_back", extra={"partitions": sorted(tp.partition for tp in batch.plan)}
        )

    async def settle(self, partitions: set[TopicPartition]) -> None:
        """Stop the running batch after its current job and commit it, if it touches
        ``partitions`` (a rebalance revoking them, or the batch's normal end)."""
        batch = self._batch
        if batch is None or batch.settled or not set(batch.plan) & partitions:
            return
        batch.cut = True
        await asyncio.shield(batch.task)  # results published and acknowledged (or it raised)
        batch.settled = True
        offsets = batch.offsets()
        try:
            await with_retry("offset.commit", lambda: self.consumer.commit(offsets))
        except CommitFailedError as exc:
            # The partition moved to another worker, which will run the job again: a duplicate
            # result the sink absorbs, never a lost one.
            metrics.COMMITS_LOST.inc()
            log.warning("commit.lost_partition", extra={"error": str(exc)[:300]})

    # -- one job ---------------------------------------------------------------------------------

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> _Send:
        """Hand a message to the producer; ``_acknowledged`` waits for the broker later, so a
        batch of results shares the broker's round trips."""
        future = await with_retry(
            "result.enqueue",
            lambda: self.producer.send(topic, key=key, value=value, headers=headers),
        )
        return _Send(topic, key, value, headers, future)

    async def _process(self, record: ConsumerRecord[Any, Any]) -> list[_Send]:
        try:
            job = ImageJob.model_validate_json(record.value)
        except ValidationError as exc:
            metrics.MALFORMED.inc()
            return [await self._park_record(record, Reason.malformed_job, str(exc))]
        result = await self.handle(job)
        sent = await self._send(self.settings.topic_results, job.object.message_key, encode(result))
        return [sent]

    async def _park_record(
        self,
        record: ConsumerRecord[Any, Any],
        reason: Reason,
        detail: str,
        extra: dict[str, str] | None = None,
    ) -> _Send:
        """Park under the one dead-letter policy (``services/runtime/dead_letters.py``)."""
        out = dead_letter_output(
            "inference", record, reason, detail, self.settings.topic_dlq, extra
        )
        return await self._send(out.topic, out.key, out.value, out.headers)

    async def _park(self, record: ConsumerRecord[Any, Any], deaths: int) -> list[_Send]:
        """A poison job: keep it for inspection on the dead-letter topic, finish its row."""
        detail = (
            f"the worker died {deaths} times while processing this job; parked on "
            f"{self.settings.topic_dlq}"
        )
        sent = [
            await self._park_record(record, Reason.poison, detail, {"vitrine-deaths": str(deaths)})
        ]
        metrics.JOBS.labels("failed", Reason.poison).inc()
        try:
            job = ImageJob.model_validate_json(record.value)
        except ValidationError:
            log.error("job.parked", extra={"key": _key(record), "deaths": deaths})
            return sent
        result = not_done(job, status=CardStatus.failed, reason=Reason.poison, detail=detail)
        sent.append(
            await self._send(self.settings.topic_results, job.object.message_key, encode(result))
        )
        log.error(
            "job.parked",
            extra={
                "key": f"{job.object.bucket}/{job.object.key}",
                "trace_id": job.trace_id,
                "deaths": deaths,
            },
        )
        return sent


def _key(record: ConsumerRecord[Any, Any]) -> str:
    return record.key.decode(errors="replace") if record.key else ""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
