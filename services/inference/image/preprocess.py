"""Turning untrusted image bytes into what the vision encoder should see.

Order matters: limits are checked on the header *before* pixels are decoded (a 40000x40000 PNG of a
few KB must never be inflated); JPEGs are decoded at reduced scale when the encoder needs far fewer
pixels; orientation, mode and alpha are normalised so the model sees the upright product on white,
as a shopper would.  Output is an uncompressed PNG the llama.cpp image loader reads directly.

Every way the bytes can be wrong ends as an ``ImageError`` subclass with a precise message, never
as another exception: Pillow reports broken files with a zoo of types (``OSError``,
``SyntaxError``, ``ValueError``, ``struct.error``, ...), which are all translated here.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.inference.card.errors import EmptyImage, ImageError, ImageTooLarge
from services.inference.image.png_check import check_png
from services.runtime.sniff import IMAGE_MAGIC, looks_like

if TYPE_CHECKING:  # adapt.py imports OpenCV: only a photo that is adapted needs it loaded
    from services.inference.image.adapt import AdaptMode, Correction

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
WHITE = (255, 255, 255)

# Only the accepted formats' parsers ever see untrusted bytes: Pillow would otherwise try every
# plugin it has (EPS, PSD, FLI, SPIDER, ...) on anything that is not a known image.  MPO (multi-
# picture JPEG) has no parser of its own: the JPEG parser returns it.
_OPEN_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# Decompression bombs are refused by *our* header check (``ImageLimits.max_pixels``), which is
# configurable per deployment.  Pillow's process-global guard would overrule it both ways: its
# warning threshold (89 MP) refuses images a larger configured limit allows, and any import can
# loosen it.  So it is switched off and the limit that decides is the one in ``open_checked``.
Image.MAX_IMAGE_PIXELS = None

# What Pillow's parsers and decoders raise for broken files.  Image.open() turns some of them
# into UnidentifiedImageError, but not ValueError (PNG text-chunk limits), and load() none.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)
# Pillow's own limits on *metadata* decompression (PNG zTXt/iTXt/iCCP chunks): bombs, not pixels.
_METADATA_BOMB_MESSAGES = ("Decompressed data too large", "Too much memory used in text chunks")


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
    pixels: Image.Image | None = field(default=None, repr=False, compare=False)
    """The resized, upright, adapted photo *before* the letterbox pad: what a pixel-level reader
    (the colour estimate) should look at, without margins that are not the product's.  None
    only for a PreparedImage made by hand."""
    adapt_applied: tuple[Correction, ...] = ()
    """The domain-adaptation corrections that changed the picture (``adapt.py``), in order."""
    adapt_ms: float = 0.0
    """Their share of ``preprocess_ms``."""

    @property
    def key(self) -> str:
        """The encoded image's identity: a slot keeps an image's cells for a retry only when
        the retry's image has the same key (``engine/prompt_cache.py``)."""
        import hashlib

        return hashlib.sha256(self.png).hexdigest()

    def data_uri(self) -> str:
        import base64

        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _unrecognised(data: bytes) -> ImageError:
    for magic, fmt in IMAGE_MAGIC:
        if data.startswith(magic):
            return ImageError(f"not a recognised image format: a {fmt} signature, corrupt header")
    what = looks_like(data)
    if what is None:
        return ImageError("not a recognised image format")
    return ImageError(f"not a recognised image format: looks like {what}")


def _metadata_bomb(exc: BaseException) -> ImageTooLarge | None:
    if isinstance(exc, ValueError) and any(m in str(exc) for m in _METADATA_BOMB_MESSAGES):
        return ImageTooLarge(
            f"decompression bomb refused: a metadata chunk inflates too far ({exc})"
        )
    return None


