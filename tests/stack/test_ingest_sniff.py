"""Uploads neither their content type nor their name describe are judged by their first bytes.

``binary/octet-stream`` (boto3, ``aws s3 cp``) or ``application/octet-stream`` (mc, minio-py)
under a key without an image extension used to end ``rejected``/``not_an_image`` unread.  The
first half runs the ingest stage against a stand-in MinIO client (ordering, retries, a vanished
object, a bug); the second uploads to the real stack and reads the final rows.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from minio.error import S3Error
from PIL import Image
from prometheus_client import REGISTRY
from urllib3.exceptions import NewConnectionError

from schemas.messages import CardResult, CardStatus, ImageJob, MinioEvent
from services.ingest.service import Ingest
from services.ingest.settings import IngestSettings
from services.runtime.dead_letters import headers_dict
from services.runtime.sniff import HEAD_BYTES
from services.runtime.stage import Item, Output
from tests.support.pipeline import (
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    tiny_model_env,
    wait_for,
)

BUCKET = "incoming"
ETAG = "0123456789abcdef0123456789abcdef"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n%%EOF\n"
TEXT = "Caneca azul de cerâmica, 300 ml. Lavar à mão.\n".encode()


def png(size: tuple[int, int] = (320, 240)) -> bytes:
    """A product-like PNG, with grain so that it is far longer than the head ingest reads."""
    rng = np.random.default_rng(5)
    pixels = np.full((size[1], size[0], 3), 255, np.uint8)
    w, h = size
    pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (30, 80, 200)
    pixels = np.clip(pixels.astype(int) + rng.integers(-6, 7, pixels.shape), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, "PNG")
    assert buf.tell() > 4 * HEAD_BYTES
    return buf.getvalue()


def minio_record(
    key: str,
    *,
    content_type: str | None = "binary/octet-stream",
    sequencer: str = "17F0A1B2C3D4E5F6",
    bucket: str = BUCKET,
    size: int = 1234,
    version_id: str | None = None,
) -> dict[str, Any]:
    """One record shaped like MinIO's notification (the key URL-encoded, as MinIO sends it)."""
    obj: dict[str, Any] = {
        "key": quote_plus(key, safe="/"),
        "size": size,
        "eTag": ETAG,
        "sequencer": sequencer,
    }
    if content_type is not None:
        obj["contentType"] = content_type
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": obj},
    }


# -- the stage, against a stand-in MinIO client -------------------------------------------------


class FakeResponse:
    def __init__(self, data: bytes, etag: str) -> None:
        self.data = data
        self.headers = {"ETag": f'"{etag}"'}

    def read(self, amount: int) -> bytes:
        return self.data[:amount]

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeMinio:
    """``get_object`` as the minio client does it: a ranged read, or the error MinIO returns."""

    def __init__(self, objects: dict[str, bytes], faults: list[BaseException] | None = None):
        self.objects = objects
        self.faults = list(faults or [])
        self.etags: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def get_object(
        self,
        bucket: str,
        key: str,
        offset: int = 0,
        length: int = 0,
        version_id: str | None = None,
    ) -> FakeResponse:
        with self.lock:
            self.calls.append(
                {
                    "bucket": bucket,
                    "key": key,
                    "offset": offset,
                    "length": length,
                    "version_id": version_id,
                }
            )
            if self.faults:
                raise self.faults.pop(0)
        if key not in self.objects:
            raise s3_error("NoSuchKey")
        return FakeResponse(self.objects[key][offset : offset + length], self.etags.get(key, ETAG))


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, f"{code} (stand-in)", "/x", "req", "host")  # type: ignore[arg-type]


def item(*records: dict[str, Any], offset: int = 0) -> Item[MinioEvent]:
    value = json.dumps({"Records": list(records)}).encode()
    record = ConsumerRecord("minio.events", 0, offset, 0, 0, b"k", value, None, 1, len(value), ())
    return Item(record, MinioEvent.model_validate_json(value))


def stage(minio: FakeMinio, stop: asyncio.Event | None = None) -> Ingest:
    return Ingest(IngestSettings(bucket=BUCKET), stop, minio=minio)  # type: ignore[arg-type]


def results(outputs: list[Output]) -> list[CardResult]:
    return [CardResult.model_validate_json(o.value or b"") for o in outputs if "results" in o.topic]


def sniffs(outcome: str) -> float:
    return REGISTRY.get_sample_value("vitrine_ingest_sniffs_total", {"outcome": outcome}) or 0.0


