"""Products: a manifest commits a folder's photos (schemas/products.py, ingest's rules)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from minio.datatypes import Object
from minio.error import S3Error

from schemas.messages import CardResult, CardStatus, ImageJob, MinioEvent, ObjectRef, S3Record
from schemas.products import ProductManifest, manifest_folder, read_manifest
from services.ingest.rules import (
    Decision,
    Listed,
    Sniff,
    decide,
    decide_manifest,
    decide_released,
    decide_upload,
    photo_folder,
    regroup,
)
from services.ingest.service import Ingest
from services.ingest.settings import IngestSettings
from services.runtime.stage import Item

REF = ObjectRef(
    bucket="incoming",
    key="shop-42/123/product.json",
    size=100,
    sequencer="17A",
    event_time=datetime(2026, 12, 7, tzinfo=UTC),
)
SNIFF = Sniff(REF, uuid.uuid4(), "0" * 32, "manifest")


def manifest(**document: object) -> bytes:
    return json.dumps(document).encode()


def test_only_product_json_is_a_manifest_and_it_commits_its_folder() -> None:
    assert manifest_folder("shop-42/123/product.json") == "shop-42/123/"
    assert manifest_folder("product.json") == ""
    assert manifest_folder("shop-42/123/product.json.bak") is None
    assert manifest_folder("shop-42/123/my-product.json") is None


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"{not json", "not JSON"),
        (manifest(photos=[]), "photos"),
        (manifest(photos=["../x.jpg"]), "not a photo name"),
        (manifest(photos=["a/b.jpg"]), "not a photo name"),
        (manifest(photos=["a.jpg", "a.jpg"]), "named twice"),
        (manifest(photos=["a.jpg"], main="b.jpg"), "not one of the photos"),
        (manifest(photos=["a.jpg"], extra=1), "extra"),
        (b" " * 70_000, "over 65536 bytes"),
    ],
)
def test_a_bad_manifest_says_why(document: bytes, problem: str) -> None:
    found, why = read_manifest(document)
    assert found is None and why is not None and problem.lower() in why.lower()


def test_a_manifest_queues_the_product_and_groups_its_photos() -> None:
    data = manifest(
        photos=["front.jpg", "back.jpg"], main="back.jpg", facts={"sku": "123", "brand": "B"}
    )
    decision = decide_manifest(SNIFF, data, max_photos=6)
    assert decision.job is not None and decision.job.product is not None
    assert decision.job.product.photos == ["shop-42/123/front.jpg", "shop-42/123/back.jpg"]
    assert decision.job.product.main == 1
    assert decision.job.facts is not None and decision.job.facts.facts.sku == "123"
    assert decision.result is not None and decision.result.status is CardStatus.queued
    assert decision.result.product == decision.job.product
    grouped = {r.object.key: r for r in decision.others}
    assert set(grouped) == {"shop-42/123/front.jpg", "shop-42/123/back.jpg"}
    for result in grouped.values():
        assert result.status is CardStatus.grouped and result.status.final
        assert result.detail == "part of product shop-42/123/product.json"
        assert result.object.sequencer == REF.sequencer  # newer than the photos' own events


def test_too_many_photos_or_a_bad_one_is_a_rejected_manifest() -> None:
    many = decide_manifest(SNIFF, manifest(photos=[f"{i}.jpg" for i in range(7)]), max_photos=6)
    assert many.job is None and many.result is not None
    assert (many.result.status, many.result.reason) == (CardStatus.rejected, "bad_manifest")
    assert "VITRINE_PRODUCT_MAX_PHOTOS" in (many.result.detail or "")
    assert many.others == ()
    control = decide_manifest(SNIFF, manifest(photos=["a\u202eb.jpg"]), max_photos=6)
    assert control.result is not None and control.result.reason == "bad_manifest"


def photo_event(key: str, at: datetime, *, deleted: bool = False) -> tuple[ObjectRef, Decision]:
    ref = ObjectRef(
        bucket="incoming",
        key=key,
        size=10,
        sequencer=format(int(at.timestamp()), "X"),
        event_time=at,
    )
    job_id = uuid.uuid4()
    if deleted:
        removed = CardResult(
            job_id=job_id,
            trace_id="1" * 32,
            object=ref,
            status=CardStatus.deleted,
            producer="ingest",
        )
        return ref, Decision(None, removed)
    return ref, Decision(ImageJob(job_id=job_id, trace_id="1" * 32, object=ref), None)


MANIFEST = ProductManifest(photos=["front.jpg", "back.jpg"], main="back.jpg", facts={"sku": "9"})
WRITTEN = datetime(2026, 12, 7, 10, tzinfo=UTC)


def test_a_photo_replaced_after_its_product_was_committed_makes_the_product_again() -> None:
    ref, decision = photo_event("shop-42/123/front.jpg", datetime(2026, 12, 7, 11, tzinfo=UTC))
    again = regroup(decision, ref, "shop-42/123/product.json", MANIFEST, WRITTEN)
    assert again.job is not None and again.job.object.key == "shop-42/123/product.json"
    assert again.job.object.sequencer == ref.sequencer  # newer than the product's row
    assert again.job.product is not None
    assert again.job.product.photos == ["shop-42/123/front.jpg", "shop-42/123/back.jpg"]
    assert again.job.facts is not None and again.job.facts.facts.sku == "9"
    assert again.result is not None and again.result.status is CardStatus.queued
    [grouped] = again.others
    assert grouped.object.key == ref.key and grouped.status is CardStatus.grouped


def test_a_photo_deleted_from_a_committed_product_leaves_it_and_the_last_one_fails_it() -> None:
    later = datetime(2026, 12, 7, 11, tzinfo=UTC)
    ref, decision = photo_event("shop-42/123/back.jpg", later, deleted=True)
    again = regroup(decision, ref, "shop-42/123/product.json", MANIFEST, WRITTEN)
    assert again.job is not None and again.job.product is not None
    assert again.job.product.photos == ["shop-42/123/front.jpg"] and again.job.product.main == 0
    assert [o.status for o in again.others] == [CardStatus.deleted]  # the photo's own row
    alone = ProductManifest(photos=["back.jpg"])
    gone = regroup(decision, ref, "shop-42/123/product.json", alone, WRITTEN)
    assert gone.job is None and gone.result is not None
    assert (gone.result.status, gone.result.reason) == (CardStatus.failed, "product_incomplete")


def test_a_photo_older_than_its_manifest_is_only_grouped_and_makes_no_card() -> None:
    ref, decision = photo_event("shop-42/123/front.jpg", datetime(2026, 12, 7, 9, tzinfo=UTC))
    grouped = regroup(decision, ref, "shop-42/123/product.json", MANIFEST, WRITTEN)
    assert grouped.job is None and grouped.result is None
    assert [o.status for o in grouped.others] == [CardStatus.grouped]
    assert photo_folder("shop-42/123/front.jpg") == "shop-42/123/"
    assert photo_folder("front.jpg") is None and photo_folder("a/product.json") is None


# -- a manifest removed: its photos go back to cards of their own -------------------------------

REMOVED = ObjectRef(
    bucket="incoming",
    key="shop-42/123/product.json",
    sequencer="17F0",
    event_time=datetime(2026, 12, 8, tzinfo=UTC),
)


def removal(key: str) -> S3Record:
    return S3Record.model_validate(
        {
            "eventName": "s3:ObjectRemoved:Delete",
            "eventTime": "2026-12-08T00:00:00Z",
            "s3": {"bucket": {"name": "incoming"}, "object": {"key": key, "sequencer": "17F0"}},
        }
    )


def test_only_a_removed_manifest_releases_its_folder() -> None:
    gone = decide(removal("shop-42/123/product.json"), 10_000)
    assert gone.result is not None and gone.result.status is CardStatus.deleted
    assert gone.job is None and gone.released == gone.result.object
    assert decide(removal("shop-42/123/front.jpg"), 10_000).released is None
    assert decide(removal("shop-42/..%2Fproduct.json"), 10_000).released is None  # bad key


def test_a_removed_manifests_photos_are_decided_as_uploads_with_its_sequencer() -> None:
    listed = [
        Listed("shop-42/123/", 0),  # a folder marker
        Listed("shop-42/123/back", 900, "e2", "binary/octet-stream"),  # only its bytes can tell
        Listed("shop-42/123/empty.jpg", 0, "e0", "image/jpeg"),
        Listed("shop-42/123/front.jpg", 900, "e1", "image/jpeg", {"X-Amz-Meta-Sku": "123"}),
        Listed("shop-42/123/huge.png", 20_000, "e3", "image/png"),
        Listed("shop-42/123/notes.txt", 10, "e4", "text/plain"),
        Listed("shop-42/123/product.json", 50, "e5", "application/json"),  # uploaded again
        Listed("shop-42/123/sub/", None),  # a sub-folder
        Listed("shop-42/123/x\u202eb.jpg", 900, "e6", "image/jpeg"),  # breaks the key rule
        Listed("shop-42/124/other.jpg", 900, "e7", "image/jpeg"),  # not this folder
    ]
    decided = decide_released(REMOVED, listed, max_bytes=10_000)
    assert len(decided) == 4
    sniff, front, huge, notes = decided
    assert sniff.sniff is not None and sniff.result is None and sniff.job is None
    assert sniff.sniff.ref.key == "shop-42/123/back"
    assert front.job is not None and front.result is not None
    assert front.result.status is CardStatus.queued and front.job.product is None
    assert front.job.facts is not None and front.job.facts.facts.sku == "123"
    ref = front.job.object
    assert (ref.key, ref.size, ref.etag, ref.content_type) == (
        "shop-42/123/front.jpg",
        900,
        "e1",
        "image/jpeg",
    )
    # newer than the manifest's upload, whose sequencer the grouped row carries
    assert (ref.sequencer, ref.event_time) == (REMOVED.sequencer, REMOVED.event_time)
    assert front.job.job_id == ImageJob.job_id_for(ref)  # a replay makes the same job
    assert huge.result is not None and huge.result.reason == "image_too_large"
    assert notes.result is not None and notes.result.reason == "not_an_image"
    # the same decision an upload of the photo gets (only the trace differs)
    upload = decide_upload(ref, front.job.facts, 10_000)
    assert upload.job is not None and upload.job.model_dump(
        exclude={"trace_id", "enqueued_at"}
    ) == front.job.model_dump(exclude={"trace_id", "enqueued_at"})


def test_a_manifest_at_the_buckets_root_releases_the_roots_photos() -> None:
    root = REMOVED.model_copy(update={"key": "product.json"})
    decided = decide_released(root, [Listed("a.jpg", 9, None, "image/jpeg")], max_bytes=10)
    assert [d.job.object.key for d in decided if d.job] == ["a.jpg"]


class ListingMinio:
    """``list_objects`` (and the folder-manifest read, nothing there) as the minio client does
    them, or a refused listing."""

    def __init__(self, objects: list[Object], refuse: bool = False) -> None:
        self.objects, self.refuse = objects, refuse
        self.listed: list[dict[str, Any]] = []

    def list_objects(self, bucket: str, **kwargs: Any) -> list[Object]:
        self.listed.append({"bucket": bucket, **kwargs})
        if self.refuse:
            raise S3Error(None, "AccessDenied", "denied", "/", "r", "h")  # type: ignore[arg-type]
        return self.objects

    def get_object(self, bucket: str, key: str, **kwargs: Any) -> Any:
        raise S3Error(None, "NoSuchKey", "none", "/", "r", "h")  # type: ignore[arg-type]


def removal_batch() -> list[Item[MinioEvent]]:
    event = {
        "Records": [removal("shop-42/123/product.json").model_dump(by_alias=True, mode="json")]
    }
    value = json.dumps(event).encode()
    record = ConsumerRecord("minio.events", 0, 0, 0, 0, b"k", value, None, 1, len(value), ())
    return [Item(record, MinioEvent.model_validate_json(value))]


def test_the_stage_lists_the_folder_once_and_queues_each_photo_after_the_removal() -> None:
    meta = {"content-type": "image/jpeg", "X-Amz-Meta-Brand": "Tramontina"}
    minio = ListingMinio(
        [
            Object("incoming", "shop-42/123/a.jpg", size=900, etag="e1", metadata=meta),
            Object("incoming", "shop-42/123/b.jpg", size=800, etag="e2", metadata=meta),
            Object("incoming", "shop-42/123/sub/"),
        ]
    )
    stage = Ingest(IngestSettings(bucket="incoming"), minio=minio)  # type: ignore[arg-type]
    outputs = asyncio.run(stage.handle(removal_batch()))
    assert minio.listed == [
        {"bucket": "incoming", "prefix": "shop-42/123/", "include_user_meta": True}
    ]
    results = [
        CardResult.model_validate_json(o.value or b"") for o in outputs if "results" in o.topic
    ]
    assert [(r.object.key, r.status) for r in results] == [
        ("shop-42/123/product.json", CardStatus.deleted),
        ("shop-42/123/a.jpg", CardStatus.queued),
        ("shop-42/123/b.jpg", CardStatus.queued),
    ]
    jobs = [ImageJob.model_validate_json(o.value or b"") for o in outputs if "jobs" in o.topic]
    assert [j.object.key for j in jobs] == ["shop-42/123/a.jpg", "shop-42/123/b.jpg"]
    assert all(j.object.sequencer == "17F0" and j.object.content_type == "image/jpeg" for j in jobs)
    assert all(j.facts is not None and j.facts.facts.brand == "Tramontina" for j in jobs)


def test_a_refused_listing_leaves_the_removal_alone() -> None:
    minio = ListingMinio([], refuse=True)
    stage = Ingest(IngestSettings(bucket="incoming"), minio=minio)  # type: ignore[arg-type]
    outputs = asyncio.run(stage.handle(removal_batch()))
    results = [CardResult.model_validate_json(o.value or b"") for o in outputs]
    assert [(r.object.key, r.status) for r in results] == [
        ("shop-42/123/product.json", CardStatus.deleted)
    ]
    assert len(minio.listed) == 1  # refused for good: not retried


def test_a_photo_in_its_manifest_s_second_counts_as_before_it() -> None:
    """Last-Modified has whole seconds: a photo uploaded 0.4 s before its manifest, in the
    same second, must not make the product again (it did, once per photo)."""
    written = datetime(2026, 12, 7, 10, 0, 5, tzinfo=UTC)  # the manifest at 10:00:05.7
    ref, decision = photo_event("shop-42/123/front.jpg", written.replace(microsecond=300_000))
    same = regroup(decision, ref, "shop-42/123/product.json", MANIFEST, written)
    assert same.job is None and [o.status for o in same.others] == [CardStatus.grouped]
    ref, decision = photo_event(
        "shop-42/123/front.jpg", datetime(2026, 12, 7, 10, 0, 6, tzinfo=UTC)
    )
    assert regroup(decision, ref, "shop-42/123/product.json", MANIFEST, written).job is not None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deep"),
        (b'{"photos": ["a.jpg"], "facts": {"\\ud800": "x"}}', "lone surrogate"),
        (b"  \n", "empty"),
    ],
    ids=["nested", "surrogate", "blank"],
)
def test_json_a_reader_cannot_take_is_a_problem_not_an_exception(data: bytes, problem: str) -> None:
    manifest_, found = read_manifest(data)
    assert manifest_ is None and found is not None and problem in found


def test_a_byte_order_mark_is_utf8_all_the_same_and_an_empty_manifest_is_empty() -> None:
    assert read_manifest(b"\xef\xbb\xbf" + manifest(photos=["a.jpg"]))[0] is not None
    empty = decide_manifest(SNIFF, b"", 6)
    assert empty.result is not None and empty.job is None
    assert (empty.result.status, empty.result.reason) == (CardStatus.rejected, "empty_object")
