"""Product-like photos of known colour, drawn deterministically: ground truth for the pixel
colour estimate (``services.inference.image.pixel_colour``) and for what domain adaptation does
to it.

Real product photos with a trusted colour label are not something a test suite can ship, so the
photos are drawn: one object (ellipse, rounded box, bottle, shoe, shirt, rotated) in a colour
taken from the pt-BR references of ``services.language.colour_science`` with a little jitter,
shaded (a light gradient across it, fabric grain, sometimes a specular highlight), with a soft
drop shadow, on a white, grey, gradient or textured backdrop; some photos get a warm or cool
colour cast or a washed-out, low-contrast look.  Sizes 448..896 px, landscape, square or portrait.

Usage::

    from tests.support.colour_images import generate
    for sample in generate(n=240, seed=13):           # the mixed set (about 40 % cast/low)
        sample.image, sample.expected, sample.accepted, sample.tags
    generate(n=120, seed=13, casts=True)              # every photo cast or low-contrast
    generate(n=120, seed=13, casts=False)             # none

``expected`` is the pt-BR name the object was drawn in; ``accepted`` every pt-BR name that
counts as right for it (``colour_science.neighbours``).  ``tags`` say how it was drawn:
``bg:white|grey|gradient|texture``, ``shape:...``, ``shadow``, ``highlight``,
``cast:warm|cool``, ``low-contrast``, and ``clean`` when neither a cast nor low contrast.
The same (n, seed, casts) always gives the same photos, pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from schemas.language import PT_BR
from services.language.colour_science import accepted_names, delta_e, hex_to_lab, reference_lab

NAMES: tuple[str, ...] = (
    "preto",
    "branco",
    "cinza",
    "grafite",
    "prata",
    "dourado",
    "bronze",
    "cobre",
    "vermelho",
    "vinho",
    "bordô",
    "rosa",
    "pink",
    "magenta",
    "roxo",
    "lilás",
    "violeta",
    "azul",
    "azul-marinho",
    "azul royal",
    "azul bebê",
    "turquesa",
    "azul petróleo",
    "verde",
    "verde bandeira",
    "verde-oliva",
    "verde militar",
    "verde limão",
    "verde-água",
    "amarelo",
    "mostarda",
    "laranja",
    "coral",
    "salmão",
    "marrom",
    "caramelo",
    "chocolate",
    "bege",
    "creme",
    "areia",
    "nude",
    "caqui",
    "off-white",
    "madeira",
    "jeans",
)
"""The colours drawn: most of the vocabulary's bases and its commonest compounds."""

BACKGROUNDS = ("white", "grey", "gradient", "texture")
SHAPES = ("ellipse", "box", "bottle", "shoe", "shirt")
MIN_CONTRAST = 14.0
"""CIEDE2000 between object and backdrop: below it the photo would be ambiguous to anyone."""


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    expected: str
    accepted: frozenset[str]
    tags: frozenset[str]
    lab: tuple[float, float, float]
    """The object's drawn colour (before shading, cast and contrast)."""


# -- colour helpers -------------------------------------------------------------------------------


def lab_to_rgb(lab: tuple[float, float, float]) -> np.ndarray:
    """One Lab colour to sRGB floats in [0, 1] (clipped to the gamut)."""
    pixel = np.array([[lab]], np.float32)
    return np.clip(cv2.cvtColor(pixel, cv2.COLOR_Lab2RGB)[0, 0], 0.0, 1.0)


def _rgb_lab(rgb: np.ndarray) -> tuple[float, float, float]:
    lab = cv2.cvtColor(np.asarray(rgb, np.float32).reshape(1, 1, 3), cv2.COLOR_RGB2Lab)[0, 0]
    return (float(lab[0]), float(lab[1]), float(lab[2]))


def _jittered(name: str, rng: np.random.Generator) -> tuple[float, float, float]:
    lab = reference_lab(name, PT_BR)
    assert lab is not None, name
    dl, da, db = rng.normal(0.0, (2.5, 2.0, 2.0))
    return (float(np.clip(lab[0] + dl, 2, 98)), lab[1] + float(da), lab[2] + float(db))


# -- backdrops ------------------------------------------------------------------------------------


