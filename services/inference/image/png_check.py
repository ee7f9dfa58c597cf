"""Whether a PNG's bytes are whole: every chunk's CRC, and an image stream that ends where the
image does.

Why: Pillow checks the CRCs of the chunks before the first IDAT only, and inflates IDAT just far
enough to fill the image's rows.  Bytes zeroed in the middle of IDAT (a damaged disk, a cut
transfer patched with zeros) are valid deflate codes, so Pillow decodes them without a word and
the model is shown a picture half grey; a stream the encoder itself broke (its CRCs right) can
do the same.  So the worker checks what Pillow does not, before decoding:

* each chunk's CRC (``zlib.crc32``, over every chunk: a few milliseconds for a 30 MB file);
* the IDAT zlib stream inflated to its end: no data error, its checksum (Adler-32) right, and
  exactly the bytes the header says the image holds.  This costs a second inflate of the image
  (streamed, a megabyte at a time, never more than the header's size: a stream that inflates
  past it is refused there, so it cannot be a bomb).

Measured on 2 busy cores: a 30 MB 6000x4000 RGB PNG, the CRCs 20 ms and the whole check 0.52 s
of ``prepare_image``'s 1.4 s; a 2.5 MB 1000x1000 one (noise), 25 ms of 112 ms.  A second inflate
is the price of never describing a garbled picture; JPEG, the usual photo, pays nothing.

Every failure is an ``ImageError`` (``bad_image``) naming the chunk and byte offset.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from services.inference.card.errors import ImageError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA)."""
_ADAM7: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
"""Each interlace pass: first column, first row, column step, row step."""
_STEP = 1 << 20
"""Inflated bytes per step: memory stays at a megabyte whatever the image."""


def _chunks(data: bytes) -> Iterator[tuple[int, bytes, memoryview]]:
    """Each chunk's offset, type and data, its CRC checked; up to IEND."""
    view = memoryview(data)
    pos = len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ImageError(f"truncated PNG: the file ends at byte {len(data)} before IEND")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(data[pos + 4 : pos + 8])
        end = pos + 8 + length
        if length > 0x7FFFFFFF or end + 4 > len(data):
            raise ImageError(
                f"truncated PNG: chunk {kind!r} at byte {pos} runs past the end of the file"
            )
        (stored,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[pos + 4 : end]) != stored:
            raise ImageError(
                f"corrupt PNG: chunk {kind.decode('latin-1')} at byte {pos} fails its CRC "
                "(the file was damaged)"
            )
        yield pos, kind, view[pos + 8 : end]
        if kind == b"IEND":
            return
        pos = end + 4


def _image_bytes(header: memoryview) -> int:
    """What the IDAT stream must inflate to: each (pass's) row, its filter byte first."""
    if len(header) != 13:
        raise ImageError("corrupt PNG: IHDR is not 13 bytes")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if colour not in _CHANNELS:
        raise ImageError(f"corrupt PNG: colour type {colour} does not exist")
    bits = _CHANNELS[colour] * depth
    passes = _ADAM7 if interlace == 1 else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns = (width - x0 + dx - 1) // dx if width > x0 else 0
        rows = (height - y0 + dy - 1) // dy if height > y0 else 0
        if columns and rows:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def check_png(data: bytes) -> None:
    """Raise ``ImageError`` unless every chunk's CRC holds and the image stream is whole.

    Called once the header passed the pixel limit (``preprocess.open_checked``), so the size
    the stream is held to is a size the worker accepts."""
    inflate = zlib.decompressobj()
    expected: int | None = None
    inflated = 0
    for pos, kind, body in _chunks(data):
        if kind == b"IHDR":
            expected = _image_bytes(body)
        elif kind == b"IDAT" and expected is not None and not inflate.eof:
            inflated += _inflate(inflate, body, expected - inflated, pos)
    if expected is None:
        raise ImageError("corrupt PNG: no IHDR chunk")
    if not inflate.eof:
        raise ImageError(
            f"truncated PNG: the image data stops after {inflated} of its {expected} bytes "
            "(the zlib stream has no end)"
        )
    if inflated != expected:
        raise ImageError(
            f"corrupt PNG: the image data holds {inflated} bytes, its header says {expected}"
        )


def _inflate(inflate: zlib._Decompress, body: memoryview, room: int, pos: int) -> int:
    """Inflate one IDAT chunk's data, at most ``room`` bytes more; the bytes it gave."""
    given = 0
    pending: bytes | memoryview = body
    try:
        while pending and not inflate.eof:
            out = inflate.decompress(pending, min(_STEP, room - given + 1))
            given += len(out)
            if given > room:
                raise ImageError(
                    f"corrupt PNG: the image data in chunk IDAT at byte {pos} inflates past "
                    "the size its header gives"
                )
            pending = inflate.unconsumed_tail
            if not out and pending:
                raise ImageError(f"corrupt PNG: the zlib stream stalls in chunk IDAT at byte {pos}")
    except zlib.error as exc:
        raise ImageError(
            f"corrupt PNG: the zlib stream breaks in chunk IDAT at byte {pos}: {exc}"
        ) from None
    return given
