"""``POST /v1/images``: a photo into the bucket, held to the limits ingest applies.

Refused before anything is written: more bytes than ``VITRINE_IMAGE_MAX_BYTES``, a declared
type or name that ingest would reject, or bytes that are not an image the workers decode (the
same sniffing ingest does on silent uploads, here on every upload: the desk has the bytes).  The
object is written with the desk's put-only MinIO user; from there the pipeline takes over as for
any S3 upload, and the answer's status URL follows it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from pathlib import PurePosixPath

from minio import Minio
from minio.error import S3Error
from minio.helpers import DictType
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from schemas.facts import facts_from_metadata
from schemas.messages import ObjectRef
from services.runtime.object_keys import key_problem, prefix_problem
from services.runtime.sniff import identify
from services.runtime.upload_rules import classify_upload

MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and the few text fields


class UploadRefused(ValueError):
    """Why an upload was not stored: ``code`` is one of :data:`REFUSALS` (the page shows that
    code's fixed text), ``fields`` names the form field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = {field: message} if field else {}


REFUSALS = {
    "image_too_large": "the photo is over the size limit (VITRINE_IMAGE_MAX_BYTES).",
    "not_multipart": "the form was not sent as multipart/form-data.",
    "bad_form": "the form could not be read.",
    "no_file": "the form has no photo.",
    "empty_object": "the file is empty.",
    "not_an_image": "the file is not an image the workers decode (JPEG, PNG, WebP, ...).",
    "bad_key": "the key breaks the key rule (no control characters, no empty, '.' or '..' "
    "segments, no leading '/', at most 1,024 bytes).",
    "bad_prefix": "the prefix breaks the key rule (no control characters, no empty, '.' or "
    "'..' segments, no leading '/', at most 1,024 bytes with the date and id).",
    "exists": "an object with this key is already in the bucket.",
    "too_many_photos": "a product has more photos than VITRINE_PRODUCT_MAX_PHOTOS.",
    "invalid_facts": "a fact breaks its rule (sku, brand, gtin with its check digit, title, "
    "cor, attributes).",
}
"""Every refusal code an upload can get, with the text the list page shows for it."""


@dataclass(frozen=True)
class Stored:
    key: str
    etag: str | None
    version_id: str | None
    size: int
    content_type: str


def object_key(filename: str | None, prefix: str, given: str | None) -> str:
    """The key: the one given, else ``<prefix>/<date>/<uuid>-<safe name>``; either held to the
    key rule ingest applies (services/runtime/object_keys.py), the generated one too (a prefix
    can be fine alone and too long with the date and id after it)."""
    if given:
        key = given.strip()
        problem = key_problem(key)
        if problem:
            raise UploadRefused(422, "bad_key", problem, field="key")
        return key
    problem = prefix_problem(prefix)
    name = _UNSAFE.sub("-", PurePosixPath(filename or "photo").name).strip("-.")[:80] or "photo"
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    key = f"{prefix.rstrip('/') or 'uploads'}/{day}/{uuid.uuid4().hex[:12]}-{name}"
    problem = problem or key_problem(key, "prefix with the date and id after it")
    if problem:
        raise UploadRefused(422, "bad_prefix", problem, field="prefix")
    return key


def check(data: bytes, declared_type: str | None, filename: str | None, max_bytes: int) -> str:
    """The content type to store, or :class:`UploadRefused` with ingest's reason."""
    if len(data) > max_bytes:
        raise UploadRefused(
            413, "image_too_large", f"over the limit of {max_bytes} bytes (VITRINE_IMAGE_MAX_BYTES)"
        )
    probe = ObjectRef(
        bucket="probe",
        key=filename or "upload",
        size=len(data),
        content_type=declared_type or None,
        sequencer="0",
        event_time=datetime.now(UTC),
    )
    problem = classify_upload(probe, max_bytes)
    if isinstance(problem, tuple):
        reason, detail = problem
        raise UploadRefused(415 if reason != "empty_object" else 422, str(reason), detail)
    found = identify(data[:4096], truncated=len(data) > 4096)
    if found.kind != "image":
        raise UploadRefused(
            415, "not_an_image", f"the bytes are {found.what}, not an image the workers decode"
        )
    return MIME.get(found.what, declared_type or "application/octet-stream")


FACT_FIELDS = ("sku", "brand", "gtin", "title", "cor")
"""The form fields that are facts; ``attr.<name>`` fields are category attributes."""


def facts_of(fields: dict[str, str]) -> dict[str, str]:
    """The facts a form gives (empty fields left out), checked by the rules ingest applies to
    S3 metadata (``schemas/facts.py``): an upload with a bad one is refused (422), naming it,
    rather than stored with a fact the pipeline would drop."""
    given = {
        (name.removeprefix("attr.") if name.startswith("attr.") else name): value.strip()
        for name, value in fields.items()
        if (name in FACT_FIELDS or name.startswith("attr.")) and value.strip()
    }
    checked = facts_from_metadata(given)
    if checked.problems:
        first = checked.problems[0]
        error = UploadRefused(422, "invalid_facts", f"{first.fact}: {first.detail}")
        error.fields = {p.fact: p.detail for p in checked.problems}
        raise error
    return given


def metadata_headers(facts: dict[str, str]) -> dict[str, str]:
    """The facts as S3 user metadata headers; text that is not ASCII as RFC 2047 words (HTTP
    headers carry ASCII; ingest decodes them)."""
    headers = {}
    for name, value in facts.items():
        encoded = value if value.isascii() else Header(value, "utf-8").encode(maxlinelen=10**6)
        headers[f"x-amz-meta-{name}"] = encoded
    return headers


def product_names(photos: tuple[Photo, ...]) -> list[str]:
    """A product's photos' names in its folder: their own safe names, numbered, so two files
    called ``IMG.jpg`` stay two photos and the order is the form's."""
    names = []
    for i, p in enumerate(photos, 1):
        safe = _UNSAFE.sub("-", PurePosixPath(p.filename or "photo").name).strip("-.")[:80]
        names.append(f"{i:02d}-{safe or 'photo'}")
    return names


def product_folder(prefix: str, given: str | None) -> str:
    """``<prefix>/<date>/<id>/``, or the folder given, held to the key rule (with room for a
    photo's name after it)."""
    if given:
        folder = given.strip().rstrip("/") + "/"
        problem = key_problem(folder + "product.json")
        if problem:
            raise UploadRefused(422, "bad_key", problem, field="folder")
        return folder
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    folder = f"{prefix.strip().rstrip('/') or 'products'}/{day}/{uuid.uuid4().hex[:12]}/"
    problem = prefix_problem(prefix) or key_problem(folder + "product.json")
    if problem:
        raise UploadRefused(422, "bad_prefix", problem, field="prefix")
    return folder


def store(
    client: Minio,
    bucket: str,
    key: str,
    data: bytes,
    content_type: str,
    facts: dict[str, str] | None = None,
) -> Stored:
    """Write the object only if the bucket has no object of that key (blocking: run in a
    thread).

    One conditional PutObject (``If-None-Match: *``): the bucket itself decides, atomically,
    so of any number of concurrent uploads of one new key exactly one is stored and the others
    get 409, and nothing is ever overwritten (a HEAD before the PUT left a window in which
    several uploads saw no object and the later writers replaced the earlier).  MinIO answers
    412 PreconditionFailed when the key exists (the pinned release does, for the put-only
    upload user too: tests/stack/test_review_inputs.py).  minio-py's ``put_object`` turns
    unknown headers into user metadata, so the single-part PUT is sent with its lower-level
    call; the photo is at most VITRINE_IMAGE_MAX_BYTES, far under the 5 GiB of one part."""
    headers: DictType = {
        "Content-Type": content_type,
        "If-None-Match": "*",
        **metadata_headers(facts or {}),
    }
    try:
        written = client._put_object(bucket, key, data, headers=headers)
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            raise UploadRefused(409, "exists", f"{key} is already in the bucket") from None
        raise
    return Stored(
        key=key,
        etag=(written.etag or "").strip('"') or None,
        version_id=written.version_id,
        size=len(data),
        content_type=content_type,
    )


@dataclass(frozen=True)
class Photo:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class Received:
    data: bytes
    filename: str | None
    content_type: str | None
    fields: dict[str, str]
    photos: tuple[Photo, ...] = ()
    """Every file of the form, in order (the first is ``data``)."""


async def read_form(request: Request, limit: int, files: int = 1) -> Received:
    """The multipart form of an upload, read only after the caller was let in and never more
    than ``files`` x ``limit`` bytes of photos (plus the form's overhead): a declared length
    over it is refused before a byte is read, a body that grows past it while streaming is cut
    off, and so is a form with more files."""
    budget = limit * files
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > budget + FORM_OVERHEAD:
        raise UploadRefused(413, "image_too_large", f"over the limit of {budget} bytes")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRefused(415, "not_multipart", "send the photo as multipart/form-data")

    async def capped() -> AsyncGenerator[bytes, None]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > budget + FORM_OVERHEAD:
                raise UploadRefused(413, "image_too_large", f"over the limit of {budget} bytes")
            yield chunk

    parser = MultiPartParser(
        request.headers, capped(), max_files=files, max_fields=32, max_part_size=4096
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadRefused(422, "bad_form", f"unreadable form: {exc}") from None
    try:
        uploads = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if not uploads:
            raise UploadRefused(422, "no_file", "the form has no file field named 'file'")
        photos = tuple(
            [Photo(await u.read(limit + 1), u.filename, u.content_type) for u in uploads]
        )
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        first = photos[0]
        return Received(first.data, first.filename, first.content_type, fields, photos)
    finally:
        await form.close()
