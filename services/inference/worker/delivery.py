"""The worker's delivery mechanics: jobs from ``vitrine.jobs`` in, results out, nothing lost.

For each ``ImageJob`` the handler (``job.py``) makes a ``CardResult``; it is published and only
then is the job's offset committed — a crash at any point means the job is redelivered, never
lost; the sink's idempotent upsert absorbs the duplicate.  Before a job starts, a marker is
committed (``deliveries.py``), so a job that kills every worker is found and parked.

Rolling deliveries.  The engine generates up to ``parallel`` cards at once (continuous batching
in one llama.cpp context: its *slots*), so the worker keeps up to ``parallel`` *batches* in
flight.  A batch is jobs of one poll that one engine slot runs one after the other: one job for
a real model, many for an engine that takes milliseconds per job (``Pace``), so that the
per-poll costs are shared.  The moment a batch ends, its jobs are committed and a poll for the
free slots takes more, without waiting for the other batches: a job that retries three times
holds one slot, not the engine.  Each result is sent as soon as its card is ready.  Jobs of one
partition (its *lane*, ``lanes.py``) finish out of order, so the commit is the contiguous
finished prefix, and the partition's marker stays on the lowest unfinished job with its end on
the highest taken (``deliveries.position``): a death makes them all suspect.  When a poll finds
a suspect range (a previous process died on it), the batches in flight are drained first and
the suspect jobs then run one at a time, alone, so that each death is counted on the one job
that ran (what a poll starts is decided by ``planner.py``).  With ``parallel`` 1 there is one
batch in flight, and this is the batch-at-a-time worker it always was.

A card takes seconds on a GPU and minutes on a CPU, far longer than a consumer may stay silent.
While every slot is busy, the worker pauses its partitions and keeps polling (heartbeats and the
poll interval stay healthy, nothing new is fetched).  If a rebalance revokes a partition, the
revocation callback starts no further job of it, waits for its running job (not the rest of that
job's batch), publishes and commits before letting go, so a rebalance does not start a second
copy; the broker waits that long because the consumer announces a rebalance timeout of one job's
budget plus a margin (``settings.rebalance_timeout_ms``).  On SIGTERM it stops taking jobs and
finishes those in flight within ``shutdown_grace_s``; past that it commits what finished, hands
the rest back uncounted (not a death) and leaves the group; the service then closes the engine,
which stops the generations still running (``service.py``).

Words: a *delivery* is one Kafka delivery of a job (or of a partition's range of jobs, as the
markers count them); a *batch* is what one engine slot runs; a *lane* is one partition's jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from schemas.messages import CardResult, CardStatus, ImageJob
from schemas.reasons import Reason
from services.inference import metrics
from services.inference.settings import InferenceSettings
from services.inference.worker import planner
from services.inference.worker.deliveries import Delivery, DeliveryCounter
from services.inference.worker.lanes import Batch, Job, Lane, Lanes, Records, Send, State
from services.inference.worker.results import not_done
from services.runtime.kafka import encode, make_consumer, make_producer, with_retry
from services.runtime.metrics import record_lag
from services.runtime.stage import dead_letter_output

log = logging.getLogger("vitrine.inference")

Handler = Callable[[ImageJob], Awaitable[CardResult]]


class Pace:
    """How many jobs one batch takes per poll: as many as fit in ``target_ms`` at the recent pace.

    A model that takes seconds per card gets one job per batch, so a rebalance or a shutdown
    never waits for more than the running jobs, and a slot whose batch ends is refilled at once;
    a fast engine gets up to ``most`` jobs per poll, so the per-poll costs (the delivery marker,
    the commit, the broker round trips for results) are shared.
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
        self.worker.assigned(assigned)