def _blotches(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``scale`` px across."""
    h, w = shape
    small = rng.standard_normal((max(2, int(h / scale)), max(2, int(w / scale)))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return big / (float(np.abs(big).max()) + 1e-6)


def _backdrop(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    if kind == "white":
        base = np.full((h, w, 3), rng.uniform(0.93, 1.0), np.float32)
    elif kind == "grey":
        base = np.full((h, w, 3), rng.uniform(0.35, 0.85), np.float32)
        base *= 1 + rng.uniform(-0.03, 0.03, 3).astype(np.float32)
    elif kind == "gradient":
        base = _gradient(shape, rng)
    else:
        base = _texture(shape, rng)
    grain = rng.standard_normal((h, w, 1), np.float32) * np.float32(0.008)
    return np.clip(base + grain, 0.0, 1.0)


def _gradient(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    top = rng.uniform(0.75, 1.0) * (1 + rng.uniform(-0.04, 0.04, 3))
    bottom = rng.uniform(0.45, 0.85) * (1 + rng.uniform(-0.04, 0.04, 3))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, math.pi)
        t = (xs / w - 0.5) * math.cos(angle) + (ys / h - 0.5) * math.sin(angle) + 0.5
    else:
        t = np.hypot(xs / w - 0.5, ys / h - 0.5) * 1.4
    t = np.clip(t, 0, 1)[:, :, None]
    return (top * (1 - t) + bottom * t).astype(np.float32)


TEXTURES = ("#D9C6A5", "#B8B4AE", "#E9E4DA", "#8C7358", "#5E6166", "#CFD6DA")
"""Light wood, concrete, paper, dark wood, slate, pale blue-grey fabric."""


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    base = lab_to_rgb(hex_to_lab(str(rng.choice(TEXTURES))))
    coarse = _blotches(shape, rng, rng.uniform(40, 90))
    fine = _blotches(shape, rng, rng.uniform(3, 6))
    light = 1 + 0.06 * coarse + 0.04 * fine
    if rng.random() < 0.5:  # grain in one direction, like wood or brushed fabric
        streak = _blotches((shape[0], 8), rng, 2)
        light += 0.04 * cv2.resize(streak, (shape[1], shape[0]))
    return (base[None, None, :] * light[:, :, None]).astype(np.float32)


# -- objects --------------------------------------------------------------------------------------


def _polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Outline in a unit box centred on 0 (x right, y down)."""
    if kind == "bottle":
        neck = rng.uniform(0.12, 0.2)
        pts = [(-neck, -0.5), (neck, -0.5), (neck, -0.25), (0.3, -0.1), (0.3, 0.5), (-0.3, 0.5)]
        pts += [(-0.3, -0.1), (-neck, -0.25)]
    elif kind == "shoe":
        pts = [(-0.5, 0.2), (-0.45, -0.15), (-0.15, -0.2), (0.05, -0.05), (0.35, 0.0)]
        pts += [(0.5, 0.12), (0.5, 0.25), (-0.5, 0.25)]
    else:  # shirt
        pts = [(-0.18, -0.45), (0.18, -0.45), (0.5, -0.3), (0.42, -0.1), (0.3, -0.15)]
        pts += [(0.3, 0.5), (-0.3, 0.5), (-0.3, -0.15), (-0.42, -0.1), (-0.5, -0.3)]
    return np.array(pts, np.float32)


def _object_mask(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    side = min(h, w) * rng.uniform(0.45, 0.75)
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    angle = rng.uniform(-35, 35)
    aspect = rng.uniform(0.6, 1.0)
    if kind == "ellipse":
        axes = (int(side / 2), int(side * aspect / 2))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
    elif kind == "box":
        box = ((cx, cy), (side, side * aspect), angle)
        corners = cv2.boxPoints(box).astype(np.int32)
        cv2.fillPoly(mask, [corners], 255, cv2.LINE_AA)
        radius = max(3, int(side * 0.08)) | 1
        rounded = cv2.GaussianBlur(mask, (radius * 2 + 1, radius * 2 + 1), 0)
        mask = np.where(rounded > 127, 255, 0).astype(np.uint8)
    else:
        pts = _polygon(kind, rng) * side
        rot = cv2.getRotationMatrix2D((0, 0), angle, 1.0)[:, :2]
        pts = pts @ rot.T.astype(np.float32) + np.array([cx, cy], np.float32)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 255, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


def _shading(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light falling across the object, and its surface grain."""
    h, w = mask.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = (xs / w - 0.5) * math.cos(angle) + (ys / h - 0.5) * math.sin(angle)
    depth = rng.uniform(0.1, 0.35)
    light = 1.0 + depth * 0.3 - depth * (t + 0.5)
    light += 0.03 * _blotches((h, w), rng, rng.uniform(2, 5))
    return light.astype(np.float32)


def _highlight(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.5)
    spot = np.zeros(mask.shape, np.float32)
    if len(xs) == 0:
        return spot
    i = int(rng.integers(len(xs)))
    size = max(4, int(math.sqrt(len(xs)) * rng.uniform(0.06, 0.14)))
    cv2.ellipse(
        spot, (int(xs[i]), int(ys[i])), (size, size // 2), rng.uniform(0, 180), 0, 360, 1.0, -1
    )
    return _soft(spot, size / 2) * mask * np.float32(rng.uniform(0.5, 0.85))


def _shadow(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darkening factor of a soft drop shadow, offset from the object."""
    h, w = mask.shape
    dx, dy = rng.uniform(-0.04, 0.06) * w, rng.uniform(0.01, 0.06) * h
    shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    moved = np.asarray(cv2.warpAffine(mask, shift, (w, h)))
    soft = _soft(moved, min(h, w) * rng.uniform(0.015, 0.04))
    return 1.0 - np.float32(rng.uniform(0.15, 0.4)) * soft


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur, done at a quarter of the size (the result is smooth anyway)."""
    h, w = mask.shape
    small = cv2.resize(mask, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, sigma / 4))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# -- global looks ---------------------------------------------------------------------------------


def _cast(rgb: np.ndarray, warm: bool, rng: np.random.Generator) -> np.ndarray:
    strength = rng.uniform(0.06, 0.14)
    gains = (
        (1 + strength, 1 + strength * 0.2, 1 - strength)
        if warm
        else (1 - strength, 1, 1 + strength)
    )
    return np.clip(rgb * np.array(gains, np.float32), 0.0, 1.0)


def _low_contrast(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    keep = rng.uniform(0.6, 0.8)
    haze = rng.uniform(0.25, 0.55)
    return np.clip(rgb * keep + haze * (1 - keep), 0.0, 1.0)


# -- samples --------------------------------------------------------------------------------------


def _size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(448, 897))
    ratio = float(rng.choice([0.75, 1.0, 1.333]))
    short = max(300, int(long_side * min(ratio, 1 / ratio)))
    return (
        (short, long_side)
        if ratio < 1
        else (long_side, short)
        if ratio > 1
        else (long_side, long_side)
    )


def _contrasting_backdrop(
    colour: tuple[float, float, float], shape: tuple[int, int], rng: np.random.Generator
) -> tuple[str, np.ndarray]:
    """A backdrop the object stands out from (a white mug is shot on grey, not on white)."""
    for _ in range(20):
        kind = str(rng.choice(BACKGROUNDS))
        backdrop = _backdrop(kind, shape, rng)
        mean = _rgb_lab(backdrop.reshape(-1, 3).mean(axis=0))
        if delta_e(mean, colour) >= MIN_CONTRAST:
            return kind, backdrop
    grey = 0.25 if colour[0] > 50 else 0.9
    return "grey", np.full((*shape, 3), grey, np.float32)


def sample(index: int, seed: int = 13, casts: bool | None = None) -> Sample:
    """The ``index``-th photo of the set ``seed``; see the module docstring for ``casts``."""
    rng = np.random.default_rng([seed, index])
    name = NAMES[index % len(NAMES)] if index < 2 * len(NAMES) else str(rng.choice(NAMES))
    colour = _jittered(name, rng)
    shape = _size(rng)
    kind, backdrop = _contrasting_backdrop(colour, shape, rng)
    form = str(rng.choice(SHAPES))
    mask = _object_mask(form, shape, rng)
    tags = {f"bg:{kind}", f"shape:{form}", f"size:{max(shape)}"}
    image = backdrop
    if rng.random() < 0.8:
        image = image * _shadow(mask, rng)[:, :, None]
        tags.add("shadow")
    body = lab_to_rgb(colour)[None, None, :] * _shading(mask, rng)[:, :, None]
    if rng.random() < 0.4:
        body = body + _highlight(mask, rng)[:, :, None] * (1 - body)
        tags.add("highlight")
    image = image * (1 - mask[:, :, None]) + np.clip(body, 0, 1) * mask[:, :, None]
    image, looks = _looks(image, casts, rng)
    tags |= looks
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    accepted = frozenset(accepted_names(name, PT_BR))
    return Sample(Image.fromarray(pixels), name, accepted, frozenset(tags), colour)


def _looks(
    image: np.ndarray, casts: bool | None, rng: np.random.Generator
) -> tuple[np.ndarray, set[str]]:
    roll = rng.random()
    if casts is False or (casts is None and roll >= 0.4):
        return image, {"clean"}
    choice = int(rng.integers(3)) if casts else int(roll / 0.4 * 3)
    if choice == 0:
        return _cast(image, True, rng), {"cast:warm"}
    if choice == 1:
        return _cast(image, False, rng), {"cast:cool"}
    return _low_contrast(image, rng), {"low-contrast"}


def generate(n: int = 240, seed: int = 13, casts: bool | None = None) -> list[Sample]:
    """``n`` photos; ``casts``: None mixed, True only cast/low-contrast, False only clean."""
    return [sample(i, seed, casts) for i in range(n)]
