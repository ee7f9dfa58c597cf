"""The second copy of a notification (MinIO's durable target) is dropped, never the first."""

from __future__ import annotations

import asyncio
import json
import logging

from schemas.messages import S3Record
from services.ingest.dedup import RecentEvents, event_identity
from services.ingest.recall import identities, try_recall_handled
from services.runtime.settings import KafkaSettings


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


def test_remembered_events_are_repeats_and_stay_bounded() -> None:
    recent = RecentEvents(3)
    assert recent.remember(["e1", "e2", "e2"]) == 2
    assert not recent.first_time("e1")  # handled by the previous process
    recent.abort()
    assert recent.remember(["e3", "e4", "e5"]) == 3
    assert len(recent) == 3
    assert recent.first_time("e1")  # the oldest went first


def test_identity_is_the_event_on_one_object_version() -> None:
    def record(sequencer: str, name: str = "s3:ObjectCreated:Put") -> S3Record:
        return S3Record.model_validate(
            {
                "eventName": name,
                "eventTime": "2026-11-26T12:00:00Z",
                "s3": {
                    "bucket": {"name": "incoming"},
                    "object": {"key": "a.jpg", "size": 10, "sequencer": sequencer},
                },
            }
        )

    assert event_identity(record("01")) == event_identity(record("01"))
    assert event_identity(record("01")) != event_identity(record("02"))
    assert event_identity(record("01")) != event_identity(record("01", "s3:ObjectRemoved:Delete"))


def test_recall_reads_only_the_bucket_it_serves() -> None:
    event = {
        "EventName": "s3:ObjectCreated:Put",
        "Records": [
            {
                "eventName": "s3:ObjectCreated:Put",
                "eventTime": "2026-11-26T12:00:00Z",
                "s3": {"bucket": {"name": b}, "object": o},
            }
            for b, o in (
                ("incoming", {"key": "a.jpg", "size": 1, "sequencer": "01"}),
                ("other", {"key": "b.jpg", "size": 1, "sequencer": "02"}),
            )
        ],
    }
    found = list(identities(json.dumps(event).encode(), "incoming"))
    assert found == [("s3:ObjectCreated:Put", "a.jpg", "01", None)]
    assert list(identities(b"not json", "incoming")) == []
    assert list(identities(None, "incoming")) == []


def test_recall_that_cannot_reach_kafka_starts_with_an_empty_memory(caplog) -> None:
    class Producer:  # knows the partitions; the broker behind the settings is not there
        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1}

    settings = KafkaSettings(kafka_bootstrap="127.0.0.1:1")
    recent = RecentEvents(10)
    with caplog.at_level(logging.WARNING, logger="vitrine.ingest"):
        got = asyncio.run(
            try_recall_handled(settings, Producer(), "g", "incoming", 60, recent)  # type: ignore[arg-type]
        )
    assert got == 0 and len(recent) == 0
    assert [r.msg for r in caplog.records if r.name == "vitrine.ingest"] == ["ingest.recall_failed"]
