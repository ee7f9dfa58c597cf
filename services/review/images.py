"""Photos for the desk: fetched by key with the desk's read-only MinIO user, shrunk, cached.

The browser never talks to MinIO (no public bucket, no presigned URL leaves the desk): it asks
the desk, which checks the session, reads the object, and serves a JPEG rendition.  Renditions
are cached on disk by the object's identity (bucket, key, ETag) and size, so an overwritten
photo gets a new one and a list page of 50 thumbnails costs 50 file reads once warm.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

from minio import Minio
from PIL import Image, ImageOps

from schemas.messages import ObjectRef
from services.inference.image.preprocess import ImageLimits, open_checked, to_rgb
from services.runtime.s3 import read_object


def rendition_path(cache: Path, ref: ObjectRef, side: int) -> Path:
    name = hashlib.sha256(f"{ref.bucket}\0{ref.key}\0{ref.etag}\0{side}".encode()).hexdigest()
    return cache / name[:2] / f"{name}.jpg"


def render(data: bytes, side: int, limits: ImageLimits) -> bytes:
    """The photo upright, in RGB, at most ``side`` pixels on its longest side, as JPEG.  The
    same limits as the workers' (bytes, pixels, formats), so a bomb is refused here too."""
    image = open_checked(data, limits)
    if image.format == "JPEG":
        image.draft("RGB", (side, side))  # decode at a reduced scale: much faster on big JPEGs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        image = ImageOps.exif_transpose(image) or image
    image = to_rgb(image)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


def rendition(client: Minio, cache: Path, ref: ObjectRef, side: int, limits: ImageLimits) -> Path:
    """The cached rendition's path, made on the first request (blocking: run in a thread)."""
    path = rendition_path(cache, ref, side)
    if path.exists():
        return path
    body = render(read_object(client, ref, limits.max_bytes), side, limits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    os.replace(tmp, path)  # atomic: a concurrent request sees the whole file or none
    return path
