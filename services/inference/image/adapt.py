"""Domain adaptation: pulling a shop's photo towards what a model has seen before it encodes it.

Product photos are taken under tungsten bulbs, in shade, through a window: a colour cast or a
washed-out, low-contrast picture is a *domain shift* from the well-lit catalogue shots the
vision encoder learned from, and it moves the colour a shopper would name (a white mug under a
warm bulb reads as cream).  The design report (III.A.2) asks for colour correction, contrast
enhancement and histogram matching in YCrCb; each is one function here, on 8-bit RGB arrays,
and ``adapt`` runs the ones a mode names.

They run on the *resized* picture (a few hundred thousand pixels, so milliseconds) and before the
letterbox pad: the white margins are not the photo and must not weigh in its statistics.

``auto`` corrects only what it measures (``decide``): a cast is read off the photo's light,
near-neutral border (the backdrop of a product shot, which is meant to be white or grey), not off
the product, so a red product stays red, and corrected by ``neutral`` (the gains that make that
backdrop neutral); a photo with next to no tonal range (L* between its 1st and 99th
percentiles) gets CLAHE.  A photo that shows neither is left exactly as it is, the same object.
Every explicit correction is applied whatever the photo: gray-world assumes the scene averages
to grey, which a product shot does not (it greys a red mug), white patch takes the brightest
pixels for white, and ``stretch`` (global levels) blackens a product's shadows; they are for
comparison and for catalogues where their assumption holds.  What each does to the colour of
generated product photos of known colour is measured in ``bench/adapt_bench.py``; the default is
``off`` (settings.py says why).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# One OpenCV thread per call: a card's pixels are small, and the cores belong to llama.cpp's
# thread team (a second pool of busy threads beside it slows every decode).
cv2.setNumThreads(1)


Correction = Literal[
    "grayworld", "whitepatch", "neutral", "match", "match-chroma", "stretch", "clahe"
]

# The order corrections run in, whatever order a mode names them: the white point first (a
# histogram or a contrast measured through a cast would be the cast's), then the match to the
# reference (or the global stretch), then local contrast.
CORRECTIONS: tuple[Correction, ...] = (
    "grayworld",
    "whitepatch",
    "neutral",
    "match",
    "match-chroma",
    "stretch",
    "clahe",
)
# Two white balances would fight, and so would two global tone curves.
_EXCLUSIVE: tuple[frozenset[str], ...] = (
    frozenset({"grayworld", "whitepatch", "neutral"}),
    frozenset({"match", "match-chroma", "stretch"}),
)
_NEEDS_REFERENCE = frozenset({"match", "match-chroma"})

_HELP = (
    "off, auto, or corrections joined by '+' from grayworld | whitepatch | neutral (one white "
    "balance), match | match-chroma (needs VITRINE_PREPROCESS_ADAPT_REFERENCE) | stretch (one "
    "tone curve), and clahe, e.g. grayworld+clahe"
)

# -- what ``auto`` looks at (CIELAB units: L* 0..100, a*/b* about -128..127) -------------------

STATS_PIXELS = 65_536
"""Statistics are read on a strided sample of about this many pixels: a percentile or a mean
does not need all 600 000 of an 896 px photo, and the sample keeps ``decide`` well under 1 ms."""
BORDER = 0.06
"""Width of the border band, as a fraction of the short side, where a backdrop is looked for."""
BACKDROP_MIN_L = 45.0
"""Border pixels darker than this are not taken for a light backdrop."""
BACKDROP_MAX_CHROMA = 35.0
"""...nor those more colourful than this: a cast of a few tens of units at most, beyond that a
coloured surface (a wooden table, a red wall) the product stands on."""
BACKDROP_MIN_FRACTION = 0.5
"""Part of the border that must look like a backdrop before its colour is called a cast."""
CAST_MIN = 7.0
"""Chroma of the backdrop from which it counts as a cast.  A white sweep photographed well sits
within 1-2 units of neutral; grey card and gradient backdrops, a few percent off grey, reach 5-8
(``tests/support/colour_images.py``: 90th percentile 4-5); a warm or cool bulb puts 6-20 on them."""
CAST_MAX = 18.0
"""...and up to which: a backdrop more colourful than this is a coloured surface on purpose
(light wood is 20), not a white one under a bulb.  Measured on tests/support/colour_images.py: a
cast from 5 up touches 15 % of the clean photos and costs 1 % of their colours; 7..18 touches
none of them and still corrects 3 in 4 of the cast ones (bench/adapt_bench.py)."""
SPREAD_MIN = 15.0
"""L* range (1st to 99th percentile) below which a photo counts as flat.  Low on purpose: a
product of the backdrop's lightness is flat by nature (a grey mug on a grey card spans 6-15),
and the range does not tell a hazy photo from a clean one (both 25-45 on the generated sets);
only a photo with next to no tonal range gets CLAHE."""

MAX_GAIN = 2.5
"""No channel is amplified more than this: beyond it the "cast" is a missing channel (a photo of
a pure red object), and multiplying noise by 5 helps nobody."""
WHITE_PATCH_PERCENTILE = 99.0
"""White patch scales each channel's 99th percentile to 255, not its maximum: one specular or
hot pixel at 255 would otherwise make the correction a no-op."""
CLAHE_CLIP = 2.0
"""CLAHE's clip limit (OpenCV's default range 2-4): enough to lift a hazy photo without turning
a white backdrop's sensor noise into texture."""
CLAHE_TILES = 8
STRETCH_PERCENTILE = 0.5
"""Stretch takes the darkest and lightest 0.5 % of the photo for its black and white points."""
MAX_STRETCH = 3.0
"""...and multiplies contrast by at most this: a haze that leaves a third of the range is
undone, a white mug on a white sweep (little range, on purpose) is not blackened."""


