"""Reading an upload's first bytes, for the uploads only their bytes can classify (rules.py).

One ranged GET, pinned to the event's version when the bucket is versioned and checked against
its ETag when not, so the bytes judged are the ones the event announced.  The MinIO client
blocks, so the read runs in a thread; transient faults (MinIO restarting, a reset connection,
5xx) are retried until it works or the service is asked to stop, the way the sink waits out a
database outage: the batch is delayed, never committed without its decision.  Permanent
outcomes are the exceptions of ``services/runtime/s3.py``, which the worker's fetch raises too,
so an object gone before ingest reads it ends with the row the worker would give it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from urllib3.exceptions import HTTPError

from schemas.messages import ObjectRef
from services.runtime.retry import transient
from services.runtime.s3 import MISSING_CODES, make_minio, open_object
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
