"""The exports page: the channels' feeds the export stage keeps, to download, and the approved
cards each channel leaves out.

The feeds live in the exports bucket (``services/export/store.py``); the page reads its
``manifest.json`` and offers what it names.  A download streams the object from the bucket
with the desk's MinIO user (read only there), and only a name of the exports layout is served:
a channel of the registry, then ``full.<suffix>``, ``problems.json``, ``delta/<stamp>.<suffix>``
or a file the manifest lists for that channel.  Anything else (``..``, an absolute path, another
bucket, a NUL, an overlong name, an unknown channel) is a 404 before the bucket is asked, so a
download link cannot be turned into a read of the photos' bucket or of another object.

Who may: anyone signed in (the feeds hold only approved cards, which a viewer reads anyway); a
stranger is sent to the login page, as by every page.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from minio import Minio
from minio.error import S3Error
from psycopg.rows import dict_row
from pydantic import BaseModel
from urllib3.exceptions import HTTPError

from schemas.taxonomy import Taxonomy
from services.export.channels import CHANNELS
from services.export.shop import ShopSettings
from services.export.source import listings_from_rows
from services.export.store import MANIFEST, read_manifest
from services.review.channels import ChannelProblem, verdicts_of
from services.review.desk import desk_of
from services.review.pages import render
from services.review.security import page_session

log = logging.getLogger("vitrine.review")
router = APIRouter(include_in_schema=False)

NAME_MAX = 200
"""Longest object name the desk serves (its own layout's are far shorter)."""
STAMP = r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z"  # store.STAMP as written
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
"""What any served name is made of: ASCII segments that start with a letter or digit (no
``..``, no empty or absolute path, no control character, no backslash or percent)."""
CHUNK = 64 * 1024
LEFT_OUT_MAX = 1000
"""The most approved cards the page judges per request (the newest approvals); the export
stage's ``<channel>/problems.json`` holds every one."""
NO_FEED = "no feed written yet: the export service writes them after the first approval"

APPROVED_SQL = """
SELECT bucket, object_key, coalesce(approved_card, edited_card, card) AS card,
       edited_card IS NOT NULL AS edited, facts, photo_keys, main_photo, reviewed_at
FROM product_cards
WHERE status = 'done' AND review_state = 'approved' AND bucket = %(bucket)s
ORDER BY reviewed_at DESC, object_key
LIMIT %(limit)s
"""
"""The export stage's ``source.APPROVED_ROWS`` (the same card: the approved one), newest first;
written out here because the static-SQL check (tests/stack/test_security.py) reads one module."""


def fixed_names(channel: str) -> re.Pattern[str] | None:
    """The names every channel's folder holds (store.py's layout); None: no such channel."""
    found = CHANNELS.get(channel)
    if found is None:
        return None
    suffix = re.escape(found.suffix)
    return re.compile(rf"full\.{suffix}|problems\.json|delta/{STAMP}\.{suffix}")


def well_formed(name: str) -> bool:
    return len(name) <= NAME_MAX and SAFE_NAME.fullmatch(name) is not None


def listed_files(manifest: Mapping[str, Any] | None, channel: str) -> list[str]:
    """The channel's further files the manifest names (``gmc/products.json``), well formed and
    in the channel's folder only."""
    if not manifest:
        return []
    info = (manifest.get("channels") or {}).get(channel)
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, list):
        return []
    prefix = f"{channel}/"
    return [f for f in files if isinstance(f, str) and f.startswith(prefix) and well_formed(f)]


def servable(channel: str, name: str, manifest: Mapping[str, Any] | None) -> str | None:
    """The object name ``<channel>/<name>`` when the desk serves it, else None."""
    pattern = fixed_names(channel)
    if pattern is None or not well_formed(name):
        return None
    object_name = f"{channel}/{name}"
    if pattern.fullmatch(name) or object_name in listed_files(manifest, channel):
        return object_name
    return None


def download_url(object_name: str) -> str:
    return "/exports/" + quote(object_name, safe="/")


class Download(BaseModel):
    label: str
    name: str
    url: str


class ChannelFeeds(BaseModel):
    """One channel as the page shows it."""

    name: str
    title: str
    written: bool
    listed: int | None = None
    left_out: int | None = None
    delta_listed: int | None = None
    downloads: list[Download] = []


class LeftOut(BaseModel):
    """An approved card a channel leaves out, and why."""

    bucket: str
    key: str
    product_name: str
    problems: list[ChannelProblem]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def channel_feeds(manifest: Mapping[str, Any] | None) -> list[ChannelFeeds]:
    """Each channel of the registry, with what the manifest says of it (nothing it names
    that the desk would not serve)."""
    out = []
    channels = (manifest or {}).get("channels")
    channels = channels if isinstance(channels, dict) else {}
    for name, channel in CHANNELS.items():
        info = channels.get(name)
        if not isinstance(info, dict):
            out.append(ChannelFeeds(name=name, title=channel.title, written=False))
            continue
        downloads = []
        named = [("full feed", info.get("full")), ("latest delta", info.get("delta"))]
        named.append(("problems", info.get("problems")))
        named += [(f.rsplit("/", 1)[-1], f) for f in listed_files(manifest, name)]
        for label, object_name in named:
            if not isinstance(object_name, str) or not object_name.startswith(f"{name}/"):
                continue
            if servable(name, object_name[len(name) + 1 :], manifest) == object_name:
                downloads.append(
                    Download(label=label, name=object_name, url=download_url(object_name))
                )
        out.append(
            ChannelFeeds(
                name=name,
                title=channel.title,
                written=True,
                listed=_count(info.get("listed")),
                left_out=_count(info.get("left_out")),
                delta_listed=_count(info.get("delta_listed")),
                downloads=downloads,
            )
        )
    return out


