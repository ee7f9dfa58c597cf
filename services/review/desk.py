"""The desk's shared state and the operations both the pages and the API perform.

One ``Desk`` per process: the database pool (role vitrine_review), the two MinIO clients (read
only for photos, put only for uploads), the Kafka producer (approved cards, regeneration jobs),
the outbox publisher, and the deployment's card contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import Request
from minio import Minio
from minio.error import S3Error
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from schemas.api import CardView, ReviewEvent
from schemas.card import ProductCard
from schemas.facts import GivenFacts
from schemas.messages import Checks, ImageJob, ObjectRef
from schemas.products import MANIFEST_NAME
from schemas.taxonomy import Taxonomy
from services.inference.image.preprocess import ImageLimits
from services.review import decisions, images, listing
from services.review import uploads as upload_rules
from services.review.accounts import LoginLimiter, User
from services.review.channels import (
    CardWithChannels,
    ChannelVerdict,
    card_verdicts,
    with_channels,
)
from services.review.edits import changed_fields
from services.review.publisher import Publisher
from services.review.settings import ReviewSettings
from services.runtime.kafka import encode, make_producer, with_retry
from services.runtime.object_keys import object_path
from services.runtime.s3 import make_minio

log = logging.getLogger("vitrine.review")
# MinIO's answers for a key it cannot hold (the key rule refuses these before they get here)
NOT_A_KEY = ("XMinioInvalidObjectName", "KeyTooLongError")


def public_url(settings: ReviewSettings) -> str:
    """Where clients reach the desk: VITRINE_REVIEW_PUBLIC_URL, else its own address; never a
    request's Host header, which any client sets to anything."""
    configured = settings.review_public_url.strip().rstrip("/")
    if configured:
        return configured
    host = settings.review_host
    if host in ("0.0.0.0", "::", ""):  # a wildcard bind is no address a client can use
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{settings.review_port}"


def status_url(settings: ReviewSettings, bucket: str, key: str) -> str:
    """An object's ``GET /v1/cards/...`` URL, each segment percent-encoded (RFC 3986): plain
    ASCII for a ``Location`` header, and ``?``, ``#`` or ``%2e%2e`` in a key stay part of the
    key instead of pointing elsewhere."""
    return f"{public_url(settings)}/v1/cards/{object_path(bucket, key)}"


def card_view(row: dict[str, Any], events: list[dict[str, Any]] | None = None) -> CardView:
    current = decisions.effective(row)
    model = row.get("card")
    approved = row.get("approved_card")
    since = (
        changed_fields(approved, current)
        if approved and row["review_state"] == "pending" and current
        else []
    )
    return CardView(
        bucket=row["bucket"],
        key=row["object_key"],
        status=row["status"],
        reason=row.get("reason"),
        detail=row.get("detail"),
        review_state=row["review_state"],
        reviewed_by=row.get("reviewed_by"),
        reviewed_at=row.get("reviewed_at"),
        review_note=row.get("review_note"),
        card=ProductCard.model_validate(current) if current else None,
        model_card=ProductCard.model_validate(model) if model else None,
        edited=row.get("edited_card") is not None,
        edited_fields=changed_fields(model, current) if model and current else [],
        changed_since_approval=since,
        checks=Checks.model_validate(row["checks"]) if row.get("checks") else None,
        facts=GivenFacts.model_validate(row["facts"]) if row.get("facts") else None,
        photo_keys=row.get("photo_keys"),
        main_photo=row.get("main_photo"),
        model_id=row.get("model_id"),
        prompt_version=row.get("prompt_version"),
        updated_at=row.get("updated_at"),
        rev=row.get("review_rev", 0),
        history=[ReviewEvent.model_validate(e) for e in events or []],
    )


