"""Minimal preprocessing: limits before decoding, orientation, modes, alpha, resize."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.inference.errors import ImageError, ImageTooLarge
from services.inference.preprocess import EncoderInput, ImageLimits, prepare_image

PAD = EncoderInput(64, "pad")
FIT = EncoderInput(64, "fit")
LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR announcing a huge image, with a tiny IDAT: a classic bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_output_is_png_within_encoder_size_and_padded_square() -> None:
    out = prepare_image(encode(Image.new("RGB", (400, 200), (0, 0, 255)), "JPEG"), PAD, LIMITS)
    image = decoded(out.png)
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.size == (64, 64) and (out.source_width, out.source_height) == (400, 200)
    assert image.getpixel((32, 2)) == (255, 255, 255)  # letterbox is white
    assert image.getpixel((32, 32))[2] > 200


def test_fit_keeps_aspect_and_never_upscales() -> None:
    out = prepare_image(encode(Image.new("RGB", (400, 200)), "PNG"), FIT, LIMITS)
    assert (out.width, out.height) == (64, 32)
    small = prepare_image(encode(Image.new("RGB", (20, 10)), "PNG"), FIT, LIMITS)
    assert (small.width, small.height) == (20, 10)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 255, 0), (0, 0, 100, 100))  # left half green
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    assert out.size == (32, 64)  # portrait after rotation
    top = out.getpixel((16, 5))
    assert top[1] > 200 and top[0] < 60  # green half is now on top


def test_alpha_is_flattened_on_white_not_black() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (16, 16, 48, 48))
    out = decoded(prepare_image(encode(image, "PNG"), PAD, LIMITS).png)
    assert out.getpixel((2, 2)) == (255, 255, 255)
    assert out.getpixel((32, 32)) == (255, 0, 0)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (8, 8, 24, 24))
    data = encode(image, "PNG", transparency=0)
    out = decoded(prepare_image(data, PAD, LIMITS).png)
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((16, 16)) == (255, 0, 0)


def test_sixteen_bit_grayscale_keeps_its_range() -> None:
    arr = np.full((32, 32), 65535, dtype=np.uint16)
    arr[:, :16] = 32768
    data = encode(Image.fromarray(arr), "PNG")
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    assert out.getpixel((28, 16))[0] == 255
    assert 120 <= out.getpixel((4, 16))[0] <= 135


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG")
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    r, g, b = out.getpixel((20, 20))
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((0, 0, 255), (255, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decoded(prepare_image(buf.getvalue(), FIT, LIMITS).png)
    r, _, b = out.getpixel((16, 16))
    assert b > 200 and r < 50


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF"])
def test_other_formats_are_accepted(fmt: str) -> None:
    out = prepare_image(encode(Image.new("RGB", (100, 80), (9, 9, 9)), fmt), FIT, LIMITS)
    assert out.source_format == fmt


def test_decompression_bomb_is_refused_from_the_header() -> None:
    data = png_header_only(40000, 40000)
    assert len(data) < 200
    with pytest.raises(ImageTooLarge, match="pixels"):
        prepare_image(data, PAD, LIMITS)


def test_byte_limit() -> None:
    with pytest.raises(ImageTooLarge, match="bytes"):
        prepare_image(b"x" * 101, PAD, ImageLimits(max_bytes=100))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text pretending to be a JPEG", "not a recognised image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a recognised image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "not a recognised image"),
    ],
)
def test_non_images_get_precise_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        prepare_image(data, PAD, LIMITS)


def test_truncated_jpeg_is_an_image_error() -> None:
    noise = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        prepare_image(data[: len(data) // 2], EncoderInput(512, "fit"), LIMITS)
