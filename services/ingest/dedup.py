"""Dropping the second copy of a bucket notification.

MinIO notifies two Kafka targets (infra/dev.env): a fast one that sends at once but drops what it
cannot send, and a durable one that queues every event on disk and delivers it up to 3 s later.
Each event therefore normally arrives twice; while Kafka is down only the durable copy arrives.
Ingest remembers the events it has turned into messages and ignores a copy it has already
handled, so each upload still becomes one job.

An event counts as handled only once the batch that carried it is acknowledged and committed: a
batch that fails is read again, and its events must not look like duplicates then.  The memory is
bounded (oldest forgotten first) and lives in the process: after an ingest restart, a durable
copy of an event handled just before the restart becomes a second job — harmless (the sink keeps
the newest result of the same object version), just wasted work, and only within MinIO's few
seconds of queue delay.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


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
        for event in self._pending:
            self._handled[event] = None
        self._pending.clear()
        while len(self._handled) > self.capacity:
            self._handled.popitem(last=False)

    def abort(self) -> None:
        """The batch will be read again: its events were not handled."""
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._handled)
