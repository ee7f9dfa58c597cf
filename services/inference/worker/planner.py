"""What one poll starts: the decision half of taking jobs, pure (no I/O, no clock, no state).

Taking jobs needs one read from the broker in the middle: the delivery markers of the
partitions this worker has nothing of in flight (``deliveries.DeliveryCounter``).  So the worker
asks the planner twice, around that read, and does what it says (``delivery.py``):

* :func:`screen` — before the read: which partitions may not start now (revoked, being revoked,
  cut by a shutdown, or no longer ours) and are sought back to be read again, and whose markers
  must be read;
* :func:`plan` — after the read, on the worker's state *as it is then* (a rebalance callback may
  have run during the read): screens again, then chooses between draining the batches in flight
  (a suspect range found while they run), running one suspect job alone, or taking everything,
  where each partition is sought to, and how the jobs are dealt to the free engine slots.

Offsets stand for records, so every branch is tested with plain data
(``tests/unit/test_planner.py``).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from services.inference.worker.deliveries import Delivery

Offsets = dict[TopicPartition, list[int]]
"""A poll's records per partition, as their offsets in the order polled."""

Spans = dict[TopicPartition, tuple[int, int]]
"""First and last offset per partition."""

JobId = tuple[TopicPartition, int]


@dataclass(frozen=True)
class View:
    """The worker's state that decides what a poll may start, at one instant (``Lanes.view``)."""

    owned: frozenset[TopicPartition]  # assigned to this consumer now
    closed: frozenset[TopicPartition]  # being revoked, or cut (rebalance, shutdown)
    marked: frozenset[TopicPartition]  # jobs in flight here under this worker's own marker
    busy: bool  # batches in flight


@dataclass(frozen=True)
class Screen:
    """What may be planned, and what must be read first."""

    keep: Offsets
    seeks: dict[TopicPartition, int]  # refused and still ours: read again from here
    ask: Spans  # kept partitions whose markers must be read: nothing of ours in flight there


@dataclass(frozen=True)
class Plan:
    """What the worker does with one poll."""

    take: Offsets = field(default_factory=dict)  # jobs to start, per partition, in poll order
    deliveries: dict[TopicPartition, Delivery] = field(default_factory=dict)  # of each taken
    seeks: dict[TopicPartition, int] = field(default_factory=dict)  # read again from here
    refused: frozenset[TopicPartition] = frozenset()  # may not start now (see ``screen``)
    drain: frozenset[TopicPartition] = frozenset()  # suspects found: drain the batches first
    suspect: TopicPartition | None = None  # its first job runs alone, nothing beside it
    batches: list[list[JobId]] = field(default_factory=list)  # one per engine slot used

    @property
    def alone(self) -> bool:
        return self.suspect is not None


def spans(polled: Offsets) -> Spans:
    return {tp: (offsets[0], offsets[-1]) for tp, offsets in polled.items() if offsets}


def screen(polled: Offsets, view: View) -> Screen:
    """Leave out what may not start now: a partition being revoked or cut (its lane takes no new
    job), or no longer ours.  A partition with this worker's jobs in flight carries this worker's
    marker, so what follows them is a first delivery; elsewhere the marker must be read, to know
    whether a delivery died."""
    keep: Offsets = {}
    seeks: dict[TopicPartition, int] = {}
    for tp, offsets in polled.items():
        if not offsets:
            continue
        if tp in view.closed or tp not in view.owned:
            if tp in view.owned:
                seeks[tp] = offsets[0]
        else:
            keep[tp] = offsets
    ask = {tp: span for tp, span in spans(keep).items() if tp not in view.marked}
    return Screen(keep, seeks, ask)


def plan(
    polled: Offsets,
    asked: Set[TopicPartition],
    read: dict[TopicPartition, Delivery],
    view: View,
    free: int,
) -> Plan:
    """Plan a screened poll, once the markers of ``asked`` were ``read`` (a partition whose
    marker was not there has a first delivery), on the state ``view`` as it is after that read.

    The re-check: a partition closed during the read is refused, and so is one that gained or
    lost this worker's marker meanwhile (revoked and assigned again): the markers read for it
    are not the ones that count; read again next poll."""
    if free < 1:
        raise ValueError("a poll is planned for free engine slots only")
    again = screen(polled, view)
    changed = {tp for tp in again.keep if (tp in asked) == (tp in view.marked)}
    seeks = dict(again.seeks) | {tp: again.keep[tp][0] for tp in changed}
    keep = {tp: offsets for tp, offsets in again.keep.items() if tp not in changed}
    refused = frozenset(tp for tp in polled if tp not in keep)
    if not keep:
        return Plan(seeks=seeks, refused=refused)
    deliveries = {tp: read.get(tp) or Delivery.fresh(*span) for tp, span in spans(keep).items()}
    suspects = [tp for tp, d in deliveries.items() if d.suspect_end is not None]
    if suspects and view.busy:
        # A delivery from here died: finish what is in flight first (published and committed),
        # then the suspect jobs run alone, one at a time.
        seeks |= {tp: offsets[0] for tp, offsets in keep.items()}
        return Plan(seeks=seeks, refused=refused, drain=frozenset(suspects))
    suspect = suspects[0] if suspects else None
    take = {suspect: keep[suspect][:1]} if suspect is not None else keep
    for tp, offsets in keep.items():
        if tp not in take:
            seeks[tp] = offsets[0]  # not delivered now: read again next poll
        elif take[tp][-1] < offsets[-1]:
            seeks[tp] = take[tp][-1] + 1
    return Plan(
        take=take,
        deliveries={tp: deliveries[tp] for tp in take},
        seeks=seeks,
        refused=refused,
        suspect=suspect,
        batches=deal([(tp, o) for tp, offsets in take.items() for o in offsets], suspect, free),
    )


def deal(jobs: list[JobId], suspect: TopicPartition | None, free: int) -> list[list[JobId]]:
    """Round robin over the free engine slots, so the lowest offsets run first and commits move
    on; a suspect job runs alone in one."""
    slots = 1 if suspect is not None else min(free, len(jobs))
    return [jobs[i::slots] for i in range(slots)]