def judge(
    rows: Sequence[Mapping[str, Any]], tree: Taxonomy, shop: ShopSettings
) -> tuple[dict[str, list[LeftOut]], list[tuple[str, str]]]:
    """Per channel, the approved cards it leaves out with their problems; the rows that are
    no card any more.  The export stage's judgement (``build_feed``), card by card."""
    listings, skipped = listings_from_rows(rows, tree)
    out: dict[str, list[LeftOut]] = {name: [] for name in CHANNELS}
    for listing in listings:
        for verdict in verdicts_of(listing, shop):
            if not verdict.ready:
                out[verdict.channel].append(
                    LeftOut(
                        bucket=listing.bucket,
                        key=listing.key,
                        product_name=listing.card.product_name,
                        problems=verdict.problems,
                    )
                )
    return out, skipped


class Unreadable(Exception):
    """The exports bucket did not answer, or refused the desk's user."""


def manifest_of(client: Minio, bucket: str) -> dict[str, Any] | None:
    """The manifest; None when nothing was written yet (no bucket, no manifest) or the bucket
    refuses the desk (a missing object reads as refused to a user without ListBucket)."""
    try:
        return read_manifest(client, bucket)
    except S3Error as exc:
        if exc.code == "AccessDenied":
            return None
        raise Unreadable(exc.code) from None
    except (HTTPError, OSError, ValueError) as exc:
        raise Unreadable(type(exc).__name__) from None


@router.get("/exports")
async def exports_page(request: Request) -> Response:
    session = await page_session(request)
    desk = desk_of(request)
    settings = desk.settings
    error = None
    try:
        manifest = await asyncio.to_thread(manifest_of, desk.images, settings.exports_bucket)
    except Unreadable as exc:
        log.warning("review.exports_unreadable", extra={"error": str(exc)})
        manifest, error = None, f"the exports bucket did not answer ({exc}): try again shortly"
    async with desk.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(APPROVED_SQL, {"bucket": settings.bucket, "limit": LEFT_OUT_MAX + 1})
        rows = await cur.fetchall()
    more = len(rows) > LEFT_OUT_MAX
    left_out, skipped = await asyncio.to_thread(judge, rows[:LEFT_OUT_MAX], desk.tree, settings)
    generated = manifest.get("generated_at") if manifest else None
    return render(
        "exports.html",
        200,
        user=session.user,
        csrf=session.csrf_token,
        manifest=manifest is not None,
        generated_at=generated if isinstance(generated, str) else None,
        manifest_url=download_url(MANIFEST) if manifest is not None else None,
        exports_bucket=settings.exports_bucket,
        bucket=settings.bucket,
        channels=channel_feeds(manifest),
        titles={name: c.title for name, c in CHANNELS.items()},
        left_out=left_out,
        skipped=skipped,
        more=more,
        judged_max=LEFT_OUT_MAX,
        no_feed=NO_FEED,
        error=error,
    )


def _not_served(session_user: Any, csrf: str, why: str, status: int = 404) -> Response:
    return render("error.html", status, user=session_user, csrf=csrf, message=why)


def _stream(client: Minio, bucket: str, name: str) -> Any:
    return client.get_object(bucket, name)


async def _download(request: Request, object_name: str | None) -> Response:
    """Stream one object of the exports bucket (``object_name`` checked by the caller; None:
    refused)."""
    session = await page_session(request)
    if object_name is None:
        return _not_served(session.user, session.csrf_token, "no such feed file")
    desk = desk_of(request)
    try:
        answer = await asyncio.to_thread(
            _stream, desk.images, desk.settings.exports_bucket, object_name
        )
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "AccessDenied", "NoSuchObject"):
            return _not_served(session.user, session.csrf_token, "no such feed file (yet)")
        log.warning("review.export_unreadable", extra={"key": object_name, "error": exc.code})
        return _not_served(session.user, session.csrf_token, "the exports bucket refused", 502)
    except (HTTPError, OSError) as exc:
        log.warning("review.export_unreadable", extra={"key": object_name, "error": repr(exc)})
        return _not_served(session.user, session.csrf_token, "the exports bucket is away", 503)

    def body() -> Iterator[bytes]:
        try:
            yield from answer.stream(CHUNK)
        finally:
            answer.close()
            answer.release_conn()

    filename = object_name.rsplit("/", 1)[-1]  # SAFE_NAME: no quote or control character
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    length = answer.headers.get("Content-Length")
    if length and length.isdigit():
        headers["Content-Length"] = length
    media_type = answer.headers.get("Content-Type") or "application/octet-stream"
    return StreamingResponse(body(), media_type=media_type, headers=headers)


@router.get("/exports/manifest.json")
async def download_manifest(request: Request) -> Response:
    return await _download(request, MANIFEST)


@router.get("/exports/{channel}/{name:path}")
async def download(request: Request, channel: str, name: str) -> Response:
    await page_session(request)  # a stranger: the login page, before anything is looked at
    manifest = None
    pattern = fixed_names(channel)
    if pattern is not None and well_formed(name) and not pattern.fullmatch(name):
        desk = desk_of(request)  # maybe a further file the manifest lists (gmc/products.json)
        try:
            manifest = await asyncio.to_thread(
                manifest_of, desk.images, desk.settings.exports_bucket
            )
        except Unreadable:
            manifest = None
    return await _download(request, servable(channel, name, manifest))
