"""Reading objects by key from MinIO (or any S3-compatible server), streamed and size-capped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error
from urllib3 import BaseHTTPResponse

from schemas.messages import ObjectRef
from services.runtime.settings import S3Settings

CHUNK = 1024 * 1024
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion"})
# Permanent refusals: retrying cannot turn them into a read.
REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "XMinioInvalidObjectName",
        "XMinioInvalidResourceName",
        "InvalidObjectName",
        "KeyTooLongError",
    }
)


class ObjectMissing(Exception):
    """The object (or that version of it) is gone: deleted after its event was raised."""


class ObjectForbidden(Exception):
    """Access denied, or a key the client refuses: retrying cannot help, the job fails."""


class ObjectTooLarge(Exception):
    """The object grew past the byte limit; stops reading instead of buffering it all."""


class ObjectChanged(Exception):
    """The object was overwritten after this job's event; a newer job covers the new content."""


def make_minio(settings: S3Settings, http_client: urllib3.PoolManager | None = None) -> Minio:
    """``http_client``: the minio package's own (patient retries) unless one is given."""
    url = urlparse(settings.s3_endpoint)
    return Minio(
        url.netloc or url.path,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        secure=url.scheme == "https",
        region=settings.s3_region,
        http_client=http_client,
    )


@contextlib.contextmanager
def open_object(
    client: Minio, ref: ObjectRef, *, length: int = 0, what: str = "job"
) -> Iterator[BaseHTTPResponse]:
    """The object's response (its first ``length`` bytes; 0: all of it), with S3's refusals
    mapped to this module's exceptions; released on exit.

    Without a version id (unversioned buckets), the ETag pins the content: a mismatch means the
    object was overwritten and this ``what`` (a job, an event) describes bytes that no longer
    exist.
    """
    try:
        response = client.get_object(
            ref.bucket, ref.key, offset=0, length=length, version_id=ref.version_id
        )
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            raise ObjectMissing(f"{ref.bucket}/{ref.key}: {exc.code}") from None
        if exc.code in REFUSED_CODES:
            raise ObjectForbidden(f"{ref.bucket}/{ref.key}: {exc.code}") from None
        raise
    except ValueError as exc:  # the client refuses the key itself (e.g. ".." segments)
        raise ObjectForbidden(f"invalid object key: {exc}") from None
    try:
        etag = (response.headers.get("ETag") or "").strip('"')
        if ref.version_id is None and ref.etag and etag and etag != ref.etag.strip('"'):
            raise ObjectChanged(f"ETag is now {etag}, the {what} was for {ref.etag}")
        yield response
    finally:
        response.close()
        response.release_conn()


def read_object(client: Minio, ref: ObjectRef, max_bytes: int) -> bytes:
    """The object's bytes, read in chunks, refusing more than ``max_bytes``."""
    with open_object(client, ref) as response:
        parts: list[bytes] = []
        total = 0
        for chunk in response.stream(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise ObjectTooLarge(f"over {max_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)
