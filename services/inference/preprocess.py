"""Turning untrusted image bytes into what the vision encoder should see.

Order matters: limits are checked on the header *before* pixels are decoded (a 40000x40000 PNG of a
few KB must never be inflated); JPEGs are decoded at reduced scale when the encoder needs far fewer
pixels; orientation, mode and alpha are normalised so the model sees the upright product on white,
as a shopper would.  Output is a small lossless PNG the llama.cpp image loader reads directly.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.inference.errors import EmptyImage, ImageError, ImageTooLarge

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 60_000_000


@dataclass(frozen=True)
class EncoderInput:
    size: int
    """Longest side handed to the encoder (its native input size for fixed-size encoders)."""
    fit: Literal["pad", "fit"] = "pad"
    """``pad``: letterbox to a square on white; ``fit``: keep the aspect ratio."""


@dataclass(frozen=True)
class PreparedImage:
    png: bytes
    width: int
    height: int
    source_format: str
    source_width: int
    source_height: int
    preprocess_ms: float

    def data_uri(self) -> str:
        import base64

        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open lazily and enforce byte, format and pixel limits from the header alone."""
    if not data:
        raise EmptyImage("the object is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes is over the limit of {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except OSError as exc:
        raise ImageError(f"unreadable image header: {exc}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ImageError(f"unsupported image format {image.format}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"degenerate image size {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height} pixels is over the limit of "
            f"{limits.max_pixels} pixels"
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white, not black."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr, top = arr - lo, max(hi - lo, 1e-9)
        gray = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode != "RGB":
        return image.convert("RGB")
    return image


def fit_to_encoder(image: Image.Image, target: EncoderInput) -> Image.Image:
    """Downscale so the longest side is ``target.size`` (never upscale); pad if asked."""
    width, height = image.size
    scale = target.size / max(width, height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if target.fit == "pad" and image.width != image.height:
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    return image


def prepare_image(data: bytes, target: EncoderInput, limits: ImageLimits) -> PreparedImage:
    """Untrusted bytes in, encoder-ready PNG out; raises ``ImageError`` with a precise reason."""
    started = time.perf_counter()
    image = open_checked(data, limits)
    source_format, (source_w, source_h) = str(image.format), image.size
    if image.format in ("JPEG", "MPO"):
        # DCT-domain downscaling: decode at 1/2, 1/4 or 1/8 while staying >= the target size.
        image.draft("RGB", (target.size, target.size))
    try:
        image.seek(0)  # animated GIF/WebP/MPO: the first frame is the product shot
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"truncated or corrupt image data: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from None
    image = fit_to_encoder(to_rgb(image), target)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return PreparedImage(
        png=out.getvalue(),
        width=image.width,
        height=image.height,
        source_format=source_format,
        source_width=source_w,
        source_height=source_h,
        preprocess_ms=(time.perf_counter() - started) * 1000.0,
    )