def open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open lazily and enforce byte, format and pixel limits from the header alone."""
    if not data:
        raise EmptyImage("the object is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes is over the limit of {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            # Our pixel limit below decides; a re-enabled Pillow guard may only refuse on top.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data", ...
            image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise _unrecognised(data) from None
    except _DECODE_ERRORS as exc:
        raise _metadata_bomb(exc) or ImageError(f"unreadable image header: {exc}") from None
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
        arr = np.asarray(image, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr, top = arr - lo, max(hi - lo, 1e-9)
        gray = np.clip(arr * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("P", "1", "L", "RGB") and "transparency" in image.info:
        # A palette entry (P) or a colour key (tRNS on grey or RGB PNGs) marks the background.
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode != "RGB":
        return image.convert("RGB")
    return image


def _scaled_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled so the longest side is ``longest`` (each side >= 1)."""
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_request(width: int, height: int, target: EncoderInput) -> tuple[int, int]:
    """The size to ask ``JpegImageFile.draft`` for: the encoder's fitted size, not a square.

    Pillow picks the coarsest DCT scale (1/2, 1/4, 1/8) that keeps *both* sides >= the request;
    asking for ``(size, size)`` let a 4:3 or 3:2 photo's short side force a finer scale than the
    encoder needs (4000x3000 for 896 px: 1/2 instead of 1/4).  The exact size on the long side
    and the floor on the short one keep the decoded longest side >= ``target.size``.
    """
    longest = max(width, height)
    return max(1, width * target.size // longest), max(1, height * target.size // longest)


def _downscale(image: Image.Image, target: EncoderInput) -> Image.Image:
    """Resize once so the longest side is ``target.size`` (never upscale)."""
    if max(image.size) > target.size:
        size = _scaled_size(image.width, image.height, target.size)
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _pad(image: Image.Image, target: EncoderInput) -> Image.Image:
    """Letterbox to a square on white when the encoder wants one."""
    if target.fit == "pad" and image.width != image.height:
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    return image


def fit_to_encoder(image: Image.Image, target: EncoderInput) -> Image.Image:
    """Downscale so the longest side is ``target.size`` (never upscale); pad if asked."""
    return _pad(_downscale(image, target), target)


_UPRIGHT = {  # EXIF Orientation -> the transpose that shows the image upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Transpose | None:
    """The transpose the EXIF orientation asks for (as ``ImageOps.exif_transpose`` reads it),
    or None.  Unreadable EXIF is ignored: the pixels are fine, and a browser would show them as
    stored too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            orientation = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return None
    return _UPRIGHT.get(orientation) if isinstance(orientation, int) else None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def encode_png(image: Image.Image, level: int = 0) -> bytes:
    """An 8-bit RGB image as a standard, lossless PNG, written with numpy + zlib.

    ``level=0`` (what ``prepare_image`` uses): uncompressed (stored deflate blocks, no row
    filter).  The PNG never leaves the process: it goes base64 into the chat message and
    straight back into llama.cpp's stb_image, so compressing it only costs time on both ends
    (896 px: 2 ms to write + 3 ms to read, against 11 + 9 ms compressed, and 46 ms for Pillow's
    ``compress_level=1`` writer, which tries all five row filters on every row).
    ``level>=1``: the Sub row filter and zlib's run-length strategy, for a PNG that is kept
    (as small as Pillow's ``compress_level=1`` output, about 4x faster to write).
    """
    if image.mode != "RGB":
        raise ValueError(f"encode_png takes an RGB image, not {image.mode}")
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    flat = pixels.reshape(height, width * 3)
    rows = np.empty((height, 1 + width * 3), np.uint8)
    if level == 0:
        rows[:, 0] = 0  # filter type None
        rows[:, 1:] = flat
        idat = zlib.compress(rows.data, 0)
    else:
        rows[:, 0] = 1  # filter type Sub: each byte minus the same channel one pixel to the left
        rows[:, 1:4] = flat[:, :3]
        np.subtract(flat[:, 3:], flat[:, :-3], out=rows[:, 4:])  # uint8: wraps modulo 256
        deflate = zlib.compressobj(min(level, 9), zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        idat = deflate.compress(rows.data) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def prepare_image(
    data: bytes,
    target: EncoderInput,
    limits: ImageLimits,
    *,
    adapt: AdaptMode | None = None,
) -> PreparedImage:
    """Untrusted bytes in, encoder-ready PNG out; raises ``ImageError`` with a precise reason.

    Large photos cost what their *output* needs, not their megapixels: a JPEG is decoded at the
    coarsest DCT scale that still covers the encoder's size, the image is resized once, the
    EXIF turn is applied to the resized pixels, and no full-size copy is made on the way.
    ``adapt`` (``VITRINE_PREPROCESS_ADAPT``) corrects the resized photo before the pad.
    """
    started = time.perf_counter()
    image = open_checked(data, limits)
    source_format, (source_w, source_h) = str(image.format), image.size
    if source_format == "PNG":
        check_png(data)  # what Pillow does not check: IDAT's CRC, the stream's end (png_check)
    _decode_first_frame(image, (source_w, source_h), target)
    turn = _upright(image)
    try:
        image = to_rgb(image)
    except ValueError as exc:  # a mode Pillow cannot convert to RGB
        raise ImageError(f"unsupported pixel mode {image.mode}: {exc}") from None
    # Turned after the resize (fewer pixels to move) and before the letterbox (so the margins
    # end up around the upright picture).
    image = _downscale(image, target)
    if turn is not None:
        image = image.transpose(turn)
    image, applied, adapt_ms = _adapted(image, adapt)
    pixels = image
    image = _pad(image, target)
    png = encode_png(image)
    return PreparedImage(
        png=png,
        width=image.width,
        height=image.height,
        source_format=source_format,
        source_width=source_w,
        source_height=source_h,
        preprocess_ms=(time.perf_counter() - started) * 1000.0,
        pixels=pixels,
        adapt_applied=applied,
        adapt_ms=adapt_ms,
    )


def _decode_first_frame(image: Image.Image, source: tuple[int, int], target: EncoderInput) -> None:
    """Decode the pixels of an opened image in place, translating Pillow's many failure types.

    Kept apart from ``prepare_image`` because this is the one step where untrusted bytes are
    inflated: a JPEG is asked for its coarsest sufficient DCT scale first, and every decode
    error becomes an ``ImageError``.
    """
    try:
        image.seek(0)  # animated GIF/WebP/PNG, multi-page TIFF, MPO: the first frame is the shot
        if image.format in ("JPEG", "MPO"):
            # DCT-domain downscaling: a 24 MP photo for a 336 px encoder is decoded as 750x500
            # and never exists at full size in memory.
            image.draft("RGB", draft_request(*source, target))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise _metadata_bomb(exc) or ImageError(f"truncated or corrupt image data: {exc}") from None


def _adapted(
    image: Image.Image, adapt: AdaptMode | None
) -> tuple[Image.Image, tuple[Correction, ...], float]:
    """The photo after domain adaptation, the corrections applied and their milliseconds.

    OpenCV is imported only here, when a mode is active, so a worker that never adapts never
    loads it.
    """
    if adapt is None or not adapt.active:
        return image, (), 0.0
    from services.inference.image.adapt import adapt as adapt_image

    # On the photo alone: the white margins must not count in its colour statistics.
    started = time.perf_counter()
    adapted, applied, _ = adapt_image(image, adapt)
    return adapted, applied, (time.perf_counter() - started) * 1000.0
