"""Minimal preprocessing: limits before decoding, orientation, modes, alpha, resize."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.inference.card.errors import ImageError, ImageTooLarge
from services.inference.image.preprocess import EncoderInput, ImageLimits, prepare_image
from tests.support import hostile_corpus as hostile

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


def px(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """One pixel of an RGB image (``getpixel`` is typed for every mode)."""
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


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
    assert px(image, (32, 2)) == (255, 255, 255)  # letterbox is white
    assert px(image, (32, 32))[2] > 200


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
    top = px(out, (16, 5))
    assert top[1] > 200 and top[0] < 60  # green half is now on top


def test_alpha_is_flattened_on_white_not_black() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (16, 16, 48, 48))
    out = decoded(prepare_image(encode(image, "PNG"), PAD, LIMITS).png)
    assert px(out, (2, 2)) == (255, 255, 255)
    assert px(out, (32, 32)) == (255, 0, 0)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (8, 8, 24, 24))
    data = encode(image, "PNG", transparency=0)
    out = decoded(prepare_image(data, PAD, LIMITS).png)
    assert px(out, (1, 1)) == (255, 255, 255)
    assert px(out, (16, 16)) == (255, 0, 0)


def test_sixteen_bit_grayscale_keeps_its_range() -> None:
    arr = np.full((32, 32), 65535, dtype=np.uint16)
    arr[:, :16] = 32768
    data = encode(Image.fromarray(arr), "PNG")
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    assert px(out, (28, 16))[0] == 255
    assert 120 <= px(out, (4, 16))[0] <= 135


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG")
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    r, g, b = px(out, (20, 20))
    assert r > 200 and g < 60 and b < 60


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((0, 0, 255), (255, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decoded(prepare_image(buf.getvalue(), FIT, LIMITS).png)
    r, _, b = px(out, (16, 16))
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


# -- the hostile corpus (tests/support/hostile_corpus.py), case by case, pixel by pixel --------

HOSTILE_TARGET = EncoderInput(336, "pad")
HOSTILE_LIMITS = ImageLimits(max_bytes=hostile.MAX_BYTES)
PREPROCESS_REASONS = {"bad_image", "image_too_large", "empty_object"}
WHITE_PX = (255, 255, 255)


def near(pixel: tuple[int, ...], want: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, want, strict=True))


def centre_and_corner(png: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    image = decoded(png)
    return px(image, (image.width // 2, image.height // 2)), px(image, (2, 2))


@pytest.mark.parametrize(
    "case",
    [c for c in hostile.corpus() if c.status != hostile.REFUSED],
    ids=lambda c: c.label,
)
def test_hostile_case_preprocesses_as_the_pipeline_expects(case: hostile.Case) -> None:
    """What the worker's preprocessing makes of each corpus input (ingest decides some of them
    earlier from the event; their bytes must still never pass as an image here)."""
    data = case.data()
    if case.status == "done":
        out = prepare_image(data, HOSTILE_TARGET, HOSTILE_LIMITS)
        width, height = decoded(out.png).size
        assert width == height <= 336
        return
    want = case.reason if case.reason in PREPROCESS_REASONS else "bad_image"
    with pytest.raises(ImageError) as caught:
        prepare_image(data, HOSTILE_TARGET, HOSTILE_LIMITS)
    assert caught.value.reason == want, caught.value
    if case.detail and case.reason in PREPROCESS_REASONS:
        assert case.detail.lower() in str(caught.value).lower(), caught.value


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "MPO"])
def test_animation_uses_its_first_frame(fmt: str) -> None:
    image = decoded(prepare_image(hostile.animated(fmt), FIT, LIMITS).png)
    assert near(px(image, (image.width // 2, image.height // 2)), hostile.PRODUCT)
    colours = {c for _, c in image.getcolors(1 << 16) or [] if isinstance(c, tuple)}
    assert not any(near(c, hostile.OTHER, 60) for c in colours), "a later frame leaked in"


def test_cmyk_jpeg_is_the_right_rgb_on_white() -> None:
    centre, corner = centre_and_corner(prepare_image(hostile.cmyk_jpeg(), PAD, LIMITS).png)
    assert near(centre, (255, 0, 0)) and near(corner, (255, 255, 255), 8)


def test_ycck_jpeg_is_read_as_ycck_and_converted_to_the_right_rgb() -> None:
    data = hostile.ycck_jpeg()
    raw = Image.open(io.BytesIO(data))
    assert raw.mode == "CMYK" and raw.info.get("adobe_transform") == 2
    centre, corner = centre_and_corner(prepare_image(data, PAD, LIMITS).png)
    assert near(centre, (255, 0, 0)) and near(corner, (255, 255, 255), 8)
    # The marker matters: the same samples read as plain CMYK are nowhere near red on white.
    app14 = data.find(b"\xff\xee")
    plain = bytearray(data)
    plain[app14 + 2 + int.from_bytes(data[app14 + 2 : app14 + 4], "big") - 1] = 0
    centre, corner = centre_and_corner(prepare_image(bytes(plain), PAD, LIMITS).png)
    assert not near(centre, (255, 0, 0)) or not near(corner, (255, 255, 255), 8)


@pytest.mark.parametrize("make", [hostile.cmyk_jpeg, hostile.ycck_jpeg], ids=["cmyk", "ycck"])
def test_cmyk_and_ycck_survive_reduced_scale_decoding(make) -> None:
    data = make((1600, 1200))  # draft() decodes it at 1/4 scale for a 336 px encoder
    out = prepare_image(data, HOSTILE_TARGET, LIMITS)
    assert (out.source_width, out.source_height) == (1600, 1200)
    centre, corner = centre_and_corner(out.png)
    assert near(centre, (255, 0, 0)) and near(corner, (255, 255, 255), 8)


def test_sixteen_bit_rgb_png_keeps_its_colours() -> None:
    assert Image.open(io.BytesIO(hostile.png16_rgb())).mode == "RGB"  # 16 bits read, 8 kept
    centre, corner = centre_and_corner(prepare_image(hostile.png16_rgb(), PAD, LIMITS).png)
    assert near(centre, hostile.PRODUCT, 2) and corner == (255, 255, 255)


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    out = decoded(prepare_image(hostile.png16_gray(), FIT, LIMITS).png)
    assert 126 <= px(out, (out.width // 2, out.height // 2))[0] <= 130
    assert px(out, (1, 1)) == (255, 255, 255)


def test_palette_png_transparent_black_becomes_white() -> None:
    centre, corner = centre_and_corner(
        prepare_image(hostile.palette_png_transparent(), PAD, LIMITS).png
    )
    assert centre == hostile.PRODUCT and corner == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_keyed_transparency_becomes_white(mode: str) -> None:
    """tRNS on a grey or RGB PNG (one colour means 'transparent') was shown as that colour."""
    image = Image.new(mode, (40, 40), 0)
    image.paste(200 if mode == "L" else hostile.PRODUCT, (10, 10, 30, 30))
    key = 0 if mode == "L" else (0, 0, 0)
    out = decoded(prepare_image(encode(image, "PNG", transparency=key), FIT, LIMITS).png)
    assert px(out, (1, 1)) == (255, 255, 255)
    assert px(out, (20, 20)) == ((200,) * 3 if mode == "L" else hostile.PRODUCT)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_shown_upright(orientation: int) -> None:
    stored = Image.new("RGB", (60, 30), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 15))  # a marker in one corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "PNG", exif=exif.tobytes())
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    upright = stored.transpose(transpose[orientation]) if orientation in transpose else stored
    out = decoded(prepare_image(data, FIT, LIMITS).png)
    assert out.size == upright.size
    assert out.tobytes() == upright.tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_rotation_in_each_format_that_carries_it(fmt: str) -> None:
    image = Image.new("RGB", (240, 120), (255, 255, 255))
    image.paste(hostile.PRODUCT, (0, 0, 120, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decoded(prepare_image(encode(image, fmt, exif=exif.tobytes()), FIT, LIMITS).png)
    assert out.size == (32, 64)
    assert near(px(out, (16, 8)), hostile.PRODUCT) and near(px(out, (16, 56)), WHITE_PX)


def test_hostile_exif_rotated_jpeg_is_upright() -> None:
    out = decoded(prepare_image(hostile.exif_rotated_jpeg(), FIT, LIMITS).png)
    assert out.size == (32, 64)
    assert near(px(out, (16, 8)), hostile.PRODUCT) and near(px(out, (16, 56)), WHITE_PX)


def test_corrupt_exif_is_ignored_not_fatal() -> None:
    out = prepare_image(hostile.corrupt_exif_jpeg(), FIT, LIMITS)
    assert (out.width, out.height) == (64, 48)  # as stored: no orientation could be read


def test_multi_page_tiff_uses_its_first_page() -> None:
    pages = [hostile.product((80, 60)), hostile.product((80, 60), hostile.OTHER)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    centre, _ = centre_and_corner(prepare_image(data, FIT, LIMITS).png)
    assert near(centre, hostile.PRODUCT)


@pytest.mark.parametrize(
    ("mode", "options"),
    [("1", {}), ("P", {}), ("P", {"compression": 1}), ("RGB", {}), ("RGBA", {})],
    ids=["1-bit", "8-bit palette", "RLE8", "24-bit", "32-bit"],
)
def test_bmp_variants(mode: str, options: dict) -> None:
    image = hostile.product((80, 60)).convert(mode)
    out = prepare_image(encode(image, "BMP", **options), FIT, LIMITS)
    assert out.source_format == "BMP" and (out.width, out.height) == (64, 48)


@pytest.mark.parametrize("compression", ["raw", "tiff_lzw", "tiff_deflate", "packbits", "jpeg"])
def test_tiff_compressions(compression: str) -> None:
    data = encode(hostile.product((80, 60)), "TIFF", compression=compression)
    centre, _ = centre_and_corner(prepare_image(data, FIT, LIMITS).png)
    assert near(centre, hostile.PRODUCT)


# -- decompression bombs: our header check, before any decoding -------------------------------

BOMBS = {
    "png-complete": hostile.png_bomb,
    "png-header": hostile.png_header_bomb,
    "gif-screen": hostile.gif_bomb,
    "tiff-header": lambda: _tiff_header_bomb(40000, 40000),
    "bmp-header": lambda: _bmp_header_bomb(40000, 40000),
}


def _tiff_header_bomb(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF IFD announcing width x height RGB with one 6-byte strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample (one value: fine for a sketch of a bomb)
        (262, 3, 1, 1),  # Photometric: BlackIsZero
        (273, 4, 1, 8 + 2 + 12 * 7 + 4),  # StripOffsets: right after the IFD
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 6),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, _, value in entries)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 6


def _bmp_header_bomb(width: int, height: int) -> bytes:
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40) + header + b"\0" * 16


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_by_our_header_check_before_decoding(name: str, monkeypatch) -> None:
    from PIL import ImageFile

    data = BOMBS[name]()
    assert len(data) < 200_000
    assert Image.MAX_IMAGE_PIXELS is None  # Pillow's own guard is not what saves us ...

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("a bomb reached the decoder")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match=r"40000x40000 = 1600000000 pixels is over the limit"):
        prepare_image(data, PAD, LIMITS)
    # ... and re-enabling it (another import might) still refuses, as image_too_large.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with pytest.raises(ImageTooLarge):
        prepare_image(data, PAD, LIMITS)


def test_webp_canvas_bomb_is_refused_before_decoding(monkeypatch) -> None:
    """An animated WebP whose VP8X canvas claims 16383x16383 around a tiny frame."""
    from PIL import ImageFile

    data = bytearray(hostile.animated("WEBP"))
    vp8x = data.find(b"VP8X")
    data[vp8x + 12 : vp8x + 18] = (16382).to_bytes(3, "little") * 2  # width-1, height-1
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(ImageTooLarge, match="16383x16383 = 268402689 pixels is over the limit"):
        prepare_image(bytes(data), PAD, LIMITS)


def test_our_pixel_limit_decides_not_pillows() -> None:
    """A deployment may allow more than Pillow's 89 MP guard; no decoding happens here."""
    from services.inference.image.preprocess import open_checked

    big = hostile.png_header_bomb(12000, 12000)  # 144 MP: past Pillow's 2x error threshold
    image = open_checked(big, ImageLimits(max_pixels=150_000_000))
    assert image.size == (12000, 12000)
    with pytest.raises(ImageTooLarge, match="144000000 pixels is over the limit of 100000000"):
        open_checked(big, ImageLimits(max_pixels=100_000_000))


