"""Deciding what one bucket notification means for the pipeline.

Pure functions, no I/O: a record becomes a job (plus a ``queued`` result so the row exists at
once), a rejection with a precise reason, a deletion, or nothing.  An upload whose key breaks
the key rule (services/runtime/object_keys.py: control characters, dot segments, ...) is
rejected ``bad_key`` before anything else is judged.  Content is judged by name and
declared type; only when both are silent (a generic type such as ``binary/octet-stream`` under a
name without an image extension: what boto3 and ``aws s3 cp`` send for an unknown name) is the
decision left to the object's first bytes, which the service reads and hands back to
:func:`decide_from_head`.  The inference service decodes the bytes and rejects what lies.
A removed manifest hands the photos of its folder back to cards of their own
(:func:`decide_released`, from a listing the service makes).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas.facts import GivenFacts, facts_from_metadata
from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef, S3Record
from schemas.products import (
    MANIFEST_NAME,
    ProductManifest,
    ProductSpec,
    manifest_folder,
    read_manifest,
)
from schemas.reasons import Reason
from services.runtime.object_keys import key_problem
from services.runtime.sniff import Identified, identify
from services.runtime.upload_rules import NeedsSniffing, classify_upload

# Creates that write new bytes.  MinIO's ``s3:ObjectCreated:*`` also covers metadata-only events
# (PutTagging, DeleteTagging, PutRetention, PutLegalHold) that must not re-queue a card.
UPLOAD_EVENTS = frozenset(
    {
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
    }
)
# MinIO's event for a DELETE of a key or version that does not exist: nothing was removed.
REMOVED_NOTHING = "s3:ObjectRemoved:NoOP"
RELEASED_MOST = 100
"""The entries of a removed manifest's folder listed at most (a manifest names at most
``PHOTOS_MOST``; the bound keeps one event from becoming a bucket scan)."""


@dataclass(frozen=True)
class Sniff:
    """An upload waiting for its first bytes: the service reads up to ``HEAD_BYTES`` of
    ``ref`` and hands them to :func:`decide_from_head` (or a failed read to
    :func:`decide_unread`); the ids are fixed here so the final decision keeps them."""

    ref: ObjectRef
    job_id: uuid.UUID
    trace_id: str
    declared: str
    facts: GivenFacts | None = None


@dataclass(frozen=True)
class Decision:
    job: ImageJob | None
    result: CardResult | None
    sniff: Sniff | None = None
    manifest: Sniff | None = None
    """A product's manifest to read whole (schemas/products.py), then :func:`decide_manifest`."""
    others: tuple[CardResult, ...] = ()
    """Results for other objects: the photos a manifest groups into its product."""
    released: ObjectRef | None = None
    """A removed manifest: its folder to list, then :func:`decide_released` for its photos."""


