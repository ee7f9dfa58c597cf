"""Reading an upload's first bytes, for the uploads only their bytes can classify (rules.py).

One ranged GET, pinned to the event's version when the bucket is versioned and checked against
its ETag when not, so the bytes judged are the ones the event announced.  The MinIO client
blocks, so the read runs in a thread; transient faults (MinIO restarting, a reset connection,
5xx) are retried until it works or the service is asked to stop, the way the sink waits out a
database outage: the batch is delayed, never committed without its decision.  Permanent
outcomes are the exceptions of ``services/runtime/s3.py``, which the worker's fetch raises too,
so an object gone before ingest reads it ends with the row the worker would give it.

A removed manifest's folder is listed the same way (:func:`fetch_folder`), so its photos can
have their own cards again (rules.py ``decide_released``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

import urllib3
from minio import Minio
from minio.datatypes import Object
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError

from schemas.facts import META_PREFIX
from schemas.messages import ObjectRef
from services.ingest.rules import Listed
from services.runtime.retry import transient
from services.runtime.s3 import (
    MISSING_CODES,
    REFUSED_CODES,
    ObjectForbidden,
    make_minio,
    open_object,
)
from services.runtime.settings import S3Settings

TRANSIENT = (S3Error, ServerError, InvalidResponseError, HTTPError, OSError)
"""What a read may raise that another attempt can cure (permanent S3 codes are mapped first)."""


def head_client(settings: S3Settings) -> Minio:
    """A client that fails fast and leaves retrying to :func:`fetch_head`: minio's own pool
    waits up to 5 minutes to connect and retries silently, which would hold a whole batch of
    notifications without a log line saying why."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=30.0),
        maxsize=16,
        retries=urllib3.Retry(total=0, redirect=0),
    )
    return make_minio(settings, http_client=http)


def read_head(client: Minio, ref: ObjectRef, length: int) -> bytes:
    """Up to ``length`` bytes from the start of the object the event named (blocking)."""
    with open_object(client, ref, length=length, what="event") as response:
        return response.read(length)


def read_folder_manifest(
    client: Minio, bucket: str, key: str, limit: int
) -> tuple[bytes, datetime] | None:
    """The manifest at ``key`` as it is now (its first ``limit`` bytes) and when it was last
    written, or None when there is none (blocking)."""
    try:
        response = client.get_object(bucket, key, offset=0, length=limit)
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            return None
        raise
    try:
        modified = parsedate_to_datetime(response.headers.get("Last-Modified") or "")
        return response.read(limit), modified
    finally:
        response.close()
        response.release_conn()


async def fetch_folder_manifest(
    client: Minio, bucket: str, key: str, limit: int, *, stop: asyncio.Event | None = None
) -> tuple[bytes, datetime] | None:
    """:func:`read_folder_manifest` in a thread, retried through transient faults."""
    async for attempt in transient("s3.get_manifest", TRANSIENT, max_wait=10.0, stop_event=stop):
        with attempt:
            return await asyncio.to_thread(read_folder_manifest, client, bucket, key, limit)
    raise AssertionError("unreachable")


def list_folder(client: Minio, bucket: str, folder: str, most: int) -> tuple[list[Listed], bool]:
    """The first ``most`` entries directly in ``folder`` (sub-folders count as entries, as the
    listing gives them), and whether it had more (blocking).  MinIO's ``metadata=true``
    listing carries each object's user metadata and content type, so no object is read or
    HEADed; another S3 server lists neither (no facts; the name and first bytes decide).
    A missing bucket lists nothing; a refused listing is :class:`ObjectForbidden`."""
    listed: list[Listed] = []
    try:
        for obj in client.list_objects(bucket, prefix=folder, include_user_meta=True):
            if len(listed) == most:
                return listed, True
            listed.append(_listed(obj))
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            return [], False
        if exc.code in REFUSED_CODES:
            raise ObjectForbidden(f"listing {bucket}/{folder}: {exc.code}") from None
        raise
    return listed, False


def _listed(obj: Object) -> Listed:
    """A listing's entry as the rules read it (the metadata's keys as MinIO spells them)."""
    metadata = dict(obj.metadata or {})
    content_type = next((v for k, v in metadata.items() if k.lower() == "content-type"), None)
    user = {k: v for k, v in metadata.items() if k.lower().startswith(META_PREFIX)}
    return Listed(
        key=obj.object_name or "",
        size=obj.size,
        etag=obj.etag,
        content_type=content_type or obj.content_type,
        metadata=user,
    )


async def fetch_folder(
    client: Minio, bucket: str, folder: str, most: int, *, stop: asyncio.Event | None = None
) -> tuple[list[Listed], bool]:
    """:func:`list_folder` in a thread, retried through transient faults."""
    async for attempt in transient("s3.list_folder", TRANSIENT, max_wait=10.0, stop_event=stop):
        with attempt:
            return await asyncio.to_thread(list_folder, client, bucket, folder, most)
    raise AssertionError("unreachable")


async def fetch_head(
    client: Minio,
    ref: ObjectRef,
    length: int,
    *,
    stop: asyncio.Event | None = None,
    on_retry: Callable[[], object] | None = None,
) -> bytes:
    """:func:`read_head` in a thread, retried through transient faults (logged per attempt)
    until it works or ``stop`` is set (then the last fault is raised and the batch is read
    again by the next process)."""
    async for attempt in transient(
        "s3.get_head", TRANSIENT, max_wait=10.0, stop_event=stop, on_retry=on_retry
    ):
        with attempt:
            return await asyncio.to_thread(read_head, client, ref, length)
    raise AssertionError("unreachable")
