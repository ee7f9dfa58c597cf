"""Photos the tests feed the engine and the services: plain ones of each format and mode, and a
varied set (sizes, colours, a shape) for runs of many generations."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (320, 240)) -> bytes:
    colour = {"RGB": (30, 60, 200), "RGBA": (200, 30, 30, 120)}.get(mode, 128)
    image = Image.new(mode, size, colour)  # type: ignore[arg-type]
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def photo(i: int) -> bytes:
    """Image ``i`` of a small varied set: its own size, colours and shape."""
    width, height = 640 + 96 * (i % 5), 480 + 64 * (i % 3)
    image = Image.new(
        "RGB", (width, height), (20 * (i % 13), 255 - 17 * (i % 11), 40 + 9 * i % 200)
    )
    ImageDraw.Draw(image).ellipse(
        (width // 5, height // 4, width * 3 // 4, height * 4 // 5),
        fill=(250 - 23 * (i % 7), 30 * (i % 9), 60),
    )
    buf = io.BytesIO()
    image.save(buf, "JPEG" if i % 2 else "PNG")
    return buf.getvalue()
