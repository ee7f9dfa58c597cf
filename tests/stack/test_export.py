"""The export stage against the real stack: cards approved on the desk become the three channels'
feeds in the exports bucket; each file parses with a standard reader and passes its channel's
validator; a card that breaks one channel's rule is left out of that feed only, with the rule;
a card rejected after its approval leaves the feeds; a malformed approval is parked."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.facts import GivenFacts, ProductFacts
from schemas.messages import ObjectRef
from schemas.products import ProductSpec
from services.export.channels import CHANNELS
from tests.support.card_text import FEATURES
from tests.support.pipeline import READER_DSN, Service, ensure_stack, remove_bucket, s3_client
from tests.support.review_desk import T0, Desk, card, iter_desk, photo, result, upsert

pytestmark = pytest.mark.pipeline

LONG_FEATURE = "Alça ergonômica " + "e confortável " * 10  # 156 characters: GMC keeps ≤ 150
FEEDS = {"gmc": "gmc/full.tsv", "shopify": "shopify/full.csv", "jsonld": "jsonld/full.jsonld"}


@dataclass
class Export:
    desk: Desk
    service: Service
    bucket: str  # the exports bucket of this test

    def get(self, name: str) -> bytes | None:
        s3 = s3_client(self.desk.ns.env)
        try:
            return bytes(s3.get_object(Bucket=self.bucket, Key=name)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    def names(self, prefix: str = "") -> list[str]:
        s3 = s3_client(self.desk.ns.env)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def manifest(self) -> dict[str, Any]:
        body = self.get("manifest.json")
        return json.loads(body) if body else {}

    def wait_for_review(self, review_id: int, timeout: float = 90) -> dict[str, Any]:
        """The manifest once a write has seen the approval ``review_id`` (bounded poll)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.manifest()
            if (last.get("last_review_id") or 0) >= review_id:
                return last
            assert self.service.proc is not None and self.service.proc.poll() is None, (
                "the export stage exited:\n" + "\n".join(self.service.lines()[-20:])
            )
            time.sleep(0.5)
        raise AssertionError(f"no feeds written for review {review_id} in {timeout}s: {last}")


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    ensure_stack()
    yield from iter_desk(tmp_path_factory.mktemp("export-desk"))


@pytest.fixture
def export(desk: Desk, tmp_path: Path) -> Iterator[Export]:
    """The stage as a subprocess, on the desk's approved topic and bucket, writing into an
    exports bucket of its own (root MinIO user: the vitrine-export user's policy names the
    deployment's exports bucket, not a test's; PostgreSQL as the read-only reader role)."""
    bucket = f"exports-{desk.ns.name}-{uuid.uuid4().hex[:6]}"
    s3_client(desk.ns.env).create_bucket(Bucket=bucket)
    env = {
        **desk.ns.env,
        "VITRINE_PG_DSN": READER_DSN,
        "VITRINE_TOPIC_APPROVED": desk.approved_topic,
        "VITRINE_EXPORTS_BUCKET": bucket,
        "VITRINE_EXPORT_GROUP": f"{desk.ns.name}-export-{uuid.uuid4().hex[:6]}",
        "VITRINE_EXPORT_WAIT_MS": "500",
        "VITRINE_SHOP_PRODUCT_URL": "https://loja.example/p/{sku}",
        "VITRINE_SHOP_IMAGE_URL": "https://cdn.loja.example/{bucket}/{key}",
    }
    service = Service("export", "services.export", env, tmp_path / "export.log").start()
    try:
        service.wait_started(120)
        yield Export(desk, service, bucket)
    finally:
        service.stop(30)
        remove_bucket(desk.ns.env, bucket)


def facts(sku: str) -> GivenFacts:
    return GivenFacts(
        facts=ProductFacts(sku=sku, brand="Tok", price="129.90", availability="in_stock")
    )


def seed(desk: Desk, key: str, sku: str, **fields: Any) -> ObjectRef:
    values = card(f"Garrafa térmica Tok {sku}", sku=sku, brand="Tok", **fields)
    return desk.seed(key, values, facts=facts(sku))


