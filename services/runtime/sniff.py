"""What the first bytes of an object say it is: one table of signatures for two readers.

Ingest reads an upload's first bytes when neither its declared content type nor its name says
what it is (``binary/octet-stream`` under a name without an image extension, the default of
boto3 and ``aws s3 cp``), and preprocessing words its rejections with the same knowledge.  Kept
free of Pillow and NumPy so that ingest, which never decodes an image, does not load them.

Signatures *route* and *explain*; they never prove an image: the worker's decoder decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Enough for every signature below (the longest ends at byte 16), and for what they cannot
# tell: SVG from other XML, text from binary, which looks_like judges on its first 1 KiB.  A
# ranged GET of 1 KiB costs the round trip a 64-byte one does.
HEAD_BYTES = 1024

# Leading bytes of what people upload by mistake (or on purpose) under an image name; ``True``
# marks an image format the worker does not decode (rejected as bad_image, not not_an_image).
_MAGIC: tuple[tuple[bytes, str, bool], ...] = (
    (b"%PDF-", "a PDF document", False),
    (b"PK\x03\x04", "a ZIP archive (or an Office/EPUB document)", False),
    (b"PK\x05\x06", "an empty ZIP archive", False),
    (b"\x1f\x8b", "a gzip stream", False),
    (b"Rar!\x1a\x07", "a RAR archive", False),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", False),
    (b"\x7fELF", "an ELF executable", False),
    (b"%!PS", "a PostScript document", False),
    (b"8BPS", "a Photoshop document (PSD)", True),
    (b"\x00\x00\x01\x00", "a Windows icon (ICO)", True),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image (not supported)", True),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream (not supported)", True),
    (b"\xff\x0a", "a JPEG XL image (not supported)", True),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image (not supported)", True),
)
# Signatures strong enough that bytes which start with one and do not open are a corrupt image
# of that format (preprocessing says so).
IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# The rest of what the decoders of the accepted formats (preprocess.ACCEPTED_FORMATS) try to
# open: BigTIFF, byte-swapped TIFF headers, and BMP's two letters -- too weak to call a failure
# "corrupt" (much text starts with "BM"), but enough to hand the bytes to the decoder.
_WEAK_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MM*\x00", "TIFF"),
    (b"II\x00*", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"BM", "BMP"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

Kind = Literal["image", "unsupported_image", "not_an_image", "unknown"]


@dataclass(frozen=True)
class Identified:
    """What a head of bytes is: ``kind`` routes it, ``what`` names it in a message."""

    kind: Kind
    what: str


def image_format(head: bytes) -> str | None:
    """The accepted format (``"PNG"``, ...) whose decoder would try ``head``, else None."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in IMAGE_MAGIC + _WEAK_IMAGE_MAGIC:
        if head.startswith(magic):
            return fmt
    return None


def _described(head: bytes, *, truncated: bool) -> tuple[str, bool] | None:
    """``(what, an unsupported image format)`` for bytes no accepted decoder reads, else None."""
    for magic, what, is_image in _MAGIC:
        if head.startswith(magic):
            return what, is_image
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "a HEIC/HEIF image (not supported: convert it to JPEG)", True
        if brand in (b"avif", b"avis"):
            return "an AVIF image (not supported)", True
        return "an MP4/QuickTime video", False
    if head.startswith(b"RIFF") and head[8:12] != b"WEBP":
        return "a RIFF container (WAV/AVI), not WebP", False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG vector markup", False
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page", False
    if text.startswith(b"<?xml"):
        return "an XML document", False
    sample = head.decode("utf-8", errors="replace")
    if truncated:
        sample = sample[:-3]  # a multi-byte character may be cut where the head ends
    if (
        sample
        and "\ufffd" not in sample
        and all(c.isprintable() or c in "\t\r\n\f" for c in sample)
    ):
        return "plain text", False
    return None


def identify(head: bytes, *, truncated: bool) -> Identified:
    """What the first bytes of an object are; ``truncated``: the object goes on after them."""
    fmt = image_format(head)
    if fmt is not None:
        return Identified("image", fmt)
    described = _described(head[:HEAD_BYTES], truncated=truncated or len(head) > HEAD_BYTES)
    if described is None:
        return Identified("unknown", "no supported image format")
    what, is_image = described
    return Identified("unsupported_image" if is_image else "not_an_image", what)


def looks_like(data: bytes) -> str | None:
    """A short description of what non-image bytes appear to be, for error messages."""
    described = _described(data[:HEAD_BYTES], truncated=len(data) > HEAD_BYTES)
    return None if described is None else described[0]