@dataclass(frozen=True)
class Reference:
    """The histogram a ``match`` mode pulls each photo's towards, computed once per process."""

    path: Path
    levels: tuple[tuple[np.ndarray, np.ndarray], ...]
    """Per YCrCb channel: (cumulative fraction, level) at the levels the reference uses."""


@dataclass(frozen=True)
class AdaptMode:
    """A parsed ``VITRINE_PREPROCESS_ADAPT`` (with its reference, for ``match``)."""

    corrections: tuple[Correction, ...] = ()
    auto: bool = False
    reference: Reference | None = None

    @property
    def active(self) -> bool:
        return self.auto or bool(self.corrections)

    def __str__(self) -> str:
        if self.auto:
            return "auto"
        return "+".join(self.corrections) or "off"


OFF = AdaptMode()


@dataclass(frozen=True)
class Measurement:
    """What ``decide`` read off a photo."""

    backdrop_fraction: float
    """Part of the border band that is light and near neutral."""
    backdrop_rgb: tuple[float, float, float]
    """Mean RGB of those pixels (0..255); (0, 0, 0) when there are none."""
    cast_a: float
    """Mean a* of those pixels: + magenta, - green."""
    cast_b: float
    """Mean b* of those pixels: + yellow (warm light), - blue (shade, cold LEDs)."""
    l_low: float
    """1st percentile of L* over the whole photo."""
    l_high: float
    """99th percentile of L*."""

    @property
    def cast(self) -> float:
        return float(np.hypot(self.cast_a, self.cast_b))

    @property
    def spread(self) -> float:
        return self.l_high - self.l_low

    @property
    def has_backdrop(self) -> bool:
        return self.backdrop_fraction >= BACKDROP_MIN_FRACTION


@dataclass(frozen=True)
class Decision:
    """What ``auto`` chose for one photo, and why (for logs, tests and the benchmark)."""

    corrections: tuple[Correction, ...]
    reasons: tuple[str, ...]
    measurement: Measurement


