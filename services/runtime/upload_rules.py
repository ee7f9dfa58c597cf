"""Whether an uploaded object can be a photo for the pipeline, judged by its size, declared type
and name.

Shared by ingest, which judges each bucket notification, and the review desk, which judges a
photo before putting it into the bucket, so that the desk refuses exactly what ingest would
reject, without either service importing the other.  Only when the declared type and the name
are both silent (a generic type such as ``binary/octet-stream`` under a name without an image
extension: what boto3 and ``aws s3 cp`` send for an unknown name) is the decision left to the
object's first bytes (``services/runtime/sniff.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from schemas.messages import ObjectRef
from schemas.reasons import Reason

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"}
)
NEUTRAL_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})


@dataclass(frozen=True)
class NeedsSniffing:
    """Neither the declared type nor the name says what the object is; ``declared`` says what
    they were, for the detail of the decision its first bytes make."""

    declared: str


def classify_upload(ref: ObjectRef, max_bytes: int) -> tuple[Reason, str] | NeedsSniffing | None:
    """``(reason, detail)`` when an uploaded object cannot be a usable image,
    :class:`NeedsSniffing` when only its bytes can tell, else None."""
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
    declared = f"{content_type or 'no content type'} with extension {suffix or '(none)'}"
    if content_type in NEUTRAL_TYPES:
        return None if suffix in IMAGE_EXTENSIONS else NeedsSniffing(declared)
    return Reason.not_an_image, f"{declared} is not an image"