def test_png_metadata_bomb_is_image_too_large_not_a_crash() -> None:
    with pytest.raises(ImageTooLarge, match="metadata"):
        prepare_image(hostile.png_text_bomb(), PAD, LIMITS)
    iccp = hostile.png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 20_000_000, 9))
    data = hostile.png_raw(8, 8, 8, 0, zlib.compress(b"\0" * 72), iccp)
    with pytest.raises(ImageTooLarge, match="metadata"):
        prepare_image(data, PAD, LIMITS)


# -- precise messages for what is not an image ------------------------------------------------


def _without_components(jpeg: bytes) -> bytes:
    """A JPEG whose frame header (SOF0) declares zero colour components."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    data[sof + 9] = 0
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (hostile.TEXT, "plain text"),
        ("Descrição: tênis\n".encode() * 200, "plain text"),  # multi-byte cut at 1024 bytes
        (hostile.HTML, "HTML"),
        (hostile.SVG, "SVG"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (hostile.PDF, "PDF"),
        (hostile.zip_archive(), "ZIP"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 20, "gzip"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1", "AVIF"),
        (b"RIFF\x24\0\0\0WAVEfmt ", "RIFF"),
        (b"8BPS\0\x01" + b"\0" * 40, "Photoshop"),
        (_without_components(hostile.jpeg()), "JPEG signature, corrupt header"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "PNG signature, corrupt header"),
        (bytes(range(256)) * 4, "not a recognised image format"),
    ],
    ids=[
        *["text", "text-utf8", "html", "svg", "svg-bare", "pdf", "zip", "gzip", "heic", "avif"],
        *["riff", "psd", "jpeg-bad-sof", "png-bad-ihdr", "binary"],
    ],
)
def test_non_images_say_what_they_look_like(data: bytes, fragment: str) -> None:
    with pytest.raises(ImageError, match="not a recognised image format") as caught:
        prepare_image(data, PAD, LIMITS)
    assert type(caught.value) is ImageError and caught.value.reason == "bad_image"
    assert fragment.lower() in str(caught.value).lower()


@pytest.mark.parametrize(
    "data",
    [encode(Image.new("RGB", (8, 8)), fmt) for fmt in ("ICO", "PCX", "TGA", "PPM", "QOI")]
    + [b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"],
    ids=["ico", "pcx", "tga", "ppm", "qoi", "eps"],
)
def test_formats_outside_the_accepted_set_are_never_parsed(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a recognised image format"):
        prepare_image(data, PAD, LIMITS)


# -- fuzzing: whatever the bytes, the answer is an image or an ImageError ---------------------


def _fuzz_seeds() -> dict[str, bytes]:
    base = Image.fromarray((np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "jpeg": encode(base, "JPEG", exif=exif.tobytes()),
        "png": encode(base, "PNG", exif=exif.tobytes()),
        "png-palette": encode(base.convert("P"), "PNG", transparency=3),
        "gif": hostile.animated("GIF"),
        "webp": encode(base, "WEBP", exif=exif.tobytes()),
        "webp-animated": hostile.animated("WEBP"),
        "bmp": encode(base, "BMP"),
        "tiff": encode(base, "TIFF", compression="tiff_lzw", exif=exif.tobytes()),
        "cmyk": hostile.cmyk_jpeg(),
        "ycck": hostile.ycck_jpeg(),
        "png16": hostile.png16_rgb(),
    }


@pytest.mark.parametrize("seed_name", list(_fuzz_seeds()))
def test_mutated_images_end_as_an_image_or_an_image_error(seed_name: str) -> None:
    seed = _fuzz_seeds()[seed_name]
    rng = np.random.default_rng(sum(seed_name.encode()))
    small = ImageLimits(max_pixels=4_000_000)  # a mutated header must not allocate gigabytes
    for _ in range(250):
        data = bytearray(seed)
        kind = rng.integers(0, 3)
        if kind == 0:  # flip a few bytes
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:  # truncate
            data = data[: int(rng.integers(1, len(data)))]
        else:  # overwrite a run with random bytes
            at, n = int(rng.integers(0, len(data))), int(rng.integers(1, 16))
            data[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        with contextlib.suppress(ImageError):  # anything else fails the test
            prepare_image(bytes(data), FIT, small)


# -- large photos: reduced-scale decoding, one resize, the turn after it, a fast PNG -------------


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients + mid-frequency texture + noise + a few shapes: compresses like a photo."""
    rng = np.random.default_rng(seed)
    small = rng.normal(0, 1, (height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    texture = np.asarray(
        Image.fromarray(((small * 40) + 128).clip(0, 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    yy = np.linspace(0, 60, height, dtype=np.float32)[:, None, None]
    arr = texture * 0.6 + yy + rng.normal(0, 5, (height, width, 3)).astype(np.float32)
    image = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    image.paste((200, 30, 30), (width // 8, height // 8, width // 3, height // 2))
    return image


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size each JPEG is actually decoded at (after draft), recorded as it is loaded."""
    from PIL import JpegImagePlugin

    sizes: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.load

    def load(self):
        decoding = bool(self.tile)  # later calls find the pixels loaded and return them
        result = original(self)
        if decoding:
            sizes.append(self.im.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    return sizes


@pytest.mark.parametrize(
    ("source", "size", "decoded_at"),
    [
        ((6000, 4000), 336, (750, 500)),  # 24 MP at 1/8
        ((6000, 4000), 896, (1500, 1000)),  # 24 MP at 1/4
        ((4000, 3000), 896, (1000, 750)),  # 4:3 at 1/4 (a square draft request gave 1/2)
        ((4000, 6000), 896, (1000, 1500)),  # portrait, as stored
        ((1600, 1200), 1024, (1600, 1200)),  # no smaller scale covers 1024: full size
    ],
)
def test_large_jpeg_is_decoded_at_the_coarsest_dct_scale_covering_the_encoder(
    decoded_sizes: list[tuple[int, int]],
    source: tuple[int, int],
    size: int,
    decoded_at: tuple[int, int],
) -> None:
    data = encode(Image.new("RGB", source, (90, 120, 200)), "JPEG", quality=90)
    out = prepare_image(data, EncoderInput(size, "pad"), LIMITS)
    assert decoded_sizes == [decoded_at]
    assert max(decoded_at) >= size  # never decoded below what the encoder needs
    assert (out.width, out.height) == (size, size)
    assert (out.source_width, out.source_height) == source


def test_draft_request_keeps_the_long_side_at_the_encoder_size() -> None:
    from services.inference.image.preprocess import draft_request

    target = EncoderInput(896, "pad")
    assert draft_request(6000, 4000, target) == (896, 597)
    assert draft_request(4000, 6000, target) == (597, 896)
    assert draft_request(20000, 10, target) == (896, 1)  # never a zero side
    for width, height in [(6000, 4000), (4000, 3000), (7001, 3), (897, 896), (12000, 5000)]:
        request = draft_request(width, height, target)
        scale = min(width // request[0], height // request[1])
        assert width / scale >= 896 or height / scale >= 896


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
def test_large_photo_matches_a_full_decode_and_resize(orientation: int) -> None:
    """Quality: reduced-scale decode + one resize + the turn after it, against the naive path
    (full decode, exif_transpose, LANCZOS), pixel by pixel."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_photo(3200, 2400), "JPEG", quality=90, exif=exif.tobytes())
    target = EncoderInput(336, "fit")
    ours = np.asarray(decoded(prepare_image(data, target, LIMITS).png), dtype=np.int16)
    naive = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    naive = naive.resize(ours.shape[1::-1], Image.Resampling.LANCZOS)
    diff = np.abs(ours - np.asarray(naive, dtype=np.int16))
    assert ours.shape == (*(252, 336)[:: 1 if orientation in (1, 3) else -1], 3)
    assert diff.mean() < 2.0, diff.mean()
    assert np.percentile(diff, 99) < 16


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (33, 17), (336, 336), (895, 601)])
def test_encode_png_is_lossless_and_standard(size: tuple[int, int], level: int) -> None:
    import cv2

    from services.inference.image.preprocess import encode_png

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), np.uint8)
    pixels[: size[1] // 2] = 255  # a flat white band, like a letterbox margin
    png = encode_png(Image.fromarray(pixels), level)
    image = decoded(png)
    assert image.format == "PNG" and image.mode == "RGB" and image.size == size
    assert np.array_equal(np.asarray(image), pixels)
    # A second, independent decoder (libpng via OpenCV) reads the same pixels.
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and np.array_equal(bgr[..., ::-1], pixels)


def test_encode_png_sizes() -> None:
    """Stored (what goes to llama.cpp): the raw pixels plus a few bytes per row and block;
    compressed: no larger than Pillow's ``compress_level=1``."""
    from services.inference.image.preprocess import encode_png

    canvas = Image.new("RGB", (896, 896), (255, 255, 255))
    canvas.paste(_photo(896, 597), (0, 150))
    raw = 896 * 896 * 3
    assert raw < len(encode_png(canvas)) < raw * 1.01
    assert len(encode_png(canvas, 1)) <= len(encode(canvas, "PNG", compress_level=1)) * 1.05


def test_encode_png_refuses_other_modes() -> None:
    from services.inference.image.preprocess import encode_png

    with pytest.raises(ValueError, match="RGB"):
        encode_png(Image.new("RGBA", (4, 4)))


# -- a PNG's integrity: what Pillow does not check (services/inference/image/png_check.py) -----


def test_a_png_with_zeroed_idat_bytes_is_a_bad_image_not_a_grey_picture() -> None:
    """The hostile review's file: Pillow alone decodes it to a half-grey picture."""
    with pytest.raises(ImageError, match="chunk IDAT at byte 33 fails its CRC") as caught:
        prepare_image(hostile.zeroed_png(), PAD, LIMITS)
    assert caught.value.reason == "bad_image"


SHOT = hostile.encode(hostile.product((640, 480)), "PNG")


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (hostile.zeroed(hostile.png_idat(SHOT)), "corrupt PNG"),  # the encoder wrote zeros
        (hostile.png_idat(SHOT)[:-4], "truncated PNG"),  # no Adler-32: the stream has no end
        (hostile.png_idat(SHOT)[:-40], "truncated PNG"),
        (zlib.compress(b"\0" * (481 * 1921)), "inflates past"),  # a row more than the header
        (zlib.compress(b"\0" * (479 * 1921)), f"holds {479 * 1921} bytes"),  # a row less
    ],
    ids=["zeroed", "no-checksum", "cut", "too-long", "too-short"],
)
def test_a_broken_zlib_stream_with_right_crcs_is_a_bad_image(stream: bytes, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment) as caught:
        prepare_image(hostile.png_with_stream(stream), PAD, LIMITS)
    assert caught.value.reason == "bad_image"


def test_a_png_cut_short_or_with_a_bad_crc_after_its_image_data_is_a_bad_image() -> None:
    """Pillow checks the CRCs of the chunks before IDAT itself; those after it, nobody did."""
    whole = hostile.encode(hostile.product((64, 48)), "PNG")
    with pytest.raises(ImageError, match="truncated PNG"):
        prepare_image(whole[:-12], PAD, LIMITS)  # IEND gone
    text = hostile.png_chunk(b"tEXt", b"Comment\0ok")
    damaged = bytearray(text)
    damaged[-1] ^= 0xFF
    at = len(whole) - 12  # before IEND
    with pytest.raises(ImageError, match="chunk tEXt at byte"):
        prepare_image(whole[:at] + bytes(damaged) + whole[at:], PAD, LIMITS)
    prepare_image(whole[:at] + text + whole[at:], PAD, LIMITS)  # the same chunk, whole: fine


def _adam7(width: int, height: int, row_bytes: int) -> bytes:
    """Filter-0 rows of zero samples for each interlace pass (``row_bytes(columns)``)."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    out = b""
    for x0, y0, dx, dy in [*passes, (0, 1, 1, 2)]:
        columns, rows = len(range(x0, width, dx)), len(range(y0, height, dy))
        if columns and rows:
            out += (b"\0" * (1 + (columns * row_bytes + 7) // 8)) * rows
    return out


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize(
    ("depth", "colour", "bits"),
    [(1, 0, 1), (4, 3, 4), (8, 2, 24), (16, 4, 32), (8, 6, 32), (16, 6, 64)],
)
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (17, 9)])
def test_whole_pngs_of_every_layout_pass_the_integrity_check(
    size: tuple[int, int], depth: int, colour: int, bits: int, interlaced: bool
) -> None:
    """The size the stream is held to, for each bit depth, colour type and interlacing: a PNG
    written to the letter passes (a wrong count would refuse good photos)."""
    width, height = size
    if interlaced:
        raw = _adam7(width, height, bits)
    else:
        raw = (b"\0" * (1 + (width * bits + 7) // 8)) * height
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    plte = hostile.png_chunk(b"PLTE", bytes(hostile.PRODUCT)) if colour == 3 else b""
    data = (
        b"\x89PNG\r\n\x1a\n"
        + hostile.png_chunk(b"IHDR", ihdr)
        + plte
        + hostile.png_chunk(b"IDAT", zlib.compress(raw))
        + hostile.png_chunk(b"IEND", b"")
    )
    assert prepare_image(data, PAD, LIMITS).source_width == width


def test_a_png_in_many_idat_chunks_passes() -> None:
    noise = (np.random.default_rng(3).random((400, 400, 3)) * 255).astype(np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    assert data.count(b"IDAT") > 3  # Pillow writes 64 KiB chunks
    prepare_image(data, PAD, LIMITS)