class Adapted(NamedTuple):
    image: Image.Image
    applied: tuple[Correction, ...]
    """The corrections that changed the picture, in the order they ran."""
    decision: Decision | None
    """``auto``'s decision; None for an explicit mode."""


# -- parsing --------------------------------------------------------------------------------------


def parse_adapt(text: str) -> tuple[str, ...]:
    """The canonical tokens of a mode (``()`` for off, ``("auto",)``, or corrections in the order
    they run); raises ``ValueError`` with what is accepted, so a typo fails at start-up."""
    value = text.strip().lower()
    if value in ("", "off"):
        return ()
    tokens = [token.strip() for token in value.split("+")]
    if "auto" in tokens:
        if len(tokens) > 1:
            raise ValueError(
                f"auto stands alone, not combined ({text.strip()!r}); expected {_HELP}"
            )
        return ("auto",)
    unknown = [token for token in tokens if token not in CORRECTIONS]
    if unknown:
        raise ValueError(f"unknown correction {unknown[0]!r}; expected {_HELP}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"a correction is named twice in {text.strip()!r}")
    for group in _EXCLUSIVE:
        clash = sorted(group.intersection(tokens))
        if len(clash) > 1:
            raise ValueError(f"{' and '.join(clash)} exclude each other: choose one")
    return tuple(c for c in CORRECTIONS if c in tokens)


def canonical_adapt(text: str) -> str:
    """The mode as the settings keep it: lower case, corrections in the order they run."""
    tokens = parse_adapt(text)
    return "+".join(tokens) if tokens else "off"


def needs_reference(text: str) -> bool:
    return bool(_NEEDS_REFERENCE.intersection(parse_adapt(text)))


@functools.lru_cache(maxsize=8)
def adapt_mode(text: str, reference: Path | None = None) -> AdaptMode:
    """Parse a mode and load its reference, once (the engine asks for every photo); raises
    ``ValueError`` for a mode and reference that do not go together (a reference nothing uses
    is a mistake too: the operator meant a match)."""
    tokens = parse_adapt(text)
    if tokens == ("auto",):
        corrections: tuple[Correction, ...] = ()
    else:
        corrections = tuple(c for c in CORRECTIONS if c in tokens)
    wants = bool(_NEEDS_REFERENCE.intersection(tokens))
    if wants and reference is None:
        raise ValueError(
            f"VITRINE_PREPROCESS_ADAPT={canonical_adapt(text)} matches histograms to a reference "
            "photo: set VITRINE_PREPROCESS_ADAPT_REFERENCE to its path"
        )
    if reference is not None and not wants:
        raise ValueError(
            "VITRINE_PREPROCESS_ADAPT_REFERENCE is set but VITRINE_PREPROCESS_ADAPT="
            f"{canonical_adapt(text)} does not use it: add match or match-chroma, or unset it"
        )
    return AdaptMode(
        corrections=corrections,
        auto=tokens == ("auto",),
        reference=load_reference(reference) if reference is not None else None,
    )


@functools.lru_cache(maxsize=8)
def load_reference(path: Path, size: int = 1024) -> Reference:
    """The reference's YCrCb histograms, read once: settings validation and every image of the
    process share them.  It is shrunk to ``size`` first, as the photos it is matched to are."""
    try:
        with Image.open(path) as raw:
            if raw.format == "JPEG":
                raw.draft("RGB", (size, size))
            image = raw.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"VITRINE_PREPROCESS_ADAPT_REFERENCE: cannot read {path}: {exc}") from None
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    ycc = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2YCrCb)
    levels = []
    for channel in cv2.split(ycc):
        hist = _histogram(channel)
        used = hist > 0  # strictly increasing fractions, as np.interp wants
        levels.append((_cdf(hist)[used], np.arange(256, dtype=np.float64)[used]))
    return Reference(path=path, levels=tuple(levels))


# -- the corrections ------------------------------------------------------------------------------