class InferenceWorker:
    def __init__(
        self,
        settings: InferenceSettings,
        handle: Handler,
        *,
        parallel: int = 1,
        consumer: AIOKafkaConsumer | None = None,
        producer: AIOKafkaProducer | None = None,
        admin: AIOKafkaAdminClient | None = None,
    ) -> None:
        """``handle`` turns a job into its result (``job.JobHandler``) and may be called
        ``parallel`` times at once (the engine's slots); the clients default to real ones from
        ``settings`` (the unit tests pass an in-memory broker's)."""
        self.settings = settings
        self.handle = handle
        self.consumer: AIOKafkaConsumer = consumer or make_consumer(
            settings,
            group_id=settings.inference_group,
            max_poll_records=settings.inference_batch_max,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(settings.session_timeout_ms // 10, 1000),
            max_poll_interval_ms=settings.max_poll_interval_ms,
            # the revoke callback waits for the revoked partitions' running jobs (``settle``)
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
        )
        self.producer: AIOKafkaProducer = producer or make_producer(settings)
        self.admin = admin or AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self.deliveries = DeliveryCounter(self.admin, settings.inference_group)
        # One job in flight when max_deliveries is 1: a death with several in flight would park
        # every one of them (each is suspect, and its first suspect delivery is over the limit).
        self.parallel = max(1, parallel) if settings.max_deliveries > 1 else 1
        if self.parallel < parallel:
            log.warning(
                "worker.parallel_limited",
                extra={"parallel": parallel, "running": self.parallel, "max_deliveries": 1},
            )
        self.pace = Pace(
            settings.inference_batch_target_ms,
            settings.inference_batch_max if settings.max_deliveries > 1 else 1,
        )
        self.lanes = Lanes(self.parallel)
        self._commit_lock = asyncio.Lock()

    @property
    def free(self) -> int:
        """Engine slots that may take a batch now (``Lanes.free``)."""
        return self.lanes.free

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await with_retry("producer.start", self.producer.start)
        await with_retry("admin.start", self.admin.start)
        self.consumer.subscribe([self.settings.topic_jobs], listener=_FinishBeforeRevoke(self))
        await with_retry("consumer.start", self.consumer.start)
        metrics.PARALLEL.set(self.parallel)
        log.info(
            "worker.started",
            extra={"group": self.settings.inference_group, "parallel": self.parallel},
        )
        try:
            while not stop.is_set():
                await self._turn(stop)
            await self._wind_down()
        finally:
            for batch in self.lanes.batches:  # a death (this task cancelled): nothing more runs
                batch.task.cancel()
            await self.consumer.stop()  # leaves the group: partitions move on at once
            await self.producer.stop()
            await self.admin.close()
            metrics.BUSY.set(0)
            log.info("worker.stopped")

    async def _turn(self, stop: asyncio.Event) -> None:
        """Commit what the ended batches finished; then take jobs for the free slots, or, with
        every slot busy, keep the consumer a live group member without taking any."""
        await self._harvest()
        free = self.free
        if free:
            self.consumer.resume(*(self.consumer.assignment() - self.lanes.revoking))
            records = await self.consumer.getmany(
                timeout_ms=100 if self.lanes.batches else 500,  # wake soon to commit a batch
                max_records=min(self.settings.inference_batch_max, free * self.pace.batch_size()),
            )
            if records:
                await self._take(records, free)
        else:
            self.consumer.pause(*self.consumer.assignment())
            # Wake the moment a batch ends; meanwhile poll once a second so the consumer stays
            # a live group member (a rebalance callback may run inside this poll).
            await self._wait(stop, timeout=1.0)
            await self._seek_back_strays()
        await record_lag(self.consumer, self.settings.inference_group)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until a batch ends, ``stop`` is set, or ``timeout`` passes."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {stopping, *(batch.task for batch in self.lanes.batches)},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()

    async def _seek_back_strays(self) -> None:
        """Poll without taking: records can only come from a partition assigned mid-job."""
        stray = await self.consumer.getmany(timeout_ms=0)
        for tp, records in stray.items():
            self.consumer.seek(tp, records[0].offset)

    # -- taking jobs -----------------------------------------------------------------------------

    async def _take(self, records: Records, free: int) -> None:
        """Plan one poll's jobs (``planner.py``), mark them begun (one commit), and start them in
        ``free`` engine slots at most."""
        polled = {tp: [record.offset for record in recs] for tp, recs in records.items()}
        screened = planner.screen(polled, self._view())
        self._seek(screened.seeks)
        ask = screened.ask
        read = await with_retry("deliveries.plan", lambda: self.deliveries.read(ask)) if ask else {}
        # The one await of a poll: a rebalance callback may have run during it, so the plan is
        # made on the state as it is now, and the lanes assert that it holds when they take.
        plan = planner.plan(screened.keep, ask.keys(), read, self._view(), free)
        self._seek(plan.seeks)
        if plan.drain:
            self.lanes.drain()
            log.info(
                "suspects.draining", extra={"partitions": sorted(tp.partition for tp in plan.drain)}
            )
        elif plan.take:
            await self._begin(plan, records)

    def _view(self) -> planner.View:
        return self.lanes.view(self.consumer.assignment())

    def _seek(self, seeks: dict[TopicPartition, int]) -> None:
        for tp, offset in seeks.items():
            self.consumer.seek(tp, offset)

    async def _begin(self, plan: planner.Plan, records: Records) -> None:
        """Take the plan's jobs, mark them begun (one commit of their lanes' markers), and start
        their batches.  No await between the plan and ``take``: the lanes check it still holds."""
        if plan.suspect is not None:
            _log_suspect(plan.suspect, plan.deliveries[plan.suspect])
        jobs = self.lanes.take(plan, records)
        if not await self._commit({job.lane for job in jobs}, "deliveries.begin"):
            # The group rebalanced under us: nothing of this poll starts here.
            self.lanes.unbegun(jobs)
            owned = self.consumer.assignment()
            self._seek({tp: offsets[0] for tp, offsets in plan.take.items() if tp in owned})
            return
        metrics.STARTED.inc(len(jobs))
        metrics.BATCH_JOBS.observe(len(jobs))
        metrics.REDELIVERED.inc(sum(d.attempt > 1 for d in plan.deliveries.values()))
        self.lanes.start(plan, jobs, self._work_through)
        metrics.BUSY.set(len(self.lanes.batches))

    # -- batches ---------------------------------------------------------------------------------

    async def _work_through(self, batch: Batch) -> None:
        """Run the batch's jobs in order, each result sent the moment it is ready; then wait for
        the broker to acknowledge them all (the results of a fast engine share round trips)."""
        for job in batch.jobs:
            if job.lane.cut:
                job.move(State.skipped)
                continue
            job.move(State.running)
            started = time.perf_counter()
            d = job.delivery
            if d.first == job.offset and d.attempt > self.settings.max_deliveries:
                job.sent = await self._park(job.record, d.attempt - 1)
            else:
                job.sent = await self._process(job.record)
            job.move(State.sent)
            self.pace.observe(_ms_since(started))
        await self._acknowledged([send for job in batch.jobs for send in job.sent])
        for job in batch.jobs:
            if job.state is State.sent:
                job.move(State.done)
        if len(batch.jobs) > 1:
            log.info(
                "batch.finished",
                extra={"jobs": len(batch.jobs), "job_ms": round(self.pace.job_ms or 0.0, 2)},
            )

    async def _harvest(self) -> None:
        """Free the engine slots whose batch ended and commit their partitions.

        A refused commit (the group rebalanced under us) loses nothing and publishes nothing
        twice here: the results are in the log already, and nothing is sent again.  The lanes
        keep their finished jobs, so if a partition stays ours its next commit (the next poll's
        begin marker, the next batch's end, a revocation's) moves past them, commits being
        cumulative.  If it went to another worker before one landed, that one reads from the
        last commit, whose marker still covers these jobs: it runs them again one at a time as
        suspects (one death counted), and the sink's idempotent upsert absorbs the duplicates.
        ``_commit`` counts the refusal (``COMMITS_LOST``); the jobs left uncommitted are logged
        here."""
        ended = self.lanes.ended()
        if not ended:
            return
        metrics.BUSY.set(len(self.lanes.batches))
        for batch in ended:
            batch.task.result()  # a batch that raised stops the worker, as it stops any service
        lanes = {job.lane for batch in ended for job in batch.jobs}
        if not await self._commit(lanes):
            log.warning(
                "jobs.uncommitted",
                extra={
                    "jobs": sum(job.state is State.done for b in ended for job in b.jobs),
                    "partitions": sorted(lane.tp.partition for lane in lanes),
                    "note": "results published, commit refused: they may run again (upserted)",
                },
            )

    async def _acknowledged(self, sent: list[Send]) -> None:
        """Wait for the broker's acks; what failed is sent again until it works (once, though
        a revocation and the batch may wait for the same send)."""
        for send in sent:
            async with send.acking:
                if send.acked:
                    continue
                try:
                    await send.future
                except KafkaError:
                    await with_retry("result.send", send.again(self.producer))
                send.acked = True

    async def _commit(self, lanes: Iterable[Lane], what: str = "offset.commit") -> bool:
        """Commit each lane's position in one request.  One at a time, computed under the lock,
        so that an older position never lands after a newer one.  False when the group refused
        it: it rebalanced, and the jobs run again elsewhere (a duplicate the sink absorbs)."""
        async with self._commit_lock:
            todo = self.lanes.positions(lanes, self.consumer.assignment())
            if not todo:
                return True
            offsets = {lane.tp: at for lane, at in todo.items()}
            try:
                await with_retry(what, lambda: self.consumer.commit(offsets))
            except (CommitFailedError, IllegalStateError) as exc:
                metrics.COMMITS_LOST.inc()
                log.warning(
                    "commit.lost_partition",
                    extra={
                        "what": what,
                        "partitions": sorted(tp.partition for tp in offsets),
                        "error": str(exc)[:300],
                    },
                )
                return False
            self.lanes.committed(todo)
            return True

    # -- rebalance and shutdown ------------------------------------------------------------------

    async def settle(self, partitions: set[TopicPartition]) -> None:
        """A rebalance revokes ``partitions``: start no further job of them, wait for their
        running ones (results published and acknowledged), commit, let go.

        This runs inside aiokafka's revoke callback, which the broker waits for up to the
        rebalance timeout (``settings.rebalance_timeout_ms``: one job's budget and a margin).
        So it waits for the running job of each revoked partition, never for the rest of its
        batch (a fast engine's batch holds many jobs, of several partitions)."""
        lanes = self.lanes.revoke(partitions)
        if not lanes:
            return
        self.consumer.pause(*(partitions & self.consumer.assignment()))
        for job, batch in self.lanes.running_in(lanes):
            await _left_running(job, batch)
            if job.state is State.sent:  # its batch acknowledges the rest at its end
                await self._acknowledged(job.sent)
                job.move(State.done)
        await self._commit(lanes)
        self.lanes.let_go(lanes)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.lanes.assigned(partitions)
        if not self.free:  # a new partition must not deliver while every slot is busy
            self.consumer.pause(*partitions)

    async def _wind_down(self) -> None:
        """SIGTERM: take no job; finish those in flight within the grace, or hand them back."""
        self.lanes.cut_all()
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while self.lanes.batches:
            left = deadline - time.monotonic()
            if left <= 0:
                await self._hand_back()
                return
            self.consumer.pause(*self.consumer.assignment())
            await asyncio.wait(
                {batch.task for batch in self.lanes.batches},
                timeout=min(left, 1.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            await self._harvest()
            await self._seek_back_strays()  # still polling: heartbeats, rebalance callbacks

    async def _hand_back(self) -> None:
        """Shutdown grace spent: commit what finished, return the rest to the group uncounted
        (a job cut short is not a death: the marker goes back to what it was)."""
        batches = self.lanes.hand_back()
        for batch in batches:
            batch.task.cancel()  # nothing more is sent; the engine's close stops its threads
        await asyncio.gather(*(batch.task for batch in batches), return_exceptions=True)
        metrics.BUSY.set(0)
        jobs = [job for batch in batches for job in batch.jobs]
        for job in jobs:
            if job.state in (State.taken, State.running):
                job.move(State.skipped)
        await self._acknowledged([s for job in jobs if job.state is State.sent for s in job.sent])
        for job in jobs:
            if job.state is State.sent:
                job.move(State.done)
        await self._commit({job.lane for job in jobs})
        metrics.HANDED_BACK.inc()
        log.warning(
            "job.handed_back",
            extra={
                "jobs": sum(job.state is State.skipped for job in jobs),
                "partitions": sorted({job.lane.tp.partition for job in jobs}),
            },
        )

    # -- one job ---------------------------------------------------------------------------------

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Send:
        """Hand a message to the producer; ``_acknowledged`` waits for the broker later, so a
        batch of results shares the broker's round trips."""
        future = await with_retry(
            "result.enqueue",
            lambda: self.producer.send(topic, key=key, value=value, headers=headers),
        )
        return Send(topic, key, value, headers, future)

    async def _process(self, record: ConsumerRecord[Any, Any]) -> list[Send]:
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
    ) -> Send:
        """Park under the one dead-letter policy (``services/runtime/dead_letters.py``)."""
        out = dead_letter_output(
            "inference", record, reason, detail, self.settings.topic_dlq, extra
        )
        return await self._send(out.topic, out.key, out.value, out.headers)

    async def _park(self, record: ConsumerRecord[Any, Any], deaths: int) -> list[Send]:
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


async def _left_running(job: Job, batch: asyncio.Task[None]) -> None:
    """Until ``job`` handed its result to the producer or was skipped, or its batch ended (a
    batch that raised leaves it running: the commit then stays before it)."""
    if job.state is not State.running:
        return
    waiting = asyncio.ensure_future(job.left_running.wait())
    try:
        await asyncio.wait({waiting, batch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


def _key(record: ConsumerRecord[Any, Any]) -> str:
    return record.key.decode(errors="replace") if record.key else ""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _log_suspect(tp: TopicPartition, suspect: Delivery) -> None:
    """Its first job runs alone (no other partition's jobs beside it), one at a time until the
    culprit is found."""
    log.warning(
        "delivery.suspect",
        extra={
            "partition": tp.partition,
            "offset": suspect.first,
            "suspect_end": suspect.suspect_end,
            "delivery": suspect.attempt,
            "note": "a worker died with these jobs in flight: each runs alone",
        },
    )
