"""Delivery markers: how a worker knows that the previous delivery of a job (or batch) died."""

from __future__ import annotations

from aiokafka.structs import OffsetAndMetadata

from services.inference.worker.deliveries import Delivery, Marker, format_marker, read_marker
from services.inference.worker.delivery import Pace


def test_markers_round_trip_and_older_three_field_markers_still_read() -> None:
    assert read_marker(format_marker(41, 2, 47), 41) == Marker(41, 2, 47)
    assert read_marker("inflight:41:2", 41) == Marker(41, 2, 41)  # one job per marker
    assert read_marker("inflight:41:2:47", 42) is None  # about another offset
    assert read_marker("inflight:41:2", 42) is None
    assert read_marker("", 41) is read_marker(None, 41) is read_marker("handed-back", 41) is None
    assert read_marker("inflight:x:y:z", 41) is None
    assert read_marker("inflight:x:y", 41) is None


def test_a_normal_delivery_commits_plain_offsets() -> None:
    d = Delivery(first=10, attempt=1, suspect_end=None, last=14)
    assert d.end == 14
    assert d.after(14) == OffsetAndMetadata(15, "")
    assert d.not_started() == OffsetAndMetadata(10, "")


def test_a_suspect_range_carries_one_shared_death_to_each_next_job() -> None:
    d = Delivery(first=10, attempt=2, suspect_end=13, last=10)  # alone
    assert d.end == 13  # the marker keeps the whole range suspect
    assert d.after(10) == OffsetAndMetadata(11, format_marker(11, 1, 13))
    assert d.after(13) == OffsetAndMetadata(14, "")  # past the range: batches again
    # cut before it ran: the marker goes back to what it was, this is not a death
    assert d.not_started() == OffsetAndMetadata(10, format_marker(10, 1, 13))


def test_pace_takes_one_job_until_it_knows_and_when_jobs_are_slow() -> None:
    pace = Pace(target_ms=100, most=64)
    assert pace.batch_size() == 1
    pace.observe(2.0)
    assert pace.batch_size() == 50
    for _ in range(20):
        pace.observe(3000.0)  # a real model on a CPU
    assert pace.batch_size() == 1
    assert Pace(target_ms=100, most=1).batch_size() == 1
