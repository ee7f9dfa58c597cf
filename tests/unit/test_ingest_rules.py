"""What one MinIO bucket notification means: a job, a rejection, a deletion, or nothing.

The records below follow what MinIO really sends to Kafka (captured from the dev stack): the key in
``s3.object.key`` is form-encoded (``+`` for spaces), a create carries size, eTag, contentType and
sequencer, and a remove carries only key and sequencer.
"""

from __future__ import annotations

import copy
import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image

from schemas.messages import (
    CardStatus,
    ImageJob,
    MinioEvent,
    ObjectRef,
    S3Record,
)
from schemas.reasons import Reason
from services.inference.image import preprocess
from services.inference.image.preprocess import _OPEN_FORMATS
from services.ingest.rules import (
    Decision,
    NeedsSniffing,
    Sniff,
    classify_upload,
    decide,
    decide_from_head,
    decide_unread,
)
from services.runtime import sniff as sniff_module
from services.runtime.sniff import HEAD_BYTES, image_format

MAX_BYTES = 30 * 1024 * 1024

CAPTURED_PUT = (
    '{"EventName":"s3:ObjectCreated:Put","Key":"incoming/photos/Tênis azul 01.jpg",'
    '"Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",'
    '"eventTime":"2026-11-26T08:32:34.582Z","eventName":"s3:ObjectCreated:Put",'
    '"userIdentity":{"principalId":"vitrine"},"s3":{"s3SchemaVersion":"1.0",'
    '"configurationId":"Config","bucket":{"name":"incoming","arn":"arn:aws:s3:::incoming"},'
    '"object":{"key":"photos%2FT%C3%AAnis+azul+01.jpg","size":19,'
    '"eTag":"c6f3ac6367e8af5f979ee83ba321e085","contentType":"image/jpeg",'
    '"userMetadata":{"content-type":"image/jpeg"},"sequencer":"18EB8B3948595CE8"}}}]}'
)

PUT_SEQUENCER = "18EB8B3948595CE8"
DELETE_SEQUENCER = "18EB8B4A11C0FFEE"  # later than the PUT: a removal of the same object


def put_event(**object_overrides: Any) -> dict[str, Any]:
    """The captured PUT as a dict; ``None`` as an override removes that field from s3.object."""
    event: dict[str, Any] = json.loads(CAPTURED_PUT)
    obj = event["Records"][0]["s3"]["object"]
    for name, value in object_overrides.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    return event


def delete_event(
    key: str = "photos%2FT%C3%AAnis+azul+01.jpg",
    sequencer: str = DELETE_SEQUENCER,
    event_name: str = "s3:ObjectRemoved:Delete",
) -> dict[str, Any]:
    event = json.loads(CAPTURED_PUT)
    event["EventName"] = event_name
    record = event["Records"][0]
    record["eventName"] = event_name
    record["eventTime"] = "2026-11-26T08:40:02.117Z"
    record["s3"]["object"] = {"key": key, "sequencer": sequencer}
    return event


def record_of(event: dict[str, Any], event_name: str | None = None) -> S3Record:
    event = copy.deepcopy(event)
    if event_name is not None:
        event["EventName"] = event_name
        event["Records"][0]["eventName"] = event_name
    parsed = MinioEvent.model_validate_json(json.dumps(event))
    assert len(parsed.records) == 1
    return parsed.records[0]


def upload(**object_overrides: Any) -> S3Record:
    return record_of(put_event(**object_overrides))


def ref_for(key: str, content_type: str | None, size: int | None = 1234) -> ObjectRef:
    return ObjectRef(
        bucket="incoming",
        key=key,
        size=size,
        content_type=content_type,
        sequencer=PUT_SEQUENCER,
        event_time=datetime(2026, 11, 26, 8, 32, 34, 582000, tzinfo=UTC),
    )


def assert_job(decision: Decision) -> ImageJob:
    assert decision.job is not None, decision.result
    assert decision.result is not None
    assert decision.result.status is CardStatus.queued
    return decision.job


