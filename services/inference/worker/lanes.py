"""The worker's jobs in flight, in one object that owns them and checks its invariants.

Three kinds of coroutine change this state: the poll loop (takes jobs, starts batches, harvests
the batches that ended, commits), each batch (moves its own jobs from taken to done), and the
rebalance callback (cuts the partitions it revokes and lets them go after its commit).  Each
change is a method here, and what must always hold is asserted where it could break:

* a job moves forward only (``taken → running → sent → done``, or ``skipped`` before it sent
  anything), and is in one lane and at most one batch;
* a partition being revoked or cut takes no new job — the poll loop plans on a :class:`View`,
  awaits the markers, and plans again on a fresh view; :meth:`Lanes.take` asserts the plan it is
  given still holds;
* the commit point never passes an unfinished job (:meth:`Lane.passed`);
* a batch's jobs belong to lanes that exist, or to lanes cut and let go (their jobs are skipped).

Words: a *lane* is one partition's jobs taken and not yet committed past; a *batch* is the jobs
one engine slot runs one after the other; a *delivery* (``deliveries.py``) is one Kafka delivery
of a range of jobs, as the markers count them.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from services.inference.worker.deliveries import Delivery, position
from services.inference.worker.planner import Plan, View

Records = dict[TopicPartition, list[ConsumerRecord[Any, Any]]]


@dataclass
class Send:
    """A message handed to the producer, and whether the broker acknowledged it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: asyncio.Future[Any]
    acked: bool = False
    acking: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while one waiter acknowledges it: a revocation and its batch may both wait for it,
    and a failed one must be sent again once, not by each."""

    def again(self, producer: AIOKafkaProducer) -> Callable[[], Awaitable[Any]]:
        return lambda: producer.send_and_wait(
            self.topic, key=self.key, value=self.value, headers=self.headers
        )


class State(enum.Enum):
    taken = "taken"  # waiting in its batch
    running = "running"
    sent = "sent"  # result handed to the producer, not yet acknowledged
    done = "done"  # result acknowledged: its offset may be committed past
    skipped = "skipped"  # never started here (cut by a rebalance or a shutdown, handed back)


_FORWARD = {
    State.taken: {State.running, State.skipped},
    State.running: {State.sent, State.skipped},
    State.sent: {State.done},
    State.done: set(),
    State.skipped: set(),
}


@dataclass(eq=False)
class Job:
    lane: Lane
    record: ConsumerRecord[Any, Any]
    delivery: Delivery  # the Kafka delivery of its partition's range that brought it
    state: State = State.taken
    sent: list[Send] = field(default_factory=list)
    left_running: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once its result is handed to the producer, or it was skipped (a revocation waits)."""

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def running(self) -> bool:
        return self.state in (State.running, State.sent)

    def move(self, to: State) -> None:
        """Forward only: a job that went back could be committed past twice, or never."""
        assert to in _FORWARD[self.state], (
            f"job {self.lane.tp.partition}@{self.offset}: {self.state.value} -> {to.value}"
        )
        self.state = to
        if to is not State.running:
            self.left_running.set()


@dataclass(eq=False)
class Lane:
    """A partition's jobs taken by this worker and not yet committed past."""

    tp: TopicPartition
    jobs: dict[int, Job] = field(default_factory=dict)
    cut: bool = False  # revoked or shutting down: start no further job of it
    committed: OffsetAndMetadata | None = None  # what this worker last committed for it

    def position(self) -> OffsetAndMetadata:
        jobs = self.jobs.values()
        return position(
            {j.offset: j.delivery for j in jobs},
            done={j.offset for j in jobs if j.state is State.done},
            dropped={
                j.offset
                for j in jobs
                if j.state is State.skipped or (j.state is State.taken and self.cut)
            },
        )

    def passed(self, offset: int) -> None:
        """Forget the jobs before ``offset``: it is committed, past finished jobs only."""
        for o in [o for o in self.jobs if o < offset]:
            assert self.jobs[o].state is State.done, f"committed past {self.tp.partition}@{o}"
            del self.jobs[o]


@dataclass(eq=False)
class Batch:
    """Jobs of one poll that one engine slot runs one after the other."""

    jobs: list[Job]
    alone: bool  # a suspect job: nothing else runs beside it
    task: asyncio.Task[None] = field(init=False)