def test_silent_uploads_are_read_once_each_and_keep_the_batch_order() -> None:
    minio = FakeMinio({"a/photo": png(), "b/doc": PDF, "c/notes": TEXT})
    before = {o: sniffs(o) for o in ("image", "not_an_image", "object_missing")}
    batch = [
        item(minio_record("a/photo", sequencer="01")),
        item(minio_record("x/named.jpg", content_type="image/jpeg", sequencer="02"), offset=1),
        item(
            minio_record("b/doc", content_type="application/octet-stream", sequencer="03"), offset=2
        ),
        item(minio_record("c/notes", content_type=None, sequencer="04"), offset=3),
        item(minio_record("d/gone", sequencer="05"), offset=4),
    ]
    outputs = asyncio.run(stage(minio).handle(batch))

    # Only the four silent uploads were read, each from its first byte, HEAD_BYTES at most;
    # besides, each accepted photo's folder was asked once for a product's manifest
    heads = [c for c in minio.calls if not c["key"].endswith("/product.json")]
    assert sorted(c["key"] for c in heads) == ["a/photo", "b/doc", "c/notes", "d/gone"]
    assert all(c["offset"] == 0 and c["length"] == HEAD_BYTES for c in heads)
    manifests = sorted(c["key"] for c in minio.calls if c["key"].endswith("/product.json"))
    assert manifests == ["a/product.json", "x/product.json"]
    by_key = [(r.object.key, r.status, r.reason) for r in results(outputs)]
    assert by_key == [
        ("a/photo", CardStatus.queued, None),
        ("x/named.jpg", CardStatus.queued, None),
        ("b/doc", CardStatus.rejected, "not_an_image"),
        ("c/notes", CardStatus.rejected, "not_an_image"),
        ("d/gone", CardStatus.failed, "object_missing"),
    ]
    jobs = [ImageJob.model_validate_json(o.value or b"") for o in outputs if "jobs" in o.topic]
    assert [j.object.key for j in jobs] == ["a/photo", "x/named.jpg"]
    details = {r.object.key: r.detail for r in results(outputs)}
    assert details["b/doc"] == (
        "application/octet-stream with extension (none): the first bytes are a PDF document, "
        "not an image"
    )
    assert details["c/notes"] == (
        "no content type with extension (none): the first bytes are plain text, not an image"
    )
    assert "NoSuchKey" in (details["d/gone"] or "")
    # The job of a sniffed upload is the job its notification names: same id, same object.
    photo = results(outputs)[0]
    assert jobs[0].job_id == photo.job_id == ImageJob.job_id_for(photo.object)
    assert sniffs("image") - before["image"] == 1
    assert sniffs("not_an_image") - before["not_an_image"] == 2
    assert sniffs("object_missing") - before["object_missing"] == 1


def test_the_read_is_pinned_to_the_events_version() -> None:
    minio = FakeMinio({"v/photo": png()})
    asyncio.run(stage(minio).handle([item(minio_record("v/photo", version_id="3f2a-v1"))]))
    assert minio.calls[0]["version_id"] == "3f2a-v1"


def test_an_object_overwritten_before_the_read_is_superseded() -> None:
    minio = FakeMinio({"o/photo": PDF})
    minio.etags["o/photo"] = "ffffffffffffffffffffffffffffffff"  # a newer upload's content
    outputs = asyncio.run(stage(minio).handle([item(minio_record("o/photo"))]))
    [result] = results(outputs)
    assert (result.status, result.reason) == (CardStatus.failed, "superseded")
    assert not [o for o in outputs if "jobs" in o.topic]


def test_transient_faults_are_retried_until_the_read_works() -> None:
    faults: list[BaseException] = [
        NewConnectionError(None, "connection refused (stand-in)"),  # type: ignore[arg-type]
        s3_error("ServiceUnavailable"),
    ]
    minio = FakeMinio({"r/photo": png()}, faults)
    outputs = asyncio.run(stage(minio).handle([item(minio_record("r/photo"))]))
    reads = [c for c in minio.calls if c["key"] == "r/photo"]
    assert len(reads) == 3  # two faults, then the read that works
    assert [c["key"] for c in minio.calls if c not in reads] == ["r/product.json"]  # none there
    assert [r.status for r in results(outputs)] == [CardStatus.queued]


def test_minio_down_holds_the_batch_and_a_stop_leaves_it_uncommitted() -> None:
    class Down(FakeMinio):
        def get_object(self, *args: Any, **kwargs: Any) -> FakeResponse:
            self.calls.append({})
            raise NewConnectionError(None, "connection refused (stand-in)")  # type: ignore[arg-type]

    async def run() -> None:
        stop = asyncio.Event()
        ingest = stage(Down({}), stop)
        handled = asyncio.create_task(ingest.handle([item(minio_record("s/photo"))]))
        await asyncio.sleep(1.0)
        assert not handled.done()  # still retrying: nothing decided, nothing dropped
        stop.set()
        with pytest.raises(NewConnectionError):
            await asyncio.wait_for(handled, 30)

    asyncio.run(run())


