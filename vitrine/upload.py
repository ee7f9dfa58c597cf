"""``vitrine put``: upload photos to the pipeline's bucket, each with a truthful content type.

The content type is guessed from the extension and then checked against the file's first bytes:
a known image signature wins over the name (``photo.png`` that is really a JPEG is sent as
``image/jpeg``), so what the bucket records says what the bytes are.  Directories are walked
recursively; anything that is not a regular file (sockets, fifos, broken links) is skipped and
counted.  Keys keep the path below the directory given, like ``aws s3 cp --recursive``.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from minio import Minio

# (offset, signature, content type): the formats preprocessing accepts, plus a few it refuses
# (so their type is still recorded truthfully).
SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
)
SNIFF_BYTES = 32


def sniff(head: bytes) -> str | None:
    """The content type the first bytes announce, or None when they name no known format."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image/heic"
    for offset, signature, content_type in SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return content_type
    return None


def content_type_of(path: Path) -> str:
    """Magic bytes first, then the extension, then ``application/octet-stream``."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    guessed, _ = mimetypes.guess_type(path.name)
    return sniff(head) or guessed or "application/octet-stream"


@dataclass(frozen=True)
class Upload:
    path: Path
    key: str
    size: int
    content_type: str


@dataclass
class Plan:
    uploads: list[Upload] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(u.size for u in self.uploads)


def _key(prefix: str, relative: str) -> str:
    relative = relative.replace(os.sep, "/")
    if not prefix:
        return relative
    return prefix + relative if prefix.endswith("/") else f"{prefix}/{relative}"


def _walk(root: Path) -> Iterable[tuple[Path, str]]:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            yield path, str(path.relative_to(root))


def plan(paths: Sequence[Path], prefix: str = "") -> Plan:
    """What to upload under which key.  Raises FileNotFoundError for a path that does not exist."""
    missing = [str(p) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        raise FileNotFoundError(", ".join(missing))
    result = Plan()
    for path in paths:
        entries = _walk(path) if path.is_dir() else [(path, path.name)]
        for file, relative in entries:
            if not file.is_file():  # sockets, fifos, devices, broken links
                result.skipped.append(file)
                continue
            result.uploads.append(
                Upload(file, _key(prefix, relative), file.stat().st_size, content_type_of(file))
            )
    return result


def upload(
    client: Minio,
    bucket: str,
    uploads: Sequence[Upload],
    progress: Callable[[Upload], None] = lambda _: None,
) -> None:
    """Put each file; an S3 error stops at the failing file (the caller reports which)."""
    for item in uploads:
        client.fput_object(bucket, item.key, str(item.path), content_type=item.content_type)
        progress(item)
