"""The worker's delivery mechanics: jobs from ``vitrine.jobs`` in, results out, nothing lost.

For each ``ImageJob`` the handler (``job.py``) makes a ``CardResult``; it is published and only
then is the job's offset committed — a crash at any point means the job is redelivered, never
lost; the sink's idempotent upsert absorbs the duplicate.  Before a job starts, a marker is
committed (``deliveries.py``), so a job that kills every worker is found and parked.

Rolling deliveries.  The engine generates up to ``parallel`` cards at once (continuous batching
in one llama.cpp context), so the worker keeps up to ``parallel`` *slots* busy.  A slot runs
the jobs of one delivery one after the other: one job for a real model, many for an engine
that takes milliseconds per job (``Pace``), so that the per-poll costs are shared.  The moment
a slot ends, its jobs are committed and a poll for the free slots takes more, without waiting
for the other slots: a job that retries three times holds one slot, not the engine.  Each
result is sent as soon as its card is ready.  Jobs of one partition finish out of order, so the
commit is the contiguous finished prefix, and the partition's marker stays on the lowest
unfinished job with its end on the highest taken (``deliveries.position``): a death makes them
all suspect.  When a poll finds a suspect range (a previous process died on it), the slots in
flight are drained first and the suspect jobs then run one at a time, alone, so that each death
is counted on the one job that ran.  With ``parallel`` 1 there is one slot, and this is the
batch-at-a-time worker it always was.

A card takes seconds on a GPU and minutes on a CPU, far longer than a consumer may stay silent.
While every slot is busy, the worker pauses its partitions and keeps polling (heartbeats and the
poll interval stay healthy, nothing new is fetched).  If a rebalance revokes a partition, the
revocation callback starts no further job of it, waits for its running ones, publishes and
commits before letting go, so a rebalance does not start a second copy.  On SIGTERM it stops
taking jobs and finishes those in flight within ``shutdown_grace_s``; past that it commits what
finished, hands the rest back uncounted (not a death) and leaves the group.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from pydantic import ValidationError

from schemas.messages import CardResult, CardStatus, ImageJob
from schemas.reasons import Reason
from services.inference import metrics
from services.inference.settings import InferenceSettings
from services.inference.worker.deliveries import Delivery, DeliveryCounter, position
from services.inference.worker.results import not_done
from services.runtime.kafka import encode, make_consumer, make_producer, with_retry
from services.runtime.metrics import record_lag
from services.runtime.stage import dead_letter_output

log = logging.getLogger("vitrine.inference")

Handler = Callable[[ImageJob], Awaitable[CardResult]]
Records = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


@dataclass
class _Send:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: asyncio.Future[Any]
    acked: bool = False

    def again(self, producer: AIOKafkaProducer) -> Callable[[], Awaitable[Any]]:
        return lambda: producer.send_and_wait(
            self.topic, key=self.key, value=self.value, headers=self.headers
        )


class _State(enum.Enum):
    taken = "taken"  # waiting in its slot
    running = "running"
    sent = "sent"  # result handed to the producer, not yet acknowledged
    done = "done"  # result acknowledged: its offset may be committed past
    skipped = "skipped"  # never started here (cut by a rebalance or a shutdown, handed back)


@dataclass(eq=False)
class _Job:
    lane: _Lane
    record: ConsumerRecord[Any, Any]
    delivery: Delivery  # the poll's delivery of this partition that took it
    state: _State = _State.taken
    sent: list[_Send] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def running(self) -> bool:
        return self.state in (_State.running, _State.sent)


@dataclass(eq=False)
class _Lane:
    """A partition's jobs taken by this worker and not yet committed past."""

    tp: TopicPartition
    jobs: dict[int, _Job] = field(default_factory=dict)
    cut: bool = False  # revoked or shutting down: start no further job of it
    committed: OffsetAndMetadata | None = None  # what this worker last committed for it

    def position(self) -> OffsetAndMetadata:
        jobs = self.jobs.values()
        return position(
            {j.offset: j.delivery for j in jobs},
            done={j.offset for j in jobs if j.state is _State.done},
            dropped={
                j.offset
                for j in jobs
                if j.state is _State.skipped or (j.state is _State.taken and self.cut)
            },
        )

    def passed(self, offset: int) -> None:
        """Forget the jobs before ``offset``: it is committed."""
        for o in [o for o in self.jobs if o < offset]:
            del self.jobs[o]