def assert_rejected(decision: Decision, reason: str) -> str:
    assert decision.job is None
    assert decision.result is not None
    assert decision.result.status is CardStatus.rejected
    assert decision.result.reason == reason
    assert decision.result.detail
    return decision.result.detail


# -- the captured event, end to end -------------------------------------------------------------


def test_captured_put_becomes_a_job_for_the_decoded_key() -> None:
    event = MinioEvent.model_validate_json(CAPTURED_PUT)
    record = event.records[0]
    decision = decide(record, MAX_BYTES)
    job = assert_job(decision)

    ref = job.object
    assert ref.bucket == "incoming"
    assert ref.key == "photos/Tênis azul 01.jpg"
    assert ref.size == 19
    assert ref.etag == "c6f3ac6367e8af5f979ee83ba321e085"
    assert ref.content_type == "image/jpeg"
    assert ref.version_id is None
    assert ref.sequencer == PUT_SEQUENCER
    assert ref.sequence == int(PUT_SEQUENCER, 16)
    assert ref.event_time == datetime(2026, 11, 26, 8, 32, 34, 582000, tzinfo=UTC)
    # The Kafka key ingest publishes under is the same as the one MinIO used (not URL-encoded).
    assert event.key == "incoming/photos/Tênis azul 01.jpg"
    assert ref.message_key == event.key.encode()


def test_the_queued_result_accompanies_the_job() -> None:
    decision = decide(upload(), MAX_BYTES)
    job = assert_job(decision)
    queued = decision.result
    assert queued is not None
    assert queued.status is CardStatus.queued
    assert queued.producer == "ingest"
    assert queued.card is None
    assert queued.reason is None
    assert queued.object == job.object
    assert queued.job_id == job.job_id
    assert queued.trace_id == job.trace_id
    assert len(job.trace_id) == 32
    assert job.attempt == 1
    assert job.schema_version == queued.schema_version == 1
    assert job.job_id == ImageJob.job_id_for(job.object)
    # Both survive the trip through Kafka unchanged.
    assert ImageJob.model_validate_json(job.model_dump_json()) == job
    assert type(queued).model_validate_json(queued.model_dump_json()) == queued


# -- key decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("photos%2FT%C3%AAnis+azul+01.jpg", "photos/Tênis azul 01.jpg"),
        ("sapato+de+couro.jpg", "sapato de couro.jpg"),
        ("cal%C3%A7a+jeans%2Fa%C3%A7%C3%BAcar.png", "calça jeans/açúcar.png"),
        ("%E6%97%A5%E6%9C%AC%2F%E9%9D%B4.webp", "日本/靴.webp"),
        ("c+%2B+d.jpg", "c + d.jpg"),
        ("a%2Bb.jpg", "a+b.jpg"),
        ("100%25+algod%C3%A3o.jpeg", "100% algodão.jpeg"),
        ("dir%2F%252e%252e%2Fx.jpg", "dir/%2e%2e/x.jpg"),
        ("a%5Cb%3Fc%23d.jpg", "a\\b?c#d.jpg"),
    ],
)
def test_keys_are_form_decoded_and_otherwise_left_alone(encoded: str, decoded: str) -> None:
    record = upload(key=encoded)
    assert record.object_ref().key == decoded
    job = assert_job(decide(record, MAX_BYTES))
    # Keys are opaque identifiers: no normalisation, no path resolution.
    assert job.object.key == decoded
    assert job.object.message_key == f"incoming/{decoded}".encode()


def test_plus_and_encoded_plus_name_different_objects() -> None:
    spaced = assert_job(decide(upload(key="a+b.jpg"), MAX_BYTES))
    plus = assert_job(decide(upload(key="a%2Bb.jpg"), MAX_BYTES))
    assert spaced.object.key == "a b.jpg"
    assert plus.object.key == "a+b.jpg"
    assert spaced.job_id != plus.job_id


