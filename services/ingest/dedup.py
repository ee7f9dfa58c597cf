"""Dropping the second copy of a bucket notification.

MinIO notifies two Kafka targets (infra/dev.env): a fast one that sends at once but drops what it
cannot send, and a durable one that queues every event on disk and delivers it up to 3 s later.
Each event therefore normally arrives twice; while Kafka is down only the durable copy arrives.
Ingest remembers the events it has turned into messages and ignores a copy it has already
handled, so each upload still becomes one job.

An event counts as handled only once the batch that carried it is acknowledged and committed: a
batch that fails is read again, and its events must not look like duplicates then.  The memory is
bounded (oldest forgotten first) and lives in the process; a new process starts by recalling
the events its predecessor handled last from the events topic itself (services/ingest/recall.py),
so a durable copy that arrives across a restart is dropped too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

from schemas.messages import S3Record


def event_identity(record: S3Record) -> Hashable:
    """What makes two notifications copies of one event: the same kind of event on the same
    object version, at the same point in the object's history (MinIO's sequencer)."""
    o = record.s3.object
    return (record.event_name, o.key, o.sequencer, o.version_id)


class RecentEvents:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._handled: OrderedDict[Hashable, None] = OrderedDict()
        self._pending: dict[Hashable, None] = {}  # in arrival order, so oldest goes first

    def first_time(self, event: Hashable) -> bool:
        """True for the first copy of ``event`` (handled or pending), False for a repeat."""
        if event in self._handled or event in self._pending:
            return False
        self._pending[event] = None
        return True

    def commit(self) -> None:
        """The batch's messages are acknowledged and its offsets committed."""
        self.remember(self._pending)
        self._pending.clear()

    def remember(self, events: Iterable[Hashable]) -> int:
        """Count ``events`` as handled (this process's committed batch, or an earlier process's
        events); returns how many were new. The oldest are forgotten past ``capacity``."""
        before = len(self._handled)
        for event in events:
            self._handled[event] = None
            self._handled.move_to_end(event)
        added = len(self._handled) - before
        while len(self._handled) > self.capacity:
            self._handled.popitem(last=False)
        return added

    def abort(self) -> None:
        """The batch will be read again: its events were not handled."""
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._handled)