class Lanes:
    """Lanes per partition, the batches in flight, and the partitions being revoked."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel  # engine slots: batches in flight at most
        self._lanes: dict[TopicPartition, Lane] = {}
        self.batches: list[Batch] = []
        self.draining = False  # a suspect range waits for the batches in flight to end
        self.revoking: set[TopicPartition] = set()

    @property
    def free(self) -> int:
        """Engine slots that may take jobs now: none while a suspect job runs alone, or while
        the batches in flight drain before one."""
        if any(batch.alone for batch in self.batches) or (self.draining and self.batches):
            return 0
        return self.parallel - len(self.batches)

    def view(self, owned: set[TopicPartition]) -> View:
        return View(
            owned=frozenset(owned),
            closed=frozenset(self.revoking | {tp for tp, lane in self._lanes.items() if lane.cut}),
            marked=frozenset(tp for tp, lane in self._lanes.items() if lane.committed is not None),
            busy=bool(self.batches),
        )

    # -- the poll loop -------------------------------------------------------------------------

    def drain(self) -> None:
        self.draining = True

    def take(self, plan: Plan, records: Records) -> list[Job]:
        """Put the plan's jobs in their lanes.  The plan was made on a view of this state with
        no await since, so it still holds: asserted, not assumed."""
        jobs: list[Job] = []
        for tp, offsets in plan.take.items():
            assert tp not in self.revoking, f"partition {tp.partition} is being revoked"
            lane = self._lanes.setdefault(tp, Lane(tp))
            assert not lane.cut, f"partition {tp.partition} is cut"
            by_offset = {record.offset: record for record in records[tp]}
            for offset in offsets:
                # again only after a refused begin commit skipped it and sought back to it
                was = lane.jobs.get(offset)
                assert was is None or was.state is State.skipped, f"{tp.partition}@{offset} twice"
                job = Job(lane, by_offset[offset], plan.deliveries[tp])
                lane.jobs[offset] = job
                jobs.append(job)
        return jobs

    def unbegun(self, jobs: Iterable[Job]) -> None:
        """Their begin commit was refused: none of them starts here."""
        for job in jobs:
            job.move(State.skipped)

    def start(
        self, plan: Plan, jobs: list[Job], run: Callable[[Batch], Coroutine[Any, Any, None]]
    ) -> None:
        """Start the plan's batches of ``jobs`` (just taken), one task each."""
        by_id = {(job.lane.tp, job.offset): job for job in jobs}
        for ids in plan.batches:
            batch = Batch([by_id.pop(i) for i in ids], plan.alone)
            for job in batch.jobs:  # a rebalance during the begin commit may have let one go
                assert self._lanes.get(job.lane.tp) is job.lane or job.lane.cut
            batch.task = asyncio.create_task(run(batch))
            self.batches.append(batch)
        assert not by_id, "every job taken is in a batch"

    def ended(self) -> list[Batch]:
        """Take out the batches that ended; the draining is over once none is left."""
        ended = [batch for batch in self.batches if batch.task.done()]
        self.batches = [batch for batch in self.batches if not batch.task.done()]
        if not self.batches:
            self.draining = False
        return ended

    def positions(
        self, lanes: Iterable[Lane], owned: set[TopicPartition]
    ) -> dict[Lane, OffsetAndMetadata]:
        """What to commit: each lane's position where it moved, for the lanes still held."""
        todo: dict[Lane, OffsetAndMetadata] = {}
        for lane in lanes:
            if lane.jobs and lane.tp in owned and self._lanes.get(lane.tp) is lane:
                at = lane.position()
                if at != lane.committed:
                    todo[lane] = at
        return todo

    def committed(self, todo: dict[Lane, OffsetAndMetadata]) -> None:
        """``todo`` was committed: forget the jobs passed, and the lanes with none left."""
        for lane, at in todo.items():
            lane.committed = at
            lane.passed(at.offset)
            if not lane.jobs:
                # only a commit (under the worker's commit lock) lets a lane go: still this one
                assert self._lanes.get(lane.tp) is lane
                del self._lanes[lane.tp]

    # -- rebalance and shutdown ----------------------------------------------------------------

    def revoke(self, partitions: set[TopicPartition]) -> set[Lane]:
        """Start no further job of ``partitions``; their lanes, cut."""
        self.revoking |= partitions
        lanes = {lane for tp in partitions if (lane := self._lanes.get(tp)) is not None}
        for lane in lanes:
            lane.cut = True
        return lanes

    def running_in(self, lanes: set[Lane]) -> list[tuple[Job, asyncio.Task[None]]]:
        """The jobs of ``lanes`` running now (at most one per batch), each with its batch's
        task.  Not the batches' other jobs: those of ``lanes`` are skipped when their turn
        comes (the lanes are cut), and the others belong to partitions that stay here."""
        return [
            (job, batch.task)
            for batch in self.batches
            for job in batch.jobs
            if job.lane in lanes and job.running
        ]

    def let_go(self, lanes: Iterable[Lane]) -> None:
        for lane in lanes:
            assert lane.cut, f"partition {lane.tp.partition} let go uncut"
            if self._lanes.get(lane.tp) is lane:
                del self._lanes[lane.tp]

    def assigned(self, partitions: set[TopicPartition]) -> None:
        self.revoking -= partitions

    def cut_all(self) -> None:
        for lane in self._lanes.values():
            lane.cut = True

    def hand_back(self) -> list[Batch]:
        """Shutdown grace spent: every batch, taken out (the caller cancels them)."""
        batches, self.batches = self.batches, []
        return batches