@pytest.mark.parametrize(
    "encoded",
    ["..%2F..%2Fetc%2Fpasswd.jpg", "photos%2F..%2F..%2Fetc%2Fpasswd.jpg", "fotos%2F%2Fdupla.jpg"],
)
def test_a_dot_dot_or_empty_segment_breaks_the_key_rule(encoded: str) -> None:
    """Not resolved, not normalised: refused whole (``bad_key``), as the desk and ``vitrine
    put`` refuse it, since in a URL such a key names another object (object_keys.py)."""
    detail = assert_rejected(decide(upload(key=encoded), MAX_BYTES), "bad_key")
    assert "segment" in detail


# -- what counts as an image ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("photos%2Fsem-extensao", "image/jpeg"),  # no extension: the declared type decides
        ("photos%2Fproduto.dat", "image/png"),
        ("photos%2Fproduto.txt", "image/webp"),
        ("photos%2Fproduto.jpg", "IMAGE/JPEG"),
        ("photos%2Fproduto.jpg", "image/jpeg; charset=binary"),
        ("photos%2Fproduto.heic", "image/heic"),  # image/* wins; inference decodes or rejects
        ("photos%2Fproduto.gif", " image/gif "),
    ],
)
def test_declared_image_content_type_is_accepted(key: str, content_type: str) -> None:
    record = upload(key=key, contentType=content_type)
    job = assert_job(decide(record, MAX_BYTES))
    assert job.object.content_type == content_type  # kept as declared, only compared loosely


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("photos%2Fproduto.jpg", "binary/octet-stream"),  # boto3's default
        ("photos%2Fproduto.JPG", "binary/octet-stream"),
        ("photos%2Fproduto.jpeg", "application/octet-stream"),  # mc / minio-py default
        ("photos%2Fproduto.png", "application/octet-stream"),
        ("photos%2Fproduto.webp", "binary/octet-stream"),
        ("photos%2Fproduto.tiff", "binary/octet-stream"),
        ("photos%2Fproduto.mpo", "binary/octet-stream"),
        ("photos%2Fproduto.bmp", "Application/Octet-Stream"),
        ("photos%2Fproduto.gif", ""),
        ("photos%2Fproduto.png", None),  # no contentType in the record at all
    ],
)
def test_neutral_content_type_with_image_extension_is_accepted(
    key: str, content_type: str | None
) -> None:
    job = assert_job(decide(upload(key=key, contentType=content_type), MAX_BYTES))
    if not content_type:
        assert job.object.content_type is None


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("docs%2Fnota.txt", "text/plain"),
        ("photos%2Fproduto.jpg", "text/plain"),
        ("photos%2Fproduto.jpg", "text/html"),
        ("photos%2Fproduto.jpg", "application/pdf"),
        ("photos%2Fproduto.jpg", "application/zip"),
        ("photos%2Fproduto.png", "application/json"),
        ("photos%2Fproduto.jpg", "video/mp4"),
        ("catalogo.pdf", "application/pdf"),
        ("photos%2Fproduto", "application/pdf"),
        ("photos%2Fproduto", "text/plain"),
    ],
)
def test_everything_else_is_not_an_image(key: str, content_type: str) -> None:
    decision = decide(upload(key=key, contentType=content_type), MAX_BYTES)
    detail = assert_rejected(decision, "not_an_image")
    assert content_type.strip() in detail


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("photos%2Flogo.svg", "image/svg+xml"),
        ("photos%2Flogo.jpg", "image/svg+xml"),
        ("photos%2Flogo.svg", "image/svg+xml; charset=utf-8"),
        ("photos%2Flogo.svg", "IMAGE/SVG+XML"),
    ],
)
def test_svg_is_rejected_even_though_it_is_image_star(key: str, content_type: str) -> None:
    detail = assert_rejected(
        decide(upload(key=key, contentType=content_type), MAX_BYTES), "not_an_image"
    )
    assert "SVG" in detail


