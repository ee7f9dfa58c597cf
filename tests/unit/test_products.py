"""Products: a manifest commits a folder's photos (schemas/products.py, ingest's rules)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef
from schemas.products import ProductManifest, manifest_folder, read_manifest
from services.ingest.rules import Decision, Sniff, decide_manifest, photo_folder, regroup

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