@dataclass
class Desk:
    settings: ReviewSettings
    pool: AsyncConnectionPool[Any]
    images: Minio
    uploads: Minio
    producer: AIOKafkaProducer
    card_type: type[ProductCard]
    tree: Taxonomy
    limiter: LoginLimiter
    publisher: Publisher
    producer_ready: asyncio.Event = field(default_factory=asyncio.Event)
    leaf_paths: tuple[str, ...] = ()  # the card form's category choices, listed once
    _facets: tuple[float, dict[str, list[str]]] | None = None

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.settings.image_max_bytes)

    def status_url(self, bucket: str, key: str) -> str:
        """The object's ``GET /v1/cards/...`` URL: :func:`status_url`."""
        return status_url(self.settings, bucket, key)

    async def facets(self) -> dict[str, list[str]]:
        """Filter menu values, refreshed at most every 30 s (a DISTINCT over the table)."""
        now = time.monotonic()
        if self._facets is None or now - self._facets[0] > 30:
            async with self.pool.connection() as conn:
                self._facets = (now, await listing.facets(conn))
        return self._facets[1]

    async def card(
        self, bucket: str, key: str, *, with_history: bool = True
    ) -> CardWithChannels | None:
        """The card's view, with each channel's verdict on it (the API's answer)."""
        async with self.pool.connection() as conn:
            row = await listing.card_row(conn, bucket, key)
            if row is None:
                return None
            events = await listing.history(conn, bucket, key) if with_history else []
        return with_channels(card_view(row, events), self.verdicts(row))

    def verdicts(self, row: Mapping[str, Any] | None) -> list[ChannelVerdict]:
        """Each channel's verdict on the row's card as it stands, with the shop's settings."""
        return card_verdicts(row, self.tree, self.settings)

    async def rendition(self, bucket: str, key: str, side: int) -> Path | None:
        async with self.pool.connection() as conn:
            row = await listing.object_row(conn, bucket, key)
        if row is None:
            return None
        ref = ObjectRef.from_row(row)
        return await asyncio.to_thread(
            images.rendition, self.images, self.settings.thumb_dir, ref, side, self.limits
        )

    def _exists(self, key: str) -> bool:
        try:
            self.images.stat_object(self.settings.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound", *NOT_A_KEY):
                return False
            raise

    async def exists(self, key: str) -> bool:
        """Whether the pipeline's bucket has ``key`` (a HEAD with the read-only user)."""
        return await asyncio.to_thread(self._exists, key)

    async def upload_product(
        self, received: upload_rules.Received, folder: str | None, prefix: str
    ) -> tuple[upload_rules.Stored, list[str]]:
        """A product: each photo checked like one upload, the facts like ingest checks them,
        then the photos stored in a folder of their own and ``product.json`` last, naming them
        in the form's order (schemas/products.py): ingest starts the card only then.  Returns
        the manifest as stored and the photos' keys."""
        limit = self.settings.image_max_bytes
        photos = received.photos
        most = self.settings.product_max_photos
        if len(photos) > most:
            raise upload_rules.UploadRefused(
                413, "too_many_photos", f"{len(photos)} photos; at most {most}"
            )
        types = [upload_rules.check(p.data, p.content_type, p.filename, limit) for p in photos]
        facts = upload_rules.facts_of(received.fields)
        main = received.fields.get("main", "1").strip() or "1"
        if not main.isdigit() or not 1 <= int(main) <= len(photos):
            raise upload_rules.UploadRefused(
                422, "bad_form", f"main must be a photo's position, 1 to {len(photos)}", "main"
            )
        target = upload_rules.product_folder(prefix, folder)
        names = upload_rules.product_names(photos)
        keys = []
        for name, photo, content_type in zip(names, photos, types, strict=True):
            stored = await asyncio.to_thread(
                upload_rules.store,
                self.uploads,
                self.settings.bucket,
                target + name,
                photo.data,
                content_type,
            )
            keys.append(stored.key)
        manifest = {"photos": names, "main": names[int(main) - 1], "facts": facts}
        body = json.dumps(manifest, ensure_ascii=False).encode()
        stored = await asyncio.to_thread(
            upload_rules.store,
            self.uploads,
            self.settings.bucket,
            target + MANIFEST_NAME,
            body,
            "application/json",
        )
        return stored, keys

    async def upload(
        self, received: upload_rules.Received, key: str | None, prefix: str
    ) -> upload_rules.Stored:
        """Check a received photo against ingest's limits, its key against ingest's key rule
        and its facts against their rules, and put it into the bucket with the put-only user,
        the facts as its user metadata; a key that exists is refused (409) by the bucket
        itself, never overwritten (:func:`uploads.store`)."""
        limit = self.settings.image_max_bytes
        content_type = upload_rules.check(
            received.data, received.content_type, received.filename, limit
        )
        facts = upload_rules.facts_of(received.fields)
        object_key = upload_rules.object_key(received.filename, prefix, key)
        return await asyncio.to_thread(
            upload_rules.store,
            self.uploads,
            self.settings.bucket,
            object_key,
            received.data,
            content_type,
            facts,
        )

    async def enqueue_regeneration(self, bucket: str, key: str) -> None:
        """One job for the object as the row knows it, as `vitrine reprocess` sends."""
        async with self.pool.connection() as conn:
            row = await listing.object_row(conn, bucket, key)
        if row is None:
            raise LookupError(f"no row for {bucket}/{key}")
        facts = GivenFacts.model_validate(row["facts"]) if row.get("facts") else None
        job = ImageJob.reprocess(ObjectRef.from_row(row), facts)
        await asyncio.wait_for(self.producer_ready.wait(), 15)
        await self.producer.send_and_wait(
            self.settings.topic_jobs, key=job.object.message_key, value=encode(job)
        )

    async def approve(
        self,
        conn: AsyncConnection[Any],
        user: User,
        bucket: str,
        key: str,
        *,
        note: str | None,
        expected_rev: int | None,
        changes: Mapping[str, Any] | None = None,
    ) -> None:
        """Approve the card under the deployment's contract, and have the publisher send it at
        once rather than at its next poll."""
        await decisions.approve(
            conn,
            self.card_type,
            user,
            bucket,
            key,
            note=note,
            expected_rev=expected_rev,
            changes=changes,
        )
        self.publisher.nudge()

    async def bulk_approve(
        self, conn: AsyncConnection[Any], user: User, keys: Sequence[tuple[str, str]], note: str
    ) -> list[int]:
        """:func:`decisions.bulk_approve`, the publisher woken as for one approval."""
        ids = await decisions.bulk_approve(conn, user, keys, note=note)
        self.publisher.nudge()
        return ids


def desk_of(request: Request) -> Desk:
    """The process's desk, which the app's lifespan opened (for the pages and the API alike)."""
    desk: Desk = request.app.state.desk
    return desk


@contextlib.asynccontextmanager
async def open_desk(settings: ReviewSettings) -> AsyncIterator[Desk]:
    """Everything the desk holds, opened; the publisher running until the block exits."""
    contract = settings.card_contract()  # the workers' card: the same variables, read here
    tree = contract.tree()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_dsn.get_secret_value(),
        min_size=2,
        max_size=10,
        kwargs={"autocommit": True},
        open=False,
        name="review",
    )
    await pool.open(wait=True, timeout=60)
    producer = make_producer(settings)
    publisher = Publisher(
        pool, producer, settings.topic_approved, settings.review_publish_interval_s
    )
    desk = Desk(
        settings=settings,
        pool=pool,
        images=make_minio(settings),
        uploads=make_minio(settings.upload_s3()),
        producer=producer,
        card_type=contract.card_type(),
        tree=tree,
        limiter=LoginLimiter(
            settings.review_login_attempts,
            settings.review_login_window_s,
            settings.review_login_attempts_per_address,
        ),
        publisher=publisher,
        leaf_paths=tuple(leaf.path_text for leaf in tree.leaves),
    )
    stop = asyncio.Event()

    async def kafka() -> None:
        await with_retry("producer.start", producer.start, max_seconds=float("inf"))
        desk.producer_ready.set()
        await publisher.run(stop)

    task = asyncio.create_task(kafka(), name="review-publisher")
    try:
        yield desk
    finally:
        stop.set()
        publisher.nudge()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
        task.cancel()
        if desk.producer_ready.is_set():
            await producer.stop()
        await pool.close()