def test_rejection_detail_names_type_and_extension() -> None:
    detail = assert_rejected(
        decide(upload(key="photos%2Fproduto", contentType="application/pdf"), MAX_BYTES),
        "not_an_image",
    )
    assert detail == "application/pdf with extension (none) is not an image"
    detail = assert_rejected(
        decide(upload(key="photos%2Fproduto.JPG", contentType="Text/Plain"), MAX_BYTES),
        "not_an_image",
    )
    assert detail == "text/plain with extension .jpg is not an image"


# -- uploads only their first bytes can classify -----------------------------------------------


def image_head(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """The first HEAD_BYTES of a real image in ``fmt``, as Pillow writes it."""
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buf, fmt)
    return buf.getvalue()[:HEAD_BYTES]


PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
NOT_IMAGES = {
    "pdf": (PDF_HEAD, "a PDF document"),
    "zip": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(40), "a ZIP archive"),
    "gzip": (b"\x1f\x8b\x08\x00" + bytes(40), "a gzip stream"),
    "html": (b"<!DOCTYPE html>\n<html><body>not a png</body></html>", "an HTML page"),
    "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    "text": ("descrição do produto: caneca azul, 300 ml\n".encode(), "plain text"),
    "mp4": (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "an MP4/QuickTime video"),
    "wav": (b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(20), "a RIFF container"),
}


def silent_upload(
    key: str = "photos%2Fproduto",
    content_type: str | None = "binary/octet-stream",
    size: int = 4321,
) -> Sniff:
    decision = decide(upload(key=key, contentType=content_type, size=size), MAX_BYTES)
    assert decision.job is None and decision.result is None
    assert decision.sniff is not None
    return decision.sniff


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("photos%2Fproduto", "binary/octet-stream"),  # boto3 and aws s3 cp, for an unknown name
        ("photos%2Fproduto", "application/octet-stream"),  # mc / minio-py
        ("photos%2Fproduto", "Binary/Octet-Stream; charset=binary"),
        ("photos%2Fproduto", ""),
        ("photos%2Fproduto", None),
        ("photos%2FIMG_0001.JPG_original", "binary/octet-stream"),  # an unknown extension
        ("photos%2Fproduto.heic", "application/octet-stream"),  # not one the worker decodes
        ("photos%2Fproduto.txt", "binary/octet-stream"),  # a name is no proof either way
        ("photos%2Fproduto.jpg.zip", "application/octet-stream"),
    ],
)
def test_a_neutral_type_without_an_image_extension_is_left_to_the_first_bytes(
    key: str, content_type: str | None
) -> None:
    record = upload(key=key, contentType=content_type, size=4321)
    sniff = silent_upload(key, content_type, size=4321)
    ref = record.object_ref()
    assert sniff.ref == ref
    assert sniff.job_id == ImageJob.job_id_for(ref)  # the decision to come keeps the job id
    assert len(sniff.trace_id) == 32
    assert sniff.declared.startswith(
        (content_type or "").split(";")[0].strip().lower() or "no content type"
    )


def test_what_the_name_and_type_said_opens_the_detail() -> None:
    assert silent_upload().declared == "binary/octet-stream with extension (none)"
    assert silent_upload("a.dat", None).declared == "no content type with extension .dat"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_first_bytes_of_an_accepted_format_make_a_job(fmt: str) -> None:
    sniff = silent_upload()
    found, decision = decide_from_head(sniff, image_head(fmt))
    assert (found.kind, found.what) == ("image", fmt)
    job = assert_job(decision)
    assert (job.job_id, job.trace_id, job.object) == (sniff.job_id, sniff.trace_id, sniff.ref)
    assert decision.result is not None and decision.result.job_id == sniff.job_id


