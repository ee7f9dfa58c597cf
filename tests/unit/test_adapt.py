"""Domain adaptation (services/inference/image/adapt.py): each correction does what it is for, auto
corrects what it measures and nothing else, settings refuse what cannot work, and
``prepare_image`` applies it to the photo, not to the letterbox."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from services.inference.image import adapt as A
from services.inference.image.preprocess import EncoderInput, ImageLimits, prepare_image
from services.inference.settings import EngineSettings

WARM = np.array([1.0, 0.93, 0.82])  # tungsten-like: blue and green lose light
COLD = np.array([0.86, 0.94, 1.0])  # shade-like


def lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit CIELAB with a*/b* centred on 0 (L stays 0..255)."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3)
    out = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).reshape(rgb.shape)
    return out.astype(np.float64) - np.array([0.0, 128.0, 128.0])


def chroma(rgb: np.ndarray) -> float:
    """Chroma of the mean colour of a region."""
    values = lab(rgb).reshape(-1, 3).mean(axis=0)
    return float(np.hypot(values[1], values[2]))


def lightness(rgb: np.ndarray) -> np.ndarray:
    return lab(rgb)[..., 0] * (100.0 / 255.0)


def cast(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    return np.clip(rgb.astype(np.float64) * gains, 0, 255).astype(np.uint8)


def noisy(rgb: np.ndarray, sigma: float = 3.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, rgb.shape)
    return np.clip(rgb.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def product_shot(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A product (an ellipse with a shaded side) on a white sweep, like a catalogue photo."""
    width, height = size
    rgb = np.full((height, width, 3), 246, np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((xx - width / 2) / (width * 0.3)) ** 2 + ((yy - height / 2) / (height * 0.35)) ** 2
    shade = 0.55 + 0.45 * (1 - xx / width)  # lit from the left
    body = np.asarray(colour, np.float64)[None, None, :] * shade[..., None]
    rgb[inside <= 1] = np.clip(body, 0, 255).astype(np.uint8)[inside <= 1]
    cv2.ellipse(rgb, (width // 2, int(height * 0.88)), (width // 4, 8), 0, 0, 360, (70, 70, 70), -1)
    return noisy(rgb)


def scene(size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A varied scene that averages to grey (what gray-world assumes), with a grey patch."""
    width, height = size
    rgb = np.zeros((height, width, 3), np.uint8)
    colours = [(200, 40, 40), (40, 200, 200), (40, 200, 40), (200, 40, 200), (40, 40, 200)]
    colours += [(200, 200, 40)]
    stripe = width // len(colours)
    for i, colour in enumerate(colours):
        rgb[:, i * stripe : (i + 1) * stripe] = colour
    rgb[:, len(colours) * stripe :] = 120
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 128  # the grey patch
    return noisy(rgb)


def textured(size: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """A photo-like surface: smooth blotches of colour and light plus fine detail, the kind of
    texture CLAHE has something to work on (a flat synthetic shape has none)."""
    width, height = size
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.normal(0, 1, (6, 8, 3)).astype(np.float32), (width, height))
    detail = cv2.resize(rng.normal(0, 1, (height // 4, width // 4, 3)).astype(np.float32), size)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    arr = 60 + 140 * yy + 40 * smooth + 25 * detail
    return noisy(np.clip(arr, 0, 255).astype(np.uint8), seed=seed)


def hazy(rgb: np.ndarray) -> np.ndarray:
    """Washed out: a third of the range left, lifted towards light grey."""
    return (rgb.astype(np.float64) * 0.35 + 150).astype(np.uint8)


def spread(rgb: np.ndarray) -> float:
    low, high = np.percentile(lightness(rgb), (1, 99))
    return float(high - low)


def centre(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    return rgb[height * 2 // 5 : height * 3 // 5, width * 2 // 5 : width * 3 // 5]


def border_band(rgb: np.ndarray) -> np.ndarray:
    return rgb[:10].reshape(-1, 3)


def encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def cdf_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two 8-bit channels' cumulative histograms (0..1)."""
    ha = np.bincount(a.ravel(), minlength=256).cumsum() / a.size
    hb = np.bincount(b.ravel(), minlength=256).cumsum() / b.size
    return float(np.abs(ha - hb).mean())


# -- the corrections ------------------------------------------------------------------------------


def test_gray_world_removes_a_synthetic_cast() -> None:
    clean = scene()
    for gains in (WARM, COLD):
        tinted = cast(clean, gains)
        assert chroma(centre(tinted)) > 5  # the grey patch is visibly tinted
        corrected = A.gray_world(tinted)
        assert chroma(centre(corrected)) < 2.5


def test_white_patch_makes_a_tinted_white_backdrop_white_again() -> None:
    tinted = cast(product_shot((180, 40, 40)), WARM)
    assert chroma(border_band(tinted)) > 10
    corrected = A.white_patch(tinted)
    assert chroma(border_band(corrected)) < 3
    assert border_band(corrected).mean() > 235


def test_neutral_balance_neutralises_the_backdrop_and_keeps_the_product_colour() -> None:
    clean = product_shot((40, 60, 190))  # a blue product
    corrected = A.neutral_balance(cast(clean, WARM))
    assert chroma(border_band(corrected)) < 3
    hue = lab(centre(corrected)).reshape(-1, 3).mean(axis=0)
    original = lab(centre(clean)).reshape(-1, 3).mean(axis=0)
    assert np.hypot(*(hue[1:] - original[1:])) < 6  # back to the product's own a*/b*


def test_gray_world_greys_a_product_filling_the_frame_and_neutral_does_not() -> None:
    """Why auto uses the backdrop, not gray-world: a red product has no grey to find."""
    red = noisy(np.full((200, 200, 3), (190, 35, 35), np.uint8))
    assert chroma(A.gray_world(red)) < 0.3 * chroma(red)
    assert A.neutral_balance(red) is red  # no light neutral border: nothing to balance on


def test_clahe_raises_the_lightness_spread_of_a_low_contrast_photo() -> None:
    flat = hazy(textured())
    out = A.clahe_lightness(flat)
    assert spread(out) > 1.15 * spread(flat)
    detail = lambda rgb: lightness(rgb) - cv2.GaussianBlur(lightness(rgb), (0, 0), 8)  # noqa: E731
    assert detail(out).std() > 2 * detail(flat).std()  # local contrast is what it is for


def test_stretch_undoes_a_haze_chroma_included() -> None:
    clean = product_shot((40, 60, 190))
    out = A.stretch_levels(hazy(clean))
    assert spread(out) > 0.9 * spread(clean) > 2 * spread(hazy(clean))
    assert chroma(centre(out)) > 0.8 * chroma(centre(clean)) > 2 * chroma(centre(hazy(clean)))
    ramp = np.repeat(np.linspace(0, 255, 320)[None, :, None], 240, axis=0).repeat(3, axis=2)
    full = ramp.astype(np.uint8)
    assert A.stretch_levels(full) is full  # already black to white: nothing to do


def test_clahe_keeps_the_hue() -> None:
    for colour in ((40, 60, 190), (190, 35, 35), (60, 120, 60)):
        clean = product_shot(colour)
        before = lab(centre(clean)).reshape(-1, 3).mean(axis=0)
        after = lab(centre(A.clahe_lightness(clean))).reshape(-1, 3).mean(axis=0)
        turn = np.degrees(np.arctan2(after[2], after[1]) - np.arctan2(before[2], before[1]))
        assert abs((turn + 180) % 360 - 180) < 3


def test_histogram_matching_moves_y_towards_the_reference(tmp_path: Path) -> None:
    reference = product_shot((200, 120, 40))
    path = tmp_path / "reference.png"
    Image.fromarray(reference).save(path)
    ref = A.load_reference(path)
    photo = (product_shot((60, 90, 160)).astype(np.float64) * 0.5 + 60).astype(np.uint8)
    y = lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0]  # noqa: E731
    cr = lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 1]  # noqa: E731
    matched = A.match_histogram(photo, ref)
    assert cdf_distance(y(matched), y(reference)) < 0.3 * cdf_distance(y(photo), y(reference))
    # Y only: the chroma histogram is not pulled to the reference's (it follows Y a little).
    assert cdf_distance(cr(matched), cr(reference)) > 0.5 * cdf_distance(cr(photo), cr(reference))
    both = A.match_histogram(photo, ref, chroma=True)
    assert cdf_distance(cr(both), cr(reference)) < 0.6 * cdf_distance(cr(photo), cr(reference))


# -- auto -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [(190, 35, 35), (40, 60, 190), (230, 200, 60), (30, 30, 30)])
def test_auto_leaves_a_well_balanced_photo_untouched(colour: tuple[int, int, int]) -> None:
    image = Image.fromarray(product_shot(colour))
    result = A.adapt(image, A.adapt_mode("auto"))
    assert result.image is image and result.applied == ()
    assert result.decision is not None and result.decision.corrections == ()


def test_auto_corrects_a_cast_photo_and_says_why() -> None:
    image = Image.fromarray(cast(product_shot((40, 60, 190)), WARM))
    result = A.adapt(image, A.adapt_mode("auto"))
    assert result.applied == ("neutral",)
    assert result.decision is not None and "cast" in result.decision.reasons[0]
    assert result.decision.measurement.cast_b > 5  # warm: towards yellow
    assert chroma(border_band(np.asarray(result.image))) < 3


def test_auto_enhances_a_flat_photo() -> None:
    flat = (textured().astype(np.float64) * 0.12 + 180).astype(np.uint8)  # fog: no range left
    result = A.adapt(Image.fromarray(flat), A.adapt_mode("auto"))
    assert result.applied == ("clahe",)
    assert result.decision is not None and any("low contrast" in r for r in result.decision.reasons)
    assert spread(np.asarray(result.image)) > 1.15 * spread(flat)


def test_auto_takes_a_coloured_backdrop_for_a_surface_not_a_cast() -> None:
    wood = noisy(np.full((240, 320, 3), (217, 198, 165), np.uint8))  # light wood, chroma ~20
    wood[60:180, 100:220] = (40, 60, 190)
    decision = A.adapt(Image.fromarray(wood), A.adapt_mode("auto")).decision
    assert decision is not None and decision.corrections == ()
    assert "coloured backdrop" in decision.reasons[0]


def test_auto_leaves_a_product_filling_the_frame_alone() -> None:
    """No backdrop to read a cast from: its colour may be the product's, so auto keeps it."""
    image = Image.fromarray(noisy(np.full((200, 200, 3), (200, 150, 60), np.uint8)))
    decision = A.adapt(image, A.adapt_mode("auto")).decision
    assert decision is not None and "neutral" not in decision.corrections


def test_an_explicit_mode_runs_in_canonical_order_and_reports_what_changed() -> None:
    image = Image.fromarray(cast(product_shot((60, 120, 60)), COLD))
    result = A.adapt(image, A.adapt_mode("clahe+whitepatch"))
    assert result.applied == ("whitepatch", "clahe") and result.decision is None
    assert A.adapt(image, A.OFF).image is image


# -- settings -------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("VITRINE_PREPROCESS_ADAPT", raising=False)
    monkeypatch.delenv("VITRINE_PREPROCESS_ADAPT_REFERENCE", raising=False)
    return monkeypatch


def test_settings_default_is_off(clean_env: pytest.MonkeyPatch) -> None:
    settings = EngineSettings()
    assert settings.preprocess_adapt == "off" and not settings.adapt_mode.active


def test_settings_read_and_canonicalise_the_mode(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT", "CLAHE + WhitePatch")
    settings = EngineSettings()
    assert settings.preprocess_adapt == "whitepatch+clahe"
    assert settings.adapt_mode.corrections == ("whitepatch", "clahe")
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT", "auto")
    assert EngineSettings().adapt_mode.auto


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("grayworl", "unknown correction 'grayworl'"),
        ("grayworld+whitepatch", "exclude each other"),
        ("auto+clahe", "auto stands alone"),
        ("clahe+clahe", "named twice"),
        ("match", "set VITRINE_PREPROCESS_ADAPT_REFERENCE"),
    ],
)
def test_settings_refuse_a_bad_mode_with_a_clear_message(
    clean_env: pytest.MonkeyPatch, value: str, message: str
) -> None:
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT", value)
    with pytest.raises(ValidationError, match=message):
        EngineSettings()


def test_settings_check_the_reference(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "ref.png"
    Image.fromarray(product_shot((200, 120, 40))).save(path)
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT_REFERENCE", str(path))
    with pytest.raises(ValidationError, match="does not use it"):
        EngineSettings()  # a reference with no match: the operator meant one
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT", "whitepatch+match-chroma")
    mode = EngineSettings().adapt_mode
    assert mode.reference is not None and mode.corrections == ("whitepatch", "match-chroma")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT_REFERENCE", str(tmp_path / "broken.png"))
    with pytest.raises(ValidationError, match="cannot read"):
        EngineSettings()
    clean_env.setenv("VITRINE_PREPROCESS_ADAPT_REFERENCE", str(tmp_path / "missing.png"))
    with pytest.raises(ValidationError, match="cannot read"):
        EngineSettings()


# -- prepare_image --------------------------------------------------------------------------------

TARGET = EncoderInput(128, "pad")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_prepare_image_without_adaptation_exposes_the_unpadded_pixels(fmt: str) -> None:
    photo = product_shot((40, 60, 190), (400, 200))
    out = prepare_image(encode(photo, fmt), TARGET, ImageLimits())
    png = Image.open(io.BytesIO(out.png))
    assert png.format == "PNG" and png.size == (128, 128)
    assert out.adapt_applied == () and out.adapt_ms == 0.0
    assert out.pixels is not None and out.pixels.size == (128, 64)
    inner = np.asarray(png.convert("RGB"))[32:96]
    assert np.array_equal(inner, np.asarray(out.pixels))


def test_prepare_image_adapts_the_photo_and_not_the_pad() -> None:
    photo = cast(product_shot((40, 60, 190), (400, 200)), WARM)
    data = encode(photo)
    plain = prepare_image(data, TARGET, ImageLimits())
    out = prepare_image(data, TARGET, ImageLimits(), adapt=A.adapt_mode("auto"))
    assert out.adapt_applied == ("neutral",) and out.adapt_ms > 0.0
    png = np.asarray(Image.open(io.BytesIO(out.png)).convert("RGB"))
    assert (png[:30] == 255).all() and (png[-30:] == 255).all()  # the pad stays pure white
    assert out.pixels is not None and out.pixels.size == (128, 64)
    assert np.array_equal(png[32:96], np.asarray(out.pixels))
    assert plain.pixels is not None
    assert chroma(border_band(np.asarray(plain.pixels))) > 10
    assert chroma(border_band(np.asarray(out.pixels))) < 3


def test_the_engine_prepares_with_its_settings_mode(clean_env: pytest.MonkeyPatch) -> None:
    from services.inference.engine.card_engine import (
        CardEngine,  # loads llama.cpp: not at collection
    )

    clean_env.setenv("VITRINE_PREPROCESS_ADAPT", "whitepatch")
    stand_in = SimpleNamespace(
        settings=EngineSettings(), encoder_input=TARGET, limits=ImageLimits()
    )
    data = encode(cast(product_shot((40, 60, 190), (400, 200)), WARM))
    prepared = CardEngine.prepare(stand_in, data)  # type: ignore[arg-type]
    assert prepared.adapt_applied == ("whitepatch",)
