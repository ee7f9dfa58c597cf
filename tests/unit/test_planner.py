"""What one poll starts (``worker/planner.py``), branch by branch on plain data, and the
invariants the worker's lanes hold (``worker/lanes.py``).  The delivery mechanics around them
are tested on the memory broker (tests/unit/test_delivery_mechanics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Set
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.inference.worker import planner
from services.inference.worker.deliveries import Delivery
from services.inference.worker.lanes import Batch, Job, Lanes, Records, State
from services.inference.worker.planner import Plan, View

P0, P1, P2 = (TopicPartition("jobs", p) for p in range(3))
SUSPECT = Delivery(first=5, attempt=2, suspect_end=7, last=5)  # what a marker read says


def view(
    owned: Set[TopicPartition] | None = None,
    closed: Set[TopicPartition] = frozenset(),
    marked: Set[TopicPartition] = frozenset(),
    busy: bool = False,
) -> View:
    return View(
        frozenset({P0, P1, P2} if owned is None else owned),
        frozenset(closed),
        frozenset(marked),
        busy,
    )


# -- screen: before the markers are read ---------------------------------------------------------


def test_screen_refuses_closed_and_foreign_partitions_and_asks_for_unmarked_ones() -> None:
    polled = {P0: [3, 4], P1: [10], P2: [20, 21]}
    s = planner.screen(polled, view(owned={P0, P1}, closed={P1}, marked={P0}))
    assert s.keep == {P0: [3, 4]}
    assert s.seeks == {P1: 10}  # closed but ours: read again; P2 is not ours: left alone
    assert s.ask == {}  # P0 carries this worker's marker: no read

    s = planner.screen(polled, view())
    assert s.keep == polled and s.seeks == {}
    assert s.ask == {P0: (3, 4), P1: (10, 10), P2: (20, 21)}


# -- plan: after the read ------------------------------------------------------------------------


def test_without_suspects_everything_is_taken_and_dealt_round_robin() -> None:
    polled = {P0: [3, 4, 5], P1: [10, 11]}
    p = planner.plan(polled, {P1}, {}, view(marked={P0}), free=2)
    assert p.take == polled and p.seeks == {} and p.refused == frozenset()
    assert p.deliveries == {P0: Delivery.fresh(3, 5), P1: Delivery.fresh(10, 11)}
    assert p.batches == [[(P0, 3), (P0, 5), (P1, 11)], [(P0, 4), (P1, 10)]]
    assert not p.alone and not p.drain
    # fewer jobs than free slots: one batch each
    assert planner.plan({P0: [3]}, set(), {}, view(marked={P0}), free=4).batches == [[(P0, 3)]]


def test_a_suspect_range_with_batches_in_flight_drains_them_first() -> None:
    polled = {P0: [3, 4], P1: [5, 6, 7]}
    p = planner.plan(polled, {P0, P1}, {P1: SUSPECT}, view(busy=True), free=3)
    assert p.drain == {P1}
    assert p.take == {} and p.batches == [] and p.suspect is None
    assert p.seeks == {P0: 3, P1: 5}  # all of it read again once the batches ended


def test_a_suspect_job_runs_alone_and_the_rest_is_read_again() -> None:
    polled = {P0: [3, 4], P1: [5, 6, 7]}
    p = planner.plan(polled, {P0, P1}, {P1: SUSPECT}, view(), free=3)
    assert p.suspect == P1 and p.alone
    assert p.take == {P1: [5]} and p.deliveries == {P1: SUSPECT}
    assert p.batches == [[(P1, 5)]]
    assert p.seeks == {P0: 3, P1: 6}
    # a suspect range of one record: nothing of it left to read again
    p = planner.plan({P1: [5]}, {P1}, {P1: SUSPECT}, view(), free=3)
    assert p.take == {P1: [5]} and p.seeks == {}


def test_the_first_of_several_suspect_partitions_goes_first() -> None:
    other = Delivery(first=20, attempt=3, suspect_end=21, last=20)
    polled = {P1: [5, 6], P2: [20, 21]}
    p = planner.plan(polled, {P1, P2}, {P1: SUSPECT, P2: other}, view(), free=2)
    assert p.suspect == P1 and p.take == {P1: [5]} and p.seeks == {P1: 6, P2: 20}


def test_the_recheck_refuses_what_changed_during_the_read() -> None:
    polled = {P0: [3], P1: [10], P2: [20]}
    asked = {P0, P1}  # P2 was marked: this worker had jobs in flight there
    # during the read: P0 was revoked; P2 was revoked and assigned again, its lane and marker
    # gone (the marker read for it was not); P1 gained this worker's marker (no path does that
    # today: refused all the same, the marker read for it is stale)
    after = view(closed={P0}, marked={P1})
    p = planner.plan(polled, asked, {}, after, free=3)
    assert p.take == {} and p.refused == {P0, P1, P2}
    assert p.seeks == {P0: 3, P1: 10, P2: 20}
    # no longer ours: refused, and not sought (the partition's new owner reads it)
    p = planner.plan(polled, asked, {}, view(owned={P2}, marked={P2}), free=3)
    assert p.refused == {P0, P1} and p.seeks == {} and p.take == {P2: [20]}


def test_a_plan_without_free_slots_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="free"):
        planner.plan({P0: [1]}, {P0}, {}, view(), free=0)


# -- lanes: the invariants -----------------------------------------------------------------------


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"{}", None, 0, 2, ())


def records_of(polled: dict[TopicPartition, list[int]]) -> Records:
    return {tp: [record(tp, o) for o in offsets] for tp, offsets in polled.items()}


def taken(offset: int) -> Job:
    plan = Plan(take={P0: [offset]}, deliveries={P0: Delivery.fresh(offset, offset)})
    [job] = Lanes(parallel=1).take(plan, records_of({P0: [offset]}))
    return job


def test_a_job_moves_forward_only() -> None:
    job = taken(3)
    for state in (State.running, State.sent, State.done):
        job.move(state)
    with pytest.raises(AssertionError, match="done -> running"):
        job.move(State.running)
    skipped = taken(4)
    skipped.move(State.skipped)
    with pytest.raises(AssertionError, match="skipped -> running"):
        skipped.move(State.running)


def test_a_plan_made_before_a_revocation_is_not_taken() -> None:
    lanes = Lanes(parallel=2)
    polled = {P0: [3, 4]}
    p = planner.plan(polled, {P0}, {}, lanes.view({P0}), free=2)
    lanes.revoke({P0})  # what an await between the plan and the take would let happen
    with pytest.raises(AssertionError, match="being revoked"):
        lanes.take(p, records_of(polled))
    assert planner.plan(polled, {P0}, {}, lanes.view({P0}), free=2).refused == {P0}


def test_the_commit_point_never_passes_an_unfinished_job() -> None:
    lanes = Lanes(parallel=2)
    polled = {P0: [3, 4, 5]}
    p = planner.plan(polled, {P0}, {}, lanes.view({P0}), free=2)
    jobs = lanes.take(p, records_of(polled))
    lane = jobs[0].lane
    for job in jobs[1:]:  # 4 and 5 finished first
        for state in (State.running, State.sent, State.done):
            job.move(state)
    assert lane.position().offset == 3
    with pytest.raises(AssertionError, match="committed past 0@3"):
        lane.passed(5)


def test_free_slots_none_beside_a_suspect_job_or_while_draining() -> None:
    async def go() -> None:
        lanes = Lanes(parallel=3)
        gate = asyncio.Event()

        async def run(batch: Batch) -> None:
            await gate.wait()

        p = planner.plan({P1: [5, 6]}, {P1}, {P1: SUSPECT}, lanes.view({P1}), free=3)
        lanes.start(p, lanes.take(p, records_of({P1: [5, 6]})), run)
        assert lanes.free == 0 and lanes.view({P1}).busy
        gate.set()
        await asyncio.gather(*(b.task for b in lanes.batches))
        assert len(lanes.ended()) == 1 and lanes.free == 3
        p = planner.plan({P0: [1]}, {P0}, {}, lanes.view({P0, P1}), free=3)
        lanes.start(p, lanes.take(p, records_of({P0: [1]})), run)
        lanes.drain()
        assert lanes.free == 0
        await asyncio.gather(*(b.task for b in lanes.batches))
        assert lanes.ended() and not lanes.draining and lanes.free == 3

    asyncio.run(go())