def test_the_signatures_cover_whatever_the_workers_decoders_would_open() -> None:
    # The worker opens only these formats (preprocess._OPEN_FORMATS); any head one of their
    # parsers accepts must reach it, or ingest would reject an image the worker can read.
    Image.init()
    heads = [image_head(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]
    heads += [image_head("TIFF")[:2] + b"+\x00" + bytes(12), b"MM\x00+" + bytes(12)]  # BigTIFF
    heads += [head for head, _ in NOT_IMAGES.values()] + [bytes(range(256))]
    for head in heads:
        opened = [fmt for fmt in _OPEN_FORMATS if (accept := Image.OPEN[fmt][1]) and accept(head)]
        if opened:
            assert image_format(head) is not None, (opened, head[:16])


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_first_bytes_of_something_else_reject_it_by_name(name: str) -> None:
    head, what = NOT_IMAGES[name]
    found, decision = decide_from_head(silent_upload(), head)
    assert found.kind == "not_an_image"
    detail = assert_rejected(decision, "not_an_image")
    assert detail.startswith("binary/octet-stream with extension (none): the first bytes are ")
    assert what in detail and detail.endswith(", not an image")


def test_pdf_detail_in_full() -> None:
    _, decision = decide_from_head(silent_upload(content_type="application/octet-stream"), PDF_HEAD)
    assert assert_rejected(decision, "not_an_image") == (
        "application/octet-stream with extension (none): the first bytes are a PDF document, "
        "not an image"
    )


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "HEIC/HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "AVIF"),
        (b"8BPS\x00\x01" + bytes(20), "Photoshop"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(20), "JPEG 2000"),
    ],
)
def test_an_image_format_the_worker_cannot_decode_is_a_bad_image(head: bytes, what: str) -> None:
    found, decision = decide_from_head(silent_upload(), head)
    assert found.kind == "unsupported_image"
    detail = assert_rejected(decision, "bad_image")  # as the worker would call it
    assert what in detail


def test_unrecognised_bytes_are_not_an_image() -> None:
    found, decision = decide_from_head(silent_upload(), bytes(range(256)) * 4)
    assert found.kind == "unknown"
    assert assert_rejected(decision, "not_an_image") == (
        "binary/octet-stream with extension (none): the first bytes match no supported image format"
    )


def test_text_cut_at_the_end_of_the_head_is_still_text() -> None:
    text = ("x" * (HEAD_BYTES - 1) + "é, algodão").encode()
    head = text[:HEAD_BYTES]
    assert head != text and head.decode(errors="replace").endswith("\ufffd")  # cut mid-character
    found, _ = decide_from_head(silent_upload(size=len(text)), head)
    assert (found.kind, found.what) == ("not_an_image", "plain text")
    # The whole object, when it ends there: its last character is really broken, so not text.
    found, _ = decide_from_head(silent_upload(size=len(head)), head)
    assert found.kind == "unknown"


def test_an_object_emptied_before_its_bytes_were_read_is_empty() -> None:
    _, decision = decide_from_head(silent_upload(), b"")
    assert assert_rejected(decision, "empty_object") == "the object is empty (0 bytes)"


def test_an_unreadable_upload_ends_as_the_worker_would_end_it() -> None:
    sniff = silent_upload()
    decision = decide_unread(sniff, CardStatus.failed, Reason.object_missing, "NoSuchKey")
    assert decision.job is None and decision.result is not None
    assert decision.result.status is CardStatus.failed and decision.result.status.final
    assert (decision.result.reason, decision.result.detail) == ("object_missing", "NoSuchKey")
    assert decision.result.job_id == sniff.job_id and decision.result.trace_id == sniff.trace_id
    assert decision.result.producer == "ingest"


def test_preprocessing_words_its_errors_with_the_same_table() -> None:
    assert preprocess.looks_like is sniff_module.looks_like  # imported, not copied
    assert preprocess.looks_like(PDF_HEAD) == "a PDF document"
    assert sniff_module.identify(PDF_HEAD, truncated=True).what == "a PDF document"


# -- size ---------------------------------------------------------------------------------------