def test_a_fault_no_rule_covers_parks_the_notification() -> None:
    minio = FakeMinio({"p/photo": png()}, [RuntimeError("a bug in the client")])
    batch = [
        item(minio_record("p/photo"), offset=7),
        item(minio_record("q/x.jpg", content_type="image/jpeg"), offset=8),
    ]
    outputs = asyncio.run(stage(minio).handle(batch))
    [parked] = [o for o in outputs if o.topic == "vitrine.jobs.dlq"]
    headers = headers_dict(parked.headers)
    assert headers["vitrine-reason"] == "internal_error"
    assert parked.value == batch[0].record.value  # parked as it came, for `vitrine dlq replay`
    assert [r.object.key for r in results(outputs)] == ["q/x.jpg"]  # the rest goes on


# -- end to end on the real stack -------------------------------------------------------------

CARD_DEADLINE_S = 180
FINAL = "status_rank = 1"


@pytest.fixture(scope="module")
def pipeline(tiny_pairs: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    ensure_stack()
    ns = new_namespace({**tiny_model_env(tiny_pairs["llava"]), "VITRINE_N_THREADS": "1"})
    p = Pipeline(ns, tmp_path_factory.mktemp("sniff-logs"))
    p.add("ingest", "services.ingest")
    p.add("sink", "services.sink")
    p.add("inference", "services.inference")
    p.start_all()
    yield p
    p.close()


def final_row(p: Pipeline, key: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: next(
            iter(rows(p.ns.dsn, p.ns.bucket, f"object_key = %s AND {FINAL}", (key,))), None
        ),
        CARD_DEADLINE_S,
        f"a final row for {key}",
    )
    return found


def sniffed(p: Pipeline, key: str) -> dict[str, Any]:
    return next(
        e
        for e in p.services["ingest"].events()
        if e.get("event") == "event.sniffed" and e.get("key") == f"{p.ns.bucket}/{key}"
    )


@pytest.mark.pipeline
@pytest.mark.model
def test_uploads_without_a_name_or_type_end_by_what_their_bytes_are(pipeline: Pipeline) -> None:
    s3 = s3_client(pipeline.ns.env)
    bucket = pipeline.ns.bucket
    photo = png()
    s3.put_object(Bucket=bucket, Key="sniff/caneca", Body=photo, ContentType="binary/octet-stream")
    s3.put_object(
        Bucket=bucket, Key="sniff/camiseta", Body=photo, ContentType="application/octet-stream"
    )
    s3.put_object(Bucket=bucket, Key="sniff/sem-tipo", Body=photo)  # boto3's own default type
    s3.put_object(Bucket=bucket, Key="sniff/catalogo", Body=PDF, ContentType="binary/octet-stream")
    s3.put_object(
        Bucket=bucket, Key="sniff/notas", Body=TEXT, ContentType="application/octet-stream"
    )

    for key in ("sniff/caneca", "sniff/camiseta", "sniff/sem-tipo"):
        row = final_row(pipeline, key)
        # It reached the worker: the tiny model makes a card or fails one, never a rejection.
        assert row["status"] in ("done", "failed"), (
            key,
            row["status"],
            row["reason"],
            row["detail"],
        )
        assert row["model_id"] == "tiny-llava-f32.gguf", row
        assert row["content_type"] in ("binary/octet-stream", "application/octet-stream"), row
        line = sniffed(pipeline, key)
        assert (line["what"], line["head_bytes"]) == ("PNG", HEAD_BYTES)  # a ranged read

    pdf = final_row(pipeline, "sniff/catalogo")
    assert (pdf["status"], pdf["reason"]) == ("rejected", "not_an_image")
    assert pdf["detail"] == (
        "binary/octet-stream with extension (none): the first bytes are a PDF document, "
        "not an image"
    )
    notes = final_row(pipeline, "sniff/notas")
    assert (notes["status"], notes["reason"]) == ("rejected", "not_an_image")
    assert "the first bytes are plain text, not an image" in notes["detail"]
    line = sniffed(pipeline, "sniff/notas")
    assert line["outcome"] == "not_an_image" and line["head_bytes"] == len(TEXT)
    assert pipeline.services["ingest"].proc is not None
    assert pipeline.services["ingest"].proc.poll() is None


@pytest.mark.pipeline
def test_an_upload_gone_before_its_bytes_are_read_fails_as_object_missing(
    pipeline: Pipeline,
) -> None:
    """A notification for an object already deleted (only a forged or very late one names no
    object at all): ingest's read finds nothing and the row ends like the worker would end it."""
    key = "sniff/apagado"
    value = json.dumps({"Records": [minio_record(key, bucket=pipeline.ns.bucket)]}).encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=pipeline.ns.env.get("VITRINE_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
        )
        await producer.start()
        try:
            topic = pipeline.ns.env.get("VITRINE_TOPIC_EVENTS", "minio.events")
            await producer.send_and_wait(topic, value, key=f"{pipeline.ns.bucket}/{key}".encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    row = final_row(pipeline, key)
    assert (row["status"], row["reason"]) == ("failed", "object_missing"), row
    assert "NoSuchKey" in row["detail"]
    assert sniffed(pipeline, key)["outcome"] == "object_missing"
