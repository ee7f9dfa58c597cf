"""The second copy of a notification (MinIO's durable target) is dropped, never the first."""

from __future__ import annotations

from services.ingest.dedup import RecentEvents


def test_second_copy_is_a_repeat_once_its_batch_committed() -> None:
    recent = RecentEvents(10)
    assert recent.first_time(("put", "a.jpg", "01"))
    recent.commit()
    assert not recent.first_time(("put", "a.jpg", "01"))
    assert recent.first_time(("put", "a.jpg", "02"))  # a new version of the object is new


def test_copies_inside_one_batch_are_repeats() -> None:
    recent = RecentEvents(10)
    assert recent.first_time("e1")
    assert not recent.first_time("e1")


def test_an_aborted_batch_is_handled_again_when_reread() -> None:
    recent = RecentEvents(10)
    assert recent.first_time("e1")
    recent.abort()  # the batch failed and will be read again: e1 must not be dropped then
    assert recent.first_time("e1")


def test_memory_is_bounded_oldest_first() -> None:
    recent = RecentEvents(3)
    for event in ("e1", "e2", "e3", "e4"):
        recent.first_time(event)
    recent.commit()
    assert len(recent) == 3
    assert recent.first_time("e1")  # forgotten
    assert not recent.first_time("e4")