@dataclass(frozen=True)
class Listed:
    """One entry of a folder listing, with what an upload event would have said of it: the
    listing alone gives it (MinIO lists user metadata and content type on request)."""

    key: str
    size: int | None
    etag: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The object's ``X-Amz-Meta-*`` entries (the shop's facts, schemas/facts.py)."""


def classify_head(head: bytes, sniff: Sniff) -> tuple[Identified, tuple[Reason, str] | None]:
    """What the first bytes are, and ``(reason, detail)`` when they cannot be a usable image.

    Bytes that start like a format the worker decodes go on to it (which still decodes them
    in full); a format it does not decode is a ``bad_image``, as the worker would call it;
    anything else is ``not_an_image``, named when the bytes are recognised."""
    if not head:
        return Identified("not_an_image", "nothing"), (
            Reason.empty_object,
            "the object is empty (0 bytes)",
        )
    size = sniff.ref.size
    found = identify(head, truncated=size is None or size > len(head))
    if found.kind == "image":
        return found, None
    if found.kind == "unsupported_image":
        return found, (Reason.bad_image, f"{sniff.declared}: the first bytes are {found.what}")
    if found.kind == "not_an_image":
        return found, (
            Reason.not_an_image,
            f"{sniff.declared}: the first bytes are {found.what}, not an image",
        )
    return found, (
        Reason.not_an_image,
        f"{sniff.declared}: the first bytes match no supported image format",
    )


def decide_from_head(sniff: Sniff, head: bytes) -> tuple[Identified, Decision]:
    """The decision the first bytes make, and what they were (for the log and the metric)."""
    found, problem = classify_head(head, sniff)
    if problem is None:
        return found, _accepted(sniff.ref, sniff.job_id, sniff.trace_id, sniff.facts)
    reason, detail = problem
    return found, _final(
        sniff.ref, sniff.job_id, sniff.trace_id, CardStatus.rejected, reason, detail, sniff.facts
    )


def decide_unread(sniff: Sniff, status: CardStatus, reason: Reason, detail: str) -> Decision:
    """The final row of an upload whose first bytes could not be read for good (gone,
    overwritten, forbidden): the same status and reason the worker gives such an object."""
    return _final(sniff.ref, sniff.job_id, sniff.trace_id, status, reason, detail, sniff.facts)


def _final(
    ref: ObjectRef,
    job_id: uuid.UUID,
    trace_id: str,
    status: CardStatus,
    reason: Reason,
    detail: str,
    facts: GivenFacts | None = None,
) -> Decision:
    result = CardResult(
        job_id=job_id,
        trace_id=trace_id,
        object=ref,
        status=status,
        reason=reason,
        detail=detail,
        facts=facts,
        producer="ingest",
    )
    return Decision(None, result)


def _accepted(
    ref: ObjectRef,
    job_id: uuid.UUID,
    trace_id: str,
    facts: GivenFacts | None = None,
    product: ProductSpec | None = None,
) -> Decision:
    """A job, and its ``queued`` row at once; the shop's facts (and a product's photos) on
    both: the row shows them while the card is made, and whatever becomes of it."""
    job = ImageJob(job_id=job_id, trace_id=trace_id, object=ref, facts=facts, product=product)
    queued = CardResult(
        job_id=job_id,
        trace_id=trace_id,
        object=ref,
        status=CardStatus.queued,
        facts=facts,
        product=product,
        producer="ingest",
    )
    return Decision(job, queued)


EMPTY_MANIFEST = (CardStatus.rejected, Reason.empty_object, "the manifest is empty (0 bytes)")


def decide_manifest(sniff: Sniff, data: bytes, max_photos: int) -> Decision:
    """A product's manifest, read: the product's job and ``queued`` row (the manifest's key),
    and each photo it names ``grouped`` into it; or the manifest ``rejected`` with why."""
    if not data:
        return _final(sniff.ref, sniff.job_id, sniff.trace_id, *EMPTY_MANIFEST, sniff.facts)
    manifest, problem = read_manifest(data)
    if manifest is not None and len(manifest.photos) > max_photos:
        problem = (
            f"the manifest names {len(manifest.photos)} photos; a card reads at most "
            f"{max_photos} (VITRINE_PRODUCT_MAX_PHOTOS)"
        )
    ref = sniff.ref
    folder = manifest_folder(ref.key) or ""
    keys = [folder + name for name in manifest.photos] if manifest else []
    bad = next((p for p in (key_problem(k) for k in keys) if p), None)
    if manifest is None or problem or bad:
        detail = problem or f"a photo's key breaks the key rule: {bad}"
        return _final(
            ref, sniff.job_id, sniff.trace_id, CardStatus.rejected, Reason.bad_manifest, detail
        )
    given = facts_from_metadata(manifest.facts) if manifest.facts else sniff.facts
    spec = ProductSpec(photos=keys, main=manifest.main_index)
    accepted = _accepted(ref, sniff.job_id, sniff.trace_id, given, spec)
    grouped = tuple(
        CardResult(
            job_id=ImageJob.job_id_for(photo),
            trace_id=sniff.trace_id,
            object=photo,
            status=CardStatus.grouped,
            detail=f"part of product {ref.key}",
            producer="ingest",
        )
        for photo in (
            ObjectRef(
                bucket=ref.bucket, key=key, sequencer=ref.sequencer, event_time=ref.event_time
            )
            for key in keys
        )
    )
    return Decision(accepted.job, accepted.result, others=grouped)


def photo_folder(key: str) -> str | None:
    """The folder a photo may belong to a product of (``shop-42/123/``), or None for a key
    without one or a manifest's own."""
    if "/" not in key or manifest_folder(key) is not None:
        return None
    return key.rsplit("/", 1)[0] + "/"


def regroup(
    decision: Decision,
    photo: ObjectRef,
    manifest_key: str,
    manifest: ProductManifest,
    manifest_modified: datetime,
) -> Decision:
    """A photo event in a committed product's folder (its manifest names the photo).

    After the manifest (the event is newer than the manifest object): the product is made
    again, from its photos as they are now (a deleted photo left out; none left: the product
    fails), and a re-uploaded photo is ``grouped`` again instead of getting a card of its own.
    Before it (the manifest's own event groups the photo): the photo's job is dropped, as its
    card would be overwritten anyway."""
    name = photo.key.rsplit("/", 1)[1]
    deleted = decision.result is not None and decision.result.status is CardStatus.deleted
    folder = manifest_key[: -len(MANIFEST_NAME)]
    grouped = CardResult(
        job_id=ImageJob.job_id_for(photo),
        trace_id=secrets.token_hex(16),
        object=photo,
        status=CardStatus.grouped,
        detail=f"part of product {manifest_key}",
        producer="ingest",
    )
    # Last-Modified has whole seconds: a photo in the manifest's second counts as before it
    # (else each photo uploaded just before its manifest would make the product again); one
    # replaced within that same second after it is not made again
    if photo.event_time.replace(microsecond=0) <= manifest_modified:
        return decision if deleted else Decision(None, None, others=(grouped,))
    names = [n for n in manifest.photos if not (deleted and n == name)]
    product = ObjectRef(
        bucket=photo.bucket,
        key=manifest_key,
        sequencer=photo.sequencer,
        event_time=photo.event_time,
    )
    job_id, trace_id = ImageJob.job_id_for(product), secrets.token_hex(16)
    if not names:
        failed = _final(
            product,
            job_id,
            trace_id,
            CardStatus.failed,
            Reason.product_incomplete,
            "every photo its manifest names was deleted",
        )
        return Decision(None, failed.result, others=(decision.result,) if decision.result else ())
    main = manifest.main if manifest.main in names else names[0]
    spec = ProductSpec(photos=[folder + n for n in names], main=names.index(main))
    given = facts_from_metadata(manifest.facts) if manifest.facts else None
    again = _accepted(product, job_id, trace_id, given, spec)
    others = decision.result if deleted else grouped
    return Decision(again.job, again.result, others=(others,) if others else ())


def decide(record: S3Record, max_bytes: int) -> Decision:
    ref = record.object_ref()
    name = record.event_name
    if name.startswith("s3:ObjectRemoved:") and name != REMOVED_NOTHING:
        result = CardResult(
            job_id=ImageJob.job_id_for(ref),
            trace_id=secrets.token_hex(16),
            object=ref,
            status=CardStatus.deleted,
            producer="ingest",
        )
        # a manifest's photos were grouped into its product (one breaking the key rule
        # never made one): they go back to cards of their own
        manifest = manifest_folder(ref.key) is not None and key_problem(ref.key) is None
        return Decision(None, result, released=ref if manifest else None)
    if name not in UPLOAD_EVENTS:
        return Decision(None, None)
    return decide_upload(ref, record.facts(), max_bytes)


def decide_upload(ref: ObjectRef, facts: GivenFacts | None, max_bytes: int) -> Decision:
    """What an upload of ``ref`` means: a job, a rejection, or its bytes (or, for a manifest,
    its content) to read first."""
    trace_id = secrets.token_hex(16)
    job_id = ImageJob.job_id_for(ref)
    # Any S3 client may write such a key; no worker should read it.  An empty object (a
    # console's folder marker, ``photos/``) is ``empty_object`` whatever its key.
    bad_key = key_problem(ref.key) if ref.size != 0 else None
    if bad_key is not None:
        return _final(ref, job_id, trace_id, CardStatus.rejected, Reason.bad_key, bad_key, facts)
    if manifest_folder(ref.key) is not None:
        if not ref.size:  # MinIO leaves an empty object's size out of its event
            return _final(ref, job_id, trace_id, *EMPTY_MANIFEST, facts)
        return Decision(None, None, manifest=Sniff(ref, job_id, trace_id, "manifest", facts))
    problem = classify_upload(ref, max_bytes)
    if isinstance(problem, NeedsSniffing):
        return Decision(None, None, Sniff(ref, job_id, trace_id, problem.declared, facts))
    if problem is not None:
        reason, detail = problem
        return _final(ref, job_id, trace_id, CardStatus.rejected, reason, detail, facts)
    return _accepted(ref, job_id, trace_id, facts)


def decide_released(
    removed: ObjectRef, listed: Sequence[Listed], max_bytes: int
) -> tuple[Decision, ...]:
    """The photos in a removed manifest's folder (``listed``), each decided as its upload
    would be: a card of its own again, not ``grouped`` into a product that no longer exists.

    Which photos the manifest named went with it, so every photo in the folder is decided
    again, those it did not name (which have their own cards already) too.  Each carries the
    removal's sequencer and time, so its row supersedes the ``grouped`` one, and a replay
    makes the same job ids.  Sub-folders, folder markers and empty objects, keys breaking the
    key rule and a manifest uploaded since are left alone: none of them was grouped."""
    folder = manifest_folder(removed.key) or ""
    return tuple(
        decide_upload(_released_ref(removed, entry), _given(entry.metadata), max_bytes)
        for entry in listed
        if _is_photo(folder, entry)
    )


def _is_photo(folder: str, entry: Listed) -> bool:
    """Whether a listed entry is an object of the folder's own (not in a sub-folder) that a
    manifest could have named."""
    name = entry.key[len(folder) :] if entry.key.startswith(folder) else ""
    if not name or "/" in name or name == MANIFEST_NAME or not entry.size:
        return False
    return key_problem(entry.key) is None


def _released_ref(removed: ObjectRef, entry: Listed) -> ObjectRef:
    """The listed object as of the removal's event (its sequencer orders the new row)."""
    return ObjectRef(
        bucket=removed.bucket,
        key=entry.key,
        etag=entry.etag,
        size=entry.size,
        content_type=entry.content_type,
        sequencer=removed.sequencer,
        event_time=removed.event_time,
    )


def _given(metadata: Mapping[str, str]) -> GivenFacts | None:
    """The shop's facts in listed metadata; None when it gave none (as ``S3Record.facts``)."""
    given = facts_from_metadata(metadata)
    return None if given.facts.empty and not given.problems else given