def seed_product(desk: Desk, folder: str, sku: str) -> tuple[ObjectRef, list[str]]:
    """A product of three photos (its row is the manifest's; the second photo is the main)."""
    photos = [f"{folder}/{n}.jpg" for n in ("lado", "frente", "verso")]
    for i, key in enumerate(photos):
        desk.put_photo(key, photo((30 + 40 * i, 60, 200)))
    manifest = f"{folder}/product.json"
    body = json.dumps({"photos": photos, "main": 1}).encode()
    s3_client(desk.ns.env).put_object(Bucket=desk.bucket, Key=manifest, Body=body)
    ref = ObjectRef(
        bucket=desk.bucket,
        key=manifest,
        etag="0" * 32,
        size=len(body),
        content_type="application/json",
        sequencer=format(time.time_ns(), "X"),
        event_time=T0,
    )
    values = card(f"Garrafa térmica Tok {sku}", sku=sku, brand="Tok")
    done = result(ref, values, facts=facts(sku)).model_copy(
        update={"product": ProductSpec(photos=photos, main=1)}
    )
    upsert([done])
    return ref, photos


def approve(desk: Desk, *refs: ObjectRef) -> int:
    """Approve through the desk's API as a reviewer; the last approval's review id."""
    last = 0
    with desk.api("reviewer") as api:
        for ref in refs:
            answer = api.post(f"/v1/cards/{desk.bucket}/{ref.key}/approve", json={})
            assert answer.status_code == 200, answer.text
    for ref in refs:
        ids = [r["id"] for r in desk.reviews(ref.key) if r["decision"] == "approve"]
        last = max(last, *ids)
    return last


def gmc_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8")), delimiter="\t"))


def shopify_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def schema_org(url: str, options: Any = None) -> dict[str, Any]:
    """An offline stand-in for schema.org's context (its ``@vocab``, which is all the feed's
    terms need): the test never reaches the network."""
    assert url.rstrip("/") == "https://schema.org", url
    context = {"@context": {"@vocab": "http://schema.org/"}}
    return {"contextUrl": None, "documentUrl": url, "document": context}


def jsonld_graph(body: bytes) -> list[dict[str, Any]]:
    document = json.loads(body)
    graph = document["@graph"]
    assert all(p["@type"] == "Product" for p in graph), graph
    from pyld import jsonld  # a JSON-LD processor (a dev dependency): never skipped

    expanded = jsonld.expand(document, {"documentLoader": schema_org})
    assert len(expanded) == len(graph)
    for node in expanded:
        assert node["@type"] == ["http://schema.org/Product"], node
        offer = node["http://schema.org/offers"][0]
        assert offer["http://schema.org/priceCurrency"] == [{"@value": "BRL"}], offer
    return list(graph)


