"""The exports bucket: each channel's full feed, its deltas, its problems, and a manifest.

Layout (a channel fetches these on its schedule; the desk offers them for download)::

    manifest.json                      what was written last: when, counts, object names
    <channel>/full.<suffix>            every approved card the channel takes (replaced)
    <channel>/delta/<stamp>.<suffix>   the cards of one batch of approvals (never replaced)
    <channel>/problems.json            every approved card the channel leaves out, and why
    gmc/products.json                  the Merchant API's products (ProductInput objects)
    jsonld/items/<id>.jsonld           one card's JSON-LD (a card no longer listed is removed)

Each object is replaced whole by one PUT (S3 has no partial object), and the manifest is
written last, so a reader that starts from it never names a file of an older write.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from minio import Minio
from minio.deleteobjects import DeleteObject

from services.export.channels import Feed

MANIFEST = "manifest.json"
STAMP = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class ChannelWrite:
    """What one batch writes for one channel."""

    full: Feed
    delta: Feed | None  # None: the batch approved nothing this channel takes


def problems_document(feed: Feed) -> dict[str, Any]:
    return {
        "channel": feed.channel.name,
        "title": feed.channel.title,
        "left_out": [
            {
                "bucket": e.listing.bucket,
                "key": e.listing.key,
                "item_id": e.listing.item_id,
                "product_name": e.listing.card.product_name,
                "problems": [{"field": p.field, "rule": p.rule} for p in e.problems],
            }
            for e in feed.left_out
        ],
    }


def _put(client: Minio, bucket: str, name: str, body: bytes, content_type: str) -> None:
    client.put_object(bucket, name, io.BytesIO(body), len(body), content_type=content_type)


def _prune(client: Minio, bucket: str, prefix: str, keep: set[str]) -> int:
    """Remove the objects under ``prefix`` not in ``keep`` (a card's file after it left)."""
    stale = [
        DeleteObject(o.object_name)
        for o in client.list_objects(bucket, prefix=prefix, recursive=True)
        if o.object_name is not None and o.object_name not in keep
    ]
    if not stale:
        return 0
    errors = list(client.remove_objects(bucket, stale))
    if errors:
        raise OSError(f"could not remove {len(errors)} stale object(s): {errors[0]}")
    return len(stale)


def write_feeds(
    client: Minio,
    bucket: str,
    writes: Sequence[ChannelWrite],
    at: datetime,
    skipped: Sequence[tuple[str, str]],
    last_review_id: int | None,
) -> dict[str, Any]:
    """Write every channel's files, then the manifest; returns the manifest."""
    stamp = at.strftime(STAMP)
    channels: dict[str, Any] = {}
    for write in writes:
        feed = write.full
        channel = feed.channel
        folder = channel.name
        full = f"{folder}/full.{channel.suffix}"
        _put(client, bucket, full, feed.body, channel.content_type)
        problems = f"{folder}/problems.json"
        body = json.dumps(problems_document(feed), ensure_ascii=False, indent=1).encode()
        _put(client, bucket, problems, body, "application/json")
        extra: list[str] = []
        for name, data in sorted(feed.extra.items()):
            kind = "application/json" if name.endswith(".json") else channel.content_type
            _put(client, bucket, f"{folder}/{name}", data, kind)
            extra.append(f"{folder}/{name}")
        if any(name.startswith("items/") for name in feed.extra):
            _prune(client, bucket, f"{folder}/items/", set(extra))
        delta = None
        if write.delta is not None:
            delta = f"{folder}/delta/{stamp}.{channel.suffix}"
            _put(client, bucket, delta, write.delta.body, channel.content_type)
        channels[folder] = {
            "title": channel.title,
            "content_type": channel.content_type,
            "full": full,
            "delta": delta,
            "problems": problems,
            "files": [f for f in extra if not f.startswith(f"{folder}/items/")],
            "items": sum(1 for f in extra if f.startswith(f"{folder}/items/")),
            "listed": len(feed.listed),
            "left_out": len(feed.left_out),
            "delta_listed": len(write.delta.listed) if write.delta is not None else 0,
        }
    manifest = {
        "generated_at": at.isoformat(),
        "last_review_id": last_review_id,
        "unreadable": [{"key": k, "why": why} for k, why in skipped],
        "channels": channels,
    }
    body = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
    _put(client, bucket, MANIFEST, body, "application/json")
    return manifest


def read_manifest(client: Minio, bucket: str) -> dict[str, Any] | None:
    """The manifest, or None when nothing was written yet."""
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, MANIFEST)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        data = json.loads(response.read())
    finally:
        response.close()
        response.release_conn()
    return data if isinstance(data, dict) else None
