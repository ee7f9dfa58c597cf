"""Deciding what one bucket notification means for the pipeline.

Pure functions, no I/O: a record becomes a job (plus a ``queued`` result so the row exists at
once), a rejection with a precise reason, a deletion, or nothing.  Content is only *sniffed* here
by name and declared type; the inference service decodes the bytes and rejects what lies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath

from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef, S3Record
from schemas.reasons import Reason

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}
)
NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
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


@dataclass(frozen=True)
class Decision:
    job: ImageJob | None
    result: CardResult | None


def classify_upload(ref: ObjectRef, max_bytes: int) -> tuple[Reason, str] | None:
    """``(reason, detail)`` when an uploaded object cannot be a usable image, else None."""
    if ref.size == 0:
        return Reason.empty_object, "the object is empty (0 bytes)"
    if ref.size is not None and ref.size > max_bytes:
        return Reason.image_too_large, f"{ref.size} bytes is over the limit of {max_bytes} bytes"
    content_type = (ref.content_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(ref.key).suffix.lower()
    if content_type.startswith("image/svg"):
        return Reason.not_an_image, "SVG is vector markup, not a photo"
    if content_type.startswith("image/"):
        return None
    if content_type in NEUTRAL_TYPES and suffix in IMAGE_EXTENSIONS:
        return None
    declared = content_type or "no content type"
    return Reason.not_an_image, f"{declared} with extension {suffix or '(none)'} is not an image"


def decide(record: S3Record, max_bytes: int) -> Decision:
    ref = record.object_ref()
    trace_id = secrets.token_hex(16)
    job_id = ImageJob.job_id_for(ref)
    name = record.event_name
    if name.startswith("s3:ObjectRemoved:") and name != REMOVED_NOTHING:
        result = CardResult(
            job_id=job_id,
            trace_id=trace_id,
            object=ref,
            status=CardStatus.deleted,
            producer="ingest",
        )
        return Decision(None, result)
    if name not in UPLOAD_EVENTS:
        return Decision(None, None)
    problem = classify_upload(ref, max_bytes)
    if problem is not None:
        reason, detail = problem
        result = CardResult(
            job_id=job_id,
            trace_id=trace_id,
            object=ref,
            status=CardStatus.rejected,
            reason=reason,
            detail=detail,
            producer="ingest",
        )
        return Decision(None, result)
    job = ImageJob(job_id=job_id, trace_id=trace_id, object=ref)
    queued = CardResult(
        job_id=job_id, trace_id=trace_id, object=ref, status=CardStatus.queued, producer="ingest"
    )
    return Decision(job, queued)