def by_handle(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    products: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        products.setdefault(row["URL handle"], []).append(row)
    return products


def test_approved_cards_become_three_valid_feeds_and_a_rule_breaker_leaves_one(
    export: Export,
) -> None:
    desk = export.desk
    one = seed(desk, "loja/e1.jpg", "E1")
    two = seed(desk, "loja/e2.jpg", "E2")
    three, photos = seed_product(desk, "loja/e3", "E3")
    long = seed(desk, "loja/e4.jpg", "E4", features_list=[LONG_FEATURE, *FEATURES[1:]])
    pending = seed(desk, "loja/e5.jpg", "E5")  # never approved: in no feed

    manifest = export.wait_for_review(approve(desk, one, two, three, long))

    gmc = gmc_rows(export.get(FEEDS["gmc"]) or b"")
    assert sorted(r["id"] for r in gmc) == ["E1", "E2", "E3"]  # E4 left out of GMC only
    assert CHANNELS["gmc"].problems(gmc) == []
    row3 = next(r for r in gmc if r["id"] == "E3")
    assert row3["link"] == "https://loja.example/p/E3"
    assert row3["image_link"].endswith("/loja/e3/frente.jpg")  # the main photo first
    extra = row3["additional_image_link"]
    assert "lado.jpg" in extra and "verso.jpg" in extra

    shopify = by_handle(shopify_rows(export.get(FEEDS["shopify"]) or b""))
    skus = sorted(r["SKU"] for rows in shopify.values() for r in rows if r["SKU"])
    assert skus == ["E1", "E2", "E3", "E4"]  # Shopify takes the long selling point
    for rows in shopify.values():
        assert CHANNELS["shopify"].problems(rows) == [], rows
    product3 = next(rows for rows in shopify.values() if rows[0]["SKU"] == "E3")
    assert len(product3) == len(photos)  # extra images are extra rows of the same handle
    assert product3[0]["Image source"].endswith("/loja/e3/frente.jpg")

    graph = jsonld_graph(export.get(FEEDS["jsonld"]) or b"")
    assert sorted(p["sku"] for p in graph) == ["E1", "E2", "E3", "E4"]
    for product in graph:
        assert CHANNELS["jsonld"].problems([product]) == [], product

    problems = json.loads(export.get("gmc/problems.json") or b"{}")
    left = {e["key"]: e for e in problems["left_out"]}
    assert list(left) == [long.key]
    assert left[long.key]["item_id"] == "E4"
    assert any(
        p["field"] == "product_highlight" and "150" in p["rule"] for p in left[long.key]["problems"]
    ), left
    for name in ("shopify", "jsonld"):
        assert json.loads(export.get(f"{name}/problems.json") or b"{}")["left_out"] == []

    assert manifest["channels"]["gmc"]["listed"] == 3
    assert manifest["channels"]["gmc"]["left_out"] == 1
    assert manifest["channels"]["shopify"]["listed"] == 4
    for name, channel in CHANNELS.items():
        deltas = export.names(f"{name}/delta/")
        assert deltas and all(d.endswith(f".{channel.suffix}") for d in deltas), deltas
    assert pending.key not in json.dumps(problems)

    # Rejected after its approval: the next write (any approval) leaves it out of every feed.
    with desk.api("reviewer") as api:
        url = f"/v1/cards/{desk.bucket}/{two.key}/reject"
        assert api.post(url, json={"note": "a foto mostra outro produto"}).status_code == 200
    export.wait_for_review(approve(desk, pending))
    gmc = gmc_rows(export.get(FEEDS["gmc"]) or b"")
    assert sorted(r["id"] for r in gmc) == ["E1", "E3", "E5"]
    shopify_skus = {r["SKU"] for r in shopify_rows(export.get(FEEDS["shopify"]) or b"")}
    assert "E2" not in shopify_skus and "E5" in shopify_skus
    assert "E2" not in {p["sku"] for p in jsonld_graph(export.get(FEEDS["jsonld"]) or b"")}
    latest = max(export.names("gmc/delta/"))
    assert [r["id"] for r in gmc_rows(export.get(latest) or b"")] == ["E5"]  # this batch only


async def _park_and_find(desk: Desk, key: bytes) -> dict[str, bytes]:
    bootstrap = desk.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(desk.approved_topic, b"{not an approval", key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        desk.ns.env["VITRINE_TOPIC_DLQ"],
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.key == key:
                            return {k: bytes(v) for k, v in record.headers}
    finally:
        await consumer.stop()


def test_a_malformed_approval_is_parked_and_the_stage_keeps_exporting(export: Export) -> None:
    desk = export.desk
    key = f"{desk.bucket}/bad-{uuid.uuid4().hex[:6]}".encode()
    headers = asyncio.run(_park_and_find(desk, key))
    assert headers["vitrine-service"] == b"export"
    assert headers["vitrine-reason"] == b"malformed_approval"
    ref = seed(desk, f"loja/after-{uuid.uuid4().hex[:6]}.jpg", "AFTER1")
    export.wait_for_review(approve(desk, ref))
    assert "AFTER1" in {r["id"] for r in gmc_rows(export.get(FEEDS["gmc"]) or b"")}
    assert export.service.proc is not None and export.service.proc.poll() is None