@dataclass(eq=False)
class _Slot:
    """One engine slot's delivery: its jobs run one after the other."""

    jobs: list[_Job]
    alone: bool  # a suspect job: nothing else runs beside it
    task: asyncio.Task[None] = field(init=False)


class Pace:
    """How many jobs one slot takes per poll: as many as fit in ``target_ms`` at the recent pace.

    A model that takes seconds per card gets one job per slot, so a rebalance or a shutdown
    never waits for more than the running jobs, and a slot that ends is refilled at once; a fast
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
            rebalance_timeout_ms=settings.max_poll_interval_ms,
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
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._slots: list[_Slot] = []
        self._draining = False  # a suspect range waits for the slots in flight to end
        self._revoking: set[TopicPartition] = set()
        self._commit_lock = asyncio.Lock()

    @property
    def free(self) -> int:
        """Slots that may take jobs now: none while a suspect job runs alone, or while the
        slots in flight drain before one."""
        if any(slot.alone for slot in self._slots) or (self._draining and self._slots):
            return 0
        return self.parallel - len(self._slots)

    @property
    def busy(self) -> bool:
        return bool(self._slots)

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
            for slot in self._slots:  # a death (this task cancelled): nothing more runs
                slot.task.cancel()
            await self.consumer.stop()  # leaves the group: partitions move on at once
            await self.producer.stop()
            await self.admin.close()
            metrics.BUSY.set(0)
            log.info("worker.stopped")

    async def _turn(self, stop: asyncio.Event) -> None:
        """Commit what the ended slots finished; then take jobs for the free slots, or, with
        every slot busy, keep the consumer a live group member without taking any."""
        await self._harvest()
        free = self.free
        if free:
            self.consumer.resume(*(self.consumer.assignment() - self._revoking))
            records = await self.consumer.getmany(
                timeout_ms=100 if self._slots else 500,  # wake soon to commit a slot's end
                max_records=min(self.settings.inference_batch_max, free * self.pace.batch_size()),
            )
            if records:
                await self._take(records, free)
        else:
            self.consumer.pause(*self.consumer.assignment())
            # Wake the moment a slot ends; meanwhile poll once a second so the consumer stays
            # a live group member (a rebalance callback may run inside this poll).
            await self._wait(stop, timeout=1.0)
            await self._seek_back_strays()
        await record_lag(self.consumer, self.settings.inference_group)

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until a slot ends, ``stop`` is set, or ``timeout`` passes."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {stopping, *(slot.task for slot in self._slots)},
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
        """Plan one poll's jobs, mark them begun (one commit), and start them in ``free``
        slots at most."""
        records = self._refuse(records)
        # A partition with this worker's jobs in flight carries this worker's marker: what
        # follows them is a first delivery.  Elsewhere the marker says whether a delivery died.
        idle = {
            tp: (recs[0].offset, recs[-1].offset)
            for tp, recs in records.items()
            if tp not in self._lanes or self._lanes[tp].committed is None
        }
        plan = (
            await with_retry("deliveries.plan", lambda: self.deliveries.plan(idle)) if idle else {}
        )
        records = self._refuse(records)  # a rebalance may have run during the plan
        if not records:
            return
        spans = {tp: (recs[0].offset, recs[-1].offset) for tp, recs in records.items()}
        plan = {tp: plan.get(tp) or Delivery.fresh(*span) for tp, span in spans.items()}
        suspects = [tp for tp, d in plan.items() if d.suspect_end is not None]
        alone = bool(suspects)
        if suspects and self._slots:
            # A delivery from here died: finish what is in flight first (published and
            # committed), then the suspect jobs run alone, one at a time.
            for tp, (first, _) in spans.items():
                self.consumer.seek(tp, first)
            self._draining = True
            log.info(
                "suspects.draining", extra={"partitions": sorted(tp.partition for tp in suspects)}
            )
            return
        if suspects:
            # Its first job runs alone (no other partition's jobs beside it), one at a time until
            # the culprit is found.
            suspect = plan[suspects[0]]
            log.warning(
                "delivery.suspect",
                extra={
                    "partition": suspects[0].partition,
                    "offset": suspect.first,
                    "suspect_end": suspect.suspect_end,
                    "delivery": suspect.attempt,
                    "note": "a worker died with these jobs in flight: each runs alone",
                },
            )
            plan = {suspects[0]: suspect}
            records = {suspects[0]: records[suspects[0]][:1]}
        for tp, (first, last) in spans.items():
            if tp not in records:
                self.consumer.seek(tp, first)  # not delivered now: read again next poll
            elif records[tp][-1].offset < last:
                self.consumer.seek(tp, records[tp][-1].offset + 1)
        jobs: list[_Job] = []
        for tp, recs in records.items():
            lane = self._lanes.setdefault(tp, _Lane(tp))
            for record in recs:
                job = _Job(lane, record, plan[tp])
                lane.jobs[record.offset] = job
                jobs.append(job)
        lanes = {job.lane for job in jobs}
        if not await self._commit(lanes, "deliveries.begin"):
            # The group rebalanced under us: nothing of this poll starts here.
            for job in jobs:
                job.state = _State.skipped
            for tp, recs in records.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, recs[0].offset)
            return
        metrics.STARTED.inc(len(jobs))
        metrics.BATCH_JOBS.observe(len(jobs))
        metrics.REDELIVERED.inc(sum(d.attempt > 1 for d in plan.values()))
        slots = 1 if alone else min(free, len(jobs))
        for i in range(slots):  # round robin: the lowest offsets run first, commits move on
            slot = _Slot(jobs[i::slots], alone)
            slot.task = asyncio.create_task(self._work_through(slot))
            self._slots.append(slot)
        metrics.BUSY.set(len(self._slots))

    def _refuse(self, records: Records) -> Records:
        """Leave out, to be read again, what may not start now: a partition being revoked (or
        cut, or no longer ours)."""
        owned = self.consumer.assignment()
        keep: Records = {}
        for tp, recs in records.items():
            lane = self._lanes.get(tp)
            if tp in self._revoking or tp not in owned or (lane is not None and lane.cut):
                if tp in owned:
                    self.consumer.seek(tp, recs[0].offset)
            else:
                keep[tp] = recs
        return keep

    # -- slots -----------------------------------------------------------------------------------

    async def _work_through(self, slot: _Slot) -> None:
        """Run the slot's jobs in order, each result sent the moment it is ready; then wait for
        the broker to acknowledge them all (the results of a fast engine share round trips)."""
        for job in slot.jobs:
            if job.lane.cut or job.state is not _State.taken:
                job.state = _State.skipped
                continue
            job.state = _State.running
            started = time.perf_counter()
            d = job.delivery
            if d.first == job.offset and d.attempt > self.settings.max_deliveries:
                job.sent = await self._park(job.record, d.attempt - 1)
            else:
                job.sent = await self._process(job.record)
            job.state = _State.sent
            self.pace.observe(_ms_since(started))
        await self._acknowledged([send for job in slot.jobs for send in job.sent])
        for job in slot.jobs:
            if job.state is _State.sent:
                job.state = _State.done
        if len(slot.jobs) > 1:
            log.info(
                "batch.finished",
                extra={"jobs": len(slot.jobs), "job_ms": round(self.pace.job_ms or 0.0, 2)},
            )

    async def _harvest(self) -> None:
        """Free the slots that ended and commit their partitions."""
        ended = [slot for slot in self._slots if slot.task.done()]
        if not ended:
            return
        self._slots = [slot for slot in self._slots if not slot.task.done()]
        metrics.BUSY.set(len(self._slots))
        for slot in ended:
            slot.task.result()  # a slot that raised stops the worker, as it stops any service
        if not self._slots:
            self._draining = False
        await self._commit({job.lane for slot in ended for job in slot.jobs})

    async def _acknowledged(self, sent: list[_Send]) -> None:
        """Wait for the broker's acks; what failed is sent again until it works."""
        for send in sent:
            if send.acked:
                continue
            try:
                await send.future
            except KafkaError:
                await with_retry("result.send", send.again(self.producer))
            send.acked = True

    async def _commit(self, lanes: Iterable[_Lane], what: str = "offset.commit") -> bool:
        """Commit each lane's position in one request.  One at a time, computed under the lock,
        so that an older position never lands after a newer one.  False when the group refused
        it: it rebalanced, and the jobs run again elsewhere (a duplicate the sink absorbs)."""
        async with self._commit_lock:
            owned = self.consumer.assignment()
            todo: dict[_Lane, OffsetAndMetadata] = {}
            for lane in lanes:
                if lane.jobs and lane.tp in owned and self._lanes.get(lane.tp) is lane:
                    at = lane.position()
                    if at != lane.committed:
                        todo[lane] = at
            if not todo:
                return True
            offsets = {lane.tp: at for lane, at in todo.items()}
            try:
                await with_retry(what, lambda: self.consumer.commit(offsets))
            except (CommitFailedError, IllegalStateError) as exc:
                metrics.COMMITS_LOST.inc()
                log.warning("commit.lost_partition", extra={"error": str(exc)[:300]})
                return False
            for lane, at in todo.items():
                lane.committed = at
                lane.passed(at.offset)
                if not lane.jobs:
                    del self._lanes[lane.tp]
            return True

    # -- rebalance and shutdown ------------------------------------------------------------------

    async def settle(self, partitions: set[TopicPartition]) -> None:
        """A rebalance revokes ``partitions``: start no further job of them, wait for their
        running ones (results published and acknowledged), commit, let go."""
        self._revoking |= partitions
        lanes = {lane for tp in partitions if (lane := self._lanes.get(tp)) is not None}
        if not lanes:
            return
        for lane in lanes:
            lane.cut = True
        self.consumer.pause(*(partitions & self.consumer.assignment()))
        running = {
            slot.task
            for slot in self._slots
            if any(job.lane in lanes and job.running for job in slot.jobs)
        }
        if running:
            await asyncio.wait(running)
        await self._commit(lanes)
        for lane in lanes:
            if self._lanes.get(lane.tp) is lane:
                del self._lanes[lane.tp]

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self._revoking -= partitions
        if not self.free:  # a new partition must not deliver while every slot is busy
            self.consumer.pause(*partitions)

    async def _wind_down(self) -> None:
        """SIGTERM: take no job; finish those in flight within the grace, or hand them back."""
        for lane in self._lanes.values():
            lane.cut = True
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        while self._slots:
            left = deadline - time.monotonic()
            if left <= 0:
                await self._hand_back()
                return
            self.consumer.pause(*self.consumer.assignment())
            await asyncio.wait(
                {slot.task for slot in self._slots},
                timeout=min(left, 1.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            await self._harvest()
            await self._seek_back_strays()  # still polling: heartbeats, rebalance callbacks

    async def _hand_back(self) -> None:
        """Shutdown grace spent: commit what finished, return the rest to the group uncounted
        (a job cut short is not a death: the marker goes back to what it was)."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.task.cancel()  # the engine threads run on, but nothing more is sent
        await asyncio.gather(*(slot.task for slot in slots), return_exceptions=True)
        metrics.BUSY.set(0)
        jobs = [job for slot in slots for job in slot.jobs]
        for job in jobs:
            if job.state in (_State.taken, _State.running):
                job.state = _State.skipped
        await self._acknowledged([s for job in jobs if job.state is _State.sent for s in job.sent])
        for job in jobs:
            if job.state is _State.sent:
                job.state = _State.done
        await self._commit({job.lane for job in jobs})
        metrics.HANDED_BACK.inc()
        log.warning(
            "job.handed_back",
            extra={
                "jobs": sum(job.state is _State.skipped for job in jobs),
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