def test_empty_object_is_rejected_before_anything_else() -> None:
    assert_rejected(decide(upload(size=0), MAX_BYTES), "empty_object")
    # Size is checked first: an empty text file is "empty", not "not an image".
    assert_rejected(decide(upload(size=0, contentType="text/plain"), MAX_BYTES), "empty_object")
    # A folder marker as created by consoles ("photos/") is an empty object, too.
    assert_rejected(
        decide(upload(key="photos%2F", size=0, contentType="application/octet-stream"), MAX_BYTES),
        "empty_object",
    )


def test_size_limit_is_inclusive() -> None:
    assert_job(decide(upload(size=1000), 1000))
    detail = assert_rejected(decide(upload(size=1001), 1000), "image_too_large")
    assert "1001" in detail and "1000" in detail
    assert_rejected(decide(upload(size=MAX_BYTES + 1), MAX_BYTES), "image_too_large")


def test_unknown_size_is_not_a_reason_to_reject() -> None:
    assert_job(decide(upload(size=None), MAX_BYTES))


def test_classify_upload_directly() -> None:
    assert classify_upload(ref_for("a.jpg", "image/jpeg"), MAX_BYTES) is None
    assert classify_upload(ref_for("a.jpg", "binary/octet-stream"), MAX_BYTES) is None
    assert classify_upload(ref_for("a.jpg", None), MAX_BYTES) is None
    assert classify_upload(ref_for("a.jpg", "image/jpeg", size=0), MAX_BYTES) == (
        "empty_object",
        "the object is empty (0 bytes)",
    )
    assert classify_upload(ref_for("a.jpg", "image/jpeg", size=11), 10) == (
        "image_too_large",
        "11 bytes is over the limit of 10 bytes",
    )
    problem = classify_upload(ref_for("a.jpg", "application/zip"), MAX_BYTES)
    assert isinstance(problem, tuple) and problem[0] == "not_an_image"
    problem = classify_upload(ref_for("a.svg", "image/svg+xml"), MAX_BYTES)
    assert isinstance(problem, tuple) and problem[0] == "not_an_image"
    assert classify_upload(ref_for("a", "binary/octet-stream"), MAX_BYTES) == NeedsSniffing(
        "binary/octet-stream with extension (none)"
    )
    assert classify_upload(ref_for("a.bin", None), MAX_BYTES) == NeedsSniffing(
        "no content type with extension .bin"
    )
    # Size is judged first: nothing is read of an empty or oversized object.
    assert classify_upload(ref_for("a", "binary/octet-stream", size=0), MAX_BYTES) == (
        "empty_object",
        "the object is empty (0 bytes)",
    )
    problem = classify_upload(ref_for("a", "binary/octet-stream", size=11), 10)
    assert isinstance(problem, tuple) and problem[0] == "image_too_large"


def test_rejection_result_describes_the_object() -> None:
    record = upload(contentType="text/html", size=512)
    decision = decide(record, MAX_BYTES)
    assert_rejected(decision, "not_an_image")
    result = decision.result
    assert result is not None
    assert result.producer == "ingest"
    assert result.card is None
    assert result.object == record.object_ref()
    assert result.job_id == ImageJob.job_id_for(record.object_ref())
    assert len(result.detail or "") <= 2000 and len(result.reason or "") <= 64


# -- deletions and other events -----------------------------------------------------------------


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectRemoved:DeleteAllVersions",
    ],
)
def test_removal_yields_a_deleted_result_and_no_job(event_name: str) -> None:
    record = record_of(delete_event(event_name=event_name))
    decision = decide(record, MAX_BYTES)
    assert decision.job is None
    result = decision.result
    assert result is not None
    assert result.status is CardStatus.deleted
    assert result.status.final
    assert result.card is None and result.reason is None
    assert result.producer == "ingest"
    ref = result.object
    assert ref.bucket == "incoming"
    assert ref.key == "photos/Tênis azul 01.jpg"
    assert ref.sequencer == DELETE_SEQUENCER
    assert ref.size is None and ref.etag is None and ref.content_type is None
    assert ref.message_key == b"incoming/photos/T\xc3\xaanis azul 01.jpg"
    assert result.job_id == ImageJob.job_id_for(ref)