def _histogram(channel: np.ndarray) -> np.ndarray:
    return cv2.calcHist([channel], [0], None, [256], [0, 256]).ravel().astype(np.float64)


def _cdf(hist: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(hist)
    return cdf / max(float(cdf[-1]), 1.0)


def _sample(rgb: np.ndarray) -> np.ndarray:
    """About ``STATS_PIXELS`` pixels of the photo, every n-th one (nearest neighbour: no pixel
    value is invented, and it is 5x faster than a strided numpy copy)."""
    height, width = rgb.shape[:2]
    scale = np.sqrt(STATS_PIXELS / (height * width))
    if scale >= 1.0:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)


def _gains(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Multiply each channel by its gain through one lookup table (a float image would cost
    three conversions of 600 000 pixels)."""
    gains = np.clip(gains, 1.0 / MAX_GAIN, MAX_GAIN)
    if np.allclose(gains, 1.0, atol=1e-3):
        return rgb
    table = np.arange(256, dtype=np.float64)[:, None] * gains[None, :]
    lut = np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(rgb, lut)


def gray_world(rgb: np.ndarray) -> np.ndarray:
    """Scale the channels so the photo averages to grey (Buchsbaum): right for a varied scene,
    wrong for a single-coloured product filling the frame, whose colour it removes."""
    means = np.asarray(cv2.mean(_sample(rgb))[:3], dtype=np.float64)
    if means.min() < 1.0:
        return rgb
    return _gains(rgb, means.mean() / means)


def white_patch(rgb: np.ndarray, percentile: float = WHITE_PATCH_PERCENTILE) -> np.ndarray:
    """Scale each channel so its ``percentile`` reaches 255 (max-RGB / Retinex): the brightest
    surface is taken for white, which on a product shot is the backdrop.  Only ever brightens."""
    tops = np.empty(3, dtype=np.float64)
    for c, channel in enumerate(cv2.split(_sample(rgb))):
        tops[c] = float(np.searchsorted(_cdf(_histogram(channel)), percentile / 100.0))
    if tops.min() < 1.0:
        return rgb
    return _gains(rgb, np.maximum(255.0 / tops, 1.0))


def _border(pixels: np.ndarray) -> np.ndarray:
    """The pixels of the border band, as (N, channels): where a product shot shows its
    backdrop."""
    height, width, channels = pixels.shape
    band = max(1, round(BORDER * min(height, width)))
    if 2 * band >= min(height, width):
        return pixels.reshape(-1, channels)
    parts = (
        pixels[:band].reshape(-1, channels),
        pixels[-band:].reshape(-1, channels),
        pixels[band:-band, :band].reshape(-1, channels),
        pixels[band:-band, -band:].reshape(-1, channels),
    )
    return np.concatenate(parts)


def _percentile_level(hist: np.ndarray, percentile: float) -> float:
    return float(np.searchsorted(_cdf(hist), percentile / 100.0))


def measure(rgb: np.ndarray) -> Measurement:
    """The statistics ``decide`` needs, from a sample of the photo."""
    sample = _sample(rgb)
    lab = cv2.cvtColor(sample, cv2.COLOR_RGB2LAB)  # 8-bit: L* x 2.55, a* and b* + 128
    hist = _histogram(np.ascontiguousarray(lab[..., 0]))
    l_low = _percentile_level(hist, 1.0) * (100.0 / 255.0)
    l_high = _percentile_level(hist, 99.0) * (100.0 / 255.0)
    border_lab = _border(lab).astype(np.float32)
    bl = border_lab[:, 0] * (100.0 / 255.0)
    ba, bb = border_lab[:, 1] - 128.0, border_lab[:, 2] - 128.0
    backdrop = (bl >= BACKDROP_MIN_L) & (ba * ba + bb * bb <= BACKDROP_MAX_CHROMA**2)
    count = int(np.count_nonzero(backdrop))
    if count:
        mean_rgb = _border(sample)[backdrop].mean(axis=0, dtype=np.float64)
        cast_a, cast_b = float(ba[backdrop].mean()), float(bb[backdrop].mean())
    else:
        mean_rgb, cast_a, cast_b = np.zeros(3), 0.0, 0.0
    return Measurement(
        backdrop_fraction=count / max(1, len(border_lab)),
        backdrop_rgb=(float(mean_rgb[0]), float(mean_rgb[1]), float(mean_rgb[2])),
        cast_a=cast_a,
        cast_b=cast_b,
        l_low=float(l_low),
        l_high=float(l_high),
    )


def neutral_balance(rgb: np.ndarray, measurement: Measurement | None = None) -> np.ndarray:
    """Scale the channels so the backdrop ``measure`` found becomes neutral, as bright as its
    brightest channel (a white sweep under a warm bulb becomes white again).  The gains come
    from the backdrop alone, so the product's own colour does not pull them; no backdrop, no
    change."""
    m = measurement if measurement is not None else measure(rgb)
    backdrop = np.asarray(m.backdrop_rgb, dtype=np.float64)
    if not m.has_backdrop or backdrop.min() < 1.0:
        return rgb
    return _gains(rgb, backdrop.max() / backdrop)


def _grey_levels() -> np.ndarray:
    """The sRGB grey level of each 8-bit L* (OpenCV's scale), never 0 (it is divided by)."""
    lab = np.zeros((1, 256, 3), np.uint8)
    lab[0, :, 0] = np.arange(256)
    lab[0, :, 1:] = 128
    grey = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)[0, :, 0].astype(np.float32)
    return np.maximum(grey, 0.5)


_GREY = _grey_levels()


def clahe_lightness(
    rgb: np.ndarray, clip: float = CLAHE_CLIP, tiles: int = CLAHE_TILES
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of L* (CIELAB): contrast comes back
    region by region, in lightness only.

    The new L* goes back into the pixel as one gain on its three channels (the grey level of
    the new L* over that of the old), not through a Lab-to-RGB conversion: the hue and the
    chromaticity are kept (a*/b* then scale with the lightness, where the round trip would
    keep them: 0.2 units apart on average on a hazy photo), and it costs 0.7 ms at 896 px
    instead of 2.6 ms, which keeps CLAHE and a white balance together within 10 ms."""
    lightness = cv2.extractChannel(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), 0)
    # A CLAHE object keeps per-call state: one per call, as images are prepared in threads.
    equalised = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles)).apply(lightness)
    gain = cv2.divide(cv2.LUT(equalised, _GREY), cv2.LUT(lightness, _GREY))
    return cv2.multiply(rgb, cv2.merge((gain, gain, gain)), dtype=cv2.CV_8U)


def stretch_levels(rgb: np.ndarray, percentile: float = STRETCH_PERCENTILE) -> np.ndarray:
    """Global levels: the photo's black and white points (the ``percentile`` darkest channel
    value and lightest one) become 0 and 255, one gain for all three channels.  A haze or a
    washed-out exposure is close to ``k * photo + offset`` in RGB, so this undoes it, chroma
    included, which CLAHE on L* alone cannot.  Capped at ``MAX_STRETCH``, anchored at white."""
    red, green, blue = cv2.split(_sample(rgb))
    low_cdf = _cdf(_histogram(cv2.min(cv2.min(red, green), blue)))
    high_cdf = _cdf(_histogram(cv2.max(cv2.max(red, green), blue)))
    low = float(np.searchsorted(low_cdf, percentile / 100.0))
    high = float(np.searchsorted(high_cdf, 1.0 - percentile / 100.0))
    if high - low < 1.0:
        return rgb
    gain = min(255.0 / (high - low), MAX_STRETCH)
    if gain < 1.05:  # a photo that nearly spans the range already: 5 % more is not a haze lifted
        return rgb
    levels = 255.0 - (high - np.arange(256, dtype=np.float64)) * gain  # high stays white
    return cv2.LUT(rgb, np.clip(np.rint(levels), 0, 255).astype(np.uint8))


def match_histogram(rgb: np.ndarray, reference: Reference, *, chroma: bool = False) -> np.ndarray:
    """Map Y (and with ``chroma`` Cr and Cb) so its histogram becomes the reference's: the
    photo gets the tonal distribution of a shot the operator calls typical.  Y alone moves
    brightness and contrast and keeps the photo's colours; Cr/Cb also move its colour balance
    (and, on a photo of another-coloured product, its colour: use it for uniform catalogues)."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    channels = list(cv2.split(ycc))
    for c in range(3 if chroma else 1):
        fractions, levels = reference.levels[c]
        lut = np.interp(_cdf(_histogram(channels[c])), fractions, levels)
        channels[c] = cv2.LUT(channels[c], np.clip(np.rint(lut), 0, 255).astype(np.uint8))
    return cv2.cvtColor(cv2.merge(channels), cv2.COLOR_YCrCb2RGB)


# -- auto -----------------------------------------------------------------------------------------


def decide(rgb: np.ndarray, contrast: Correction = "clahe") -> Decision:
    """What ``auto`` applies to this photo: ``neutral`` for a cast on its backdrop, ``contrast``
    for low contrast, nothing otherwise, each with the numbers behind it."""
    m = measure(rgb)
    corrections: list[Correction] = []
    reasons: list[str] = []
    if not m.has_backdrop:
        reasons.append(f"no light neutral backdrop ({m.backdrop_fraction:.0%} of the border)")
    elif m.cast > CAST_MAX:
        reasons.append(f"coloured backdrop (chroma {m.cast:.1f} > {CAST_MAX:g}), not a cast")
    elif m.cast >= CAST_MIN:
        corrections.append("neutral")
        reasons.append(f"cast a*={m.cast_a:+.1f} b*={m.cast_b:+.1f} on the backdrop")
    else:
        reasons.append(f"backdrop neutral (chroma {m.cast:.1f} < {CAST_MIN:g})")
    if m.spread < SPREAD_MIN:
        corrections.append(contrast)
        reasons.append(f"low contrast (L* {m.l_low:.0f}..{m.l_high:.0f})")
    else:
        reasons.append(f"contrast fine (L* {m.l_low:.0f}..{m.l_high:.0f})")
    return Decision(tuple(corrections), tuple(reasons), m)


# -- the entry point ------------------------------------------------------------------------------


def apply(
    rgb: np.ndarray,
    correction: Correction,
    reference: Reference | None = None,
    measurement: Measurement | None = None,
) -> np.ndarray:
    """One correction on an 8-bit RGB array; may return ``rgb`` itself when it changes nothing."""
    if correction == "grayworld":
        return gray_world(rgb)
    if correction == "whitepatch":
        return white_patch(rgb)
    if correction == "neutral":
        return neutral_balance(rgb, measurement)
    if correction == "clahe":
        return clahe_lightness(rgb)
    if correction == "stretch":
        return stretch_levels(rgb)
    if reference is None:
        raise ValueError(f"{correction} needs a reference histogram")
    return match_histogram(rgb, reference, chroma=correction == "match-chroma")


def adapt(image: Image.Image, mode: AdaptMode) -> Adapted:
    """Run ``mode`` on an RGB picture; an untouched picture is returned as the same object."""
    if not mode.active:
        return Adapted(image, (), None)
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    decision = decide(rgb) if mode.auto else None
    steps = decision.corrections if decision is not None else mode.corrections
    measurement = decision.measurement if decision is not None else None
    applied: list[Correction] = []
    out = rgb
    for step in steps:
        # The measurement was taken before any correction: only the first step may reuse it.
        changed = apply(out, step, mode.reference, measurement if not applied else None)
        if changed is not out:
            out = changed
            applied.append(step)
    if not applied:
        return Adapted(image, (), decision)
    return Adapted(Image.fromarray(out), tuple(applied), decision)