def test_removal_of_any_object_is_a_deletion_whatever_its_name() -> None:
    # No content sniffing on removal: a text file's row (rejected) must be marked deleted too.
    decision = decide(record_of(delete_event(key="docs%2Fnota.txt")), MAX_BYTES)
    assert decision.job is None
    assert decision.result is not None and decision.result.status is CardStatus.deleted
    assert decision.result.object.key == "docs/nota.txt"


def test_removal_is_ordered_after_the_put_of_the_same_object() -> None:
    put = decide(upload(), MAX_BYTES).result
    removed = decide(record_of(delete_event()), MAX_BYTES).result
    assert put is not None and removed is not None
    assert put.object.message_key == removed.object.message_key
    assert removed.object.sequence > put.object.sequence


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
    ],
)
def test_every_kind_of_create_is_an_upload(event_name: str) -> None:
    assert_job(decide(record_of(put_event(), event_name=event_name), MAX_BYTES))


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectAccessed:Get",
        "s3:ObjectAccessed:Head",
        "s3:BucketCreated",
        "s3:Replication:OperationCompletedReplication",
        "s3:ObjectRestore:Completed",
    ],
)
def test_unrelated_events_mean_nothing(event_name: str) -> None:
    decision = decide(record_of(put_event(), event_name=event_name), MAX_BYTES)
    assert decision == Decision(None, None)


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
    ],
)
def test_metadata_only_creates_leave_the_card_alone(event_name: str) -> None:
    # MinIO sends these under s3:ObjectCreated:* with size, eTag and contentType of the object
    # and a fresh sequencer; a job would re-queue (and blank) a card whose image did not change.
    record = record_of(put_event(sequencer="18EB8B5B00000001"), event_name=event_name)
    assert decide(record, MAX_BYTES) == Decision(None, None)


def test_delete_of_a_missing_object_removes_nothing() -> None:
    # MinIO sends s3:ObjectRemoved:NoOP for a DELETE of a key (or versionId) that does not exist;
    # marking the row deleted would hide a live object's card or invent a row for no object.
    record = record_of(delete_event(event_name="s3:ObjectRemoved:NoOP"))
    assert decide(record, MAX_BYTES) == Decision(None, None)


# -- replays ------------------------------------------------------------------------------------


def test_replayed_record_gets_the_same_job_id() -> None:
    first = assert_job(decide(upload(), MAX_BYTES))
    again = assert_job(decide(MinioEvent.model_validate_json(CAPTURED_PUT).records[0], MAX_BYTES))
    assert again.job_id == first.job_id
    assert again.object == first.object
    # A trace is one pass through the pipeline: a replay is a new trace of the same job.
    assert again.trace_id != first.trace_id
    expected = uuid.uuid5(
        uuid.UUID("5d7c1f0e-4b7a-4f55-9a52-6f1c8a1e3b21"),
        f"incoming/photos/Tênis azul 01.jpg@{PUT_SEQUENCER}",
    )
    assert first.job_id == expected


def test_new_version_of_the_object_gets_a_new_job_id() -> None:
    first = assert_job(decide(upload(), MAX_BYTES))
    overwritten = assert_job(decide(upload(sequencer="18EB8B3948595CE9"), MAX_BYTES))
    assert overwritten.job_id != first.job_id
    assert overwritten.object.sequence == first.object.sequence + 1
    other_key = assert_job(decide(upload(key="photos%2Foutro.jpg"), MAX_BYTES))
    assert other_key.job_id != first.job_id


def test_rejected_replay_keeps_its_job_id_too() -> None:
    a = decide(upload(contentType="application/pdf"), MAX_BYTES).result
    b = decide(upload(contentType="application/pdf"), MAX_BYTES).result
    assert a is not None and b is not None
    assert a.job_id == b.job_id
    assert a.status is b.status is CardStatus.rejected
