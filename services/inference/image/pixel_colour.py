"""The product's dominant colour measured from the pixels: an independent check of the model.

The model writes ``color_primary`` from what its vision encoder saw; a small quantisation or a
prompt that nudges it can make it say "preto" for a navy shirt.  This module looks at the same
photo with no model: it separates the product from the backdrop, finds the product's dominant
colour in CIELAB and names it with the vocabulary of the output language
(``services.language.colour_science``), so a card whose colour is far from the pixels can be
flagged.

How (on a copy whose longest side is ``WORK_SIDE`` px, which is all a dominant colour needs):

1. *Backdrop model.*  Shop photos put the product in the middle of a backdrop that reaches the
   frame's edges.  The border band is fitted with a quadratic surface per Lab channel (a
   gradient or vignette is still "the backdrop"), refitted without the pixels the first fit
   explains badly (a product that touches the edge); the spread of what is left is the
   backdrop's texture.  A second pass fits the surface again to every pixel the first mask
   left as backdrop, so a radial vignette is known at the centre too, not only extrapolated.
2. *Product mask.*  A pixel is product when it is farther from the backdrop predicted at its
   place than the texture explains.  A shadow is backdrop: a pixel darker than the backdrop by
   up to ``SHADOW_DEPTH`` with the backdrop's chromaticity is forgiven its darkness.  That also
   forgives a grey product on a white sweep, so when the forgiving mask finds almost nothing the
   strict one (no shadow allowance) is used instead.  Specks are opened away, and only blobs of
   a useful size are kept.
3. *Dominant colour.*  The product pixels are clustered in Lab (k-means, k=``CLUSTERS``,
   lightness weighted down so that one colour's lit and shaded sides tend to stay together),
   each cluster is named by its nearest reference (CIEDE2000), and the group that wins is the
   one with most pixels *counting the clusters whose names are neighbours* (a red mug's lit red
   and shaded wine-red are one colour); its largest cluster is the answer.  Specular highlights
   (near-white) do not win against a coloured body.

Cost: ~7 ms of one core per photo at 448 or 896 px, twice that on a loaded machine
(``bench/colour_bench.py``), most of it the two backdrop passes on the ~15 k-pixel copy;
Pillow's integer ``reduce`` makes the size of the input nearly irrelevant.

When nothing separates from the backdrop (a blank frame, a texture filling the frame, an 8x8
icon), the estimate is the whole image's colour and ``product_fraction`` is ~0: the estimate
then says what the *photo* looks like, not what the product is, and ``check_colour`` does not
judge a card by it (``MIN_PRODUCT_FRACTION``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image

from schemas.language import LanguageProfile
from services.language.colour_science import (
    Lab,
    checkable,
    delta_e,
    keys_neighbour,
    lexicon_for,
    nameable,
    neighbours,
    read_colours,
)

# One OpenCV thread per call: a card's pixels are small, and the cores belong to llama.cpp's
# thread team (a second pool of busy threads beside it slows every decode).
cv2.setNumThreads(1)

WORK_SIDE = 144
"""Longest side of the working copy: ~15 k pixels, plenty for one dominant colour."""
BORDER = 0.025
"""Border band taken as backdrop, as a share of the shorter side."""
SHADOW_DEPTH = 0.45
"""How much darker than the backdrop a shadow may be (share of the backdrop's L*)."""
MIN_DIFFERENCE = 7.0
"""A product pixel differs from the backdrop by at least this (Lab units), texture aside."""
TEXTURE_FACTOR = 3.5
"""...and by this many times the backdrop's own spread around its fitted surface."""
MAX_FIT = 3000
"""Backdrop pixels the surface is fitted to (evenly spaced among those known)."""
MIN_FORGIVING = 0.03
"""Below this share of the image, the shadow-forgiving mask has missed a neutral product."""
CLUSTERS = 4
LIGHTNESS_WEIGHT = 0.5
"""L* weight in the clustering: shading changes L* much more than a, b."""
LIT_PERCENTILE = 60.0
"""A cluster's lightness is this percentile of its pixels' (see ``_representative``)."""
MAX_SAMPLES = 4000
"""Product pixels clustered (evenly spaced): k-means cost without a change in the answer."""
MIN_PRODUCT_FRACTION = 0.02
"""Under this share of the image judged product, the estimate describes the photo, not a
product, and no card is judged by it."""
AGREE_DE = 15.0
"""The model's colour agrees when its reference is this close (CIEDE2000) to the measured Lab,
whatever the names.  On the generated photos (``bench/colour_bench.py``, 240 photos, 40 % cast
or low-contrast) the right colour agrees on 99.6 % of them at 14 and on all from 15 up, while
the share of wrong vocabulary names let through grows from 2.5 % (14) to 3.1 % (15), 3.8 %
(16) and 8.3 % (20): 15 is the smallest value that never flags a right colour there."""


@dataclass(frozen=True)
class ColourEstimate:
    name: str
    """Nearest vocabulary name, in the language of the profile."""
    lab: tuple[float, float, float]
    """Dominant product colour (CIELAB, OpenCV's float convention)."""
    distance: float
    """CIEDE2000 from ``lab`` to the reference of ``name``."""
    share: float
    """Fraction of product pixels in the dominant cluster (with its neighbour-named ones)."""
    product_fraction: float
    """Fraction of the image judged to be product; ~0: no product found (see module doc)."""
    ms: float


@dataclass(frozen=True)
class ColourCheck:
    model: str
    estimate: str
    distance: float
    """CIEDE2000 from the model colour's reference to the estimated Lab (the nearest of its
    colours); 0 when not checkable, so a consumer's "distance >= 0" holds."""
    agrees: bool
    checkable: bool

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "estimate": self.estimate,
            "distance": round(self.distance, 2),
            "agrees": self.agrees,
            "checkable": self.checkable,
        }


# -- input ----------------------------------------------------------------------------------------


def _small_rgb(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB about ``WORK_SIDE`` px long, and its alpha when there is one.

    One integer box reduction (Pillow's ``reduce``, or OpenCV's fast integer INTER_AREA path on
    a frame cropped to a multiple of the factor), so the longest side ends within a few tens of
    per cent of ``WORK_SIDE``: a dominant colour does not care, and a fractional resize of an
    896 px photo would cost more than everything else together.  Arrays are RGB(A) or grey.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        factor = _factor(image.height, image.width)
        return _split(np.asarray(image.reduce(factor) if factor > 1 else image))
    rgb, alpha = _split(_as_uint8(np.asarray(image)))
    factor = _factor(*rgb.shape[:2])
    if factor == 1:
        return rgb, alpha
    return _reduce(rgb, factor), None if alpha is None else _reduce(alpha, factor)


def _factor(height: int, width: int) -> int:
    return max(1, round(max(height, width) / WORK_SIDE))


def _reduce(array: np.ndarray, factor: int) -> np.ndarray:
    height, width = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    if height == 0 or width == 0:
        return array
    cropped = np.ascontiguousarray(array[:height, :width])
    size = (width // factor, height // factor)
    return cv2.resize(cropped, size, interpolation=cv2.INTER_AREA)


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if array.dtype.kind == "f" and values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    return np.clip(values, 0, 255).astype(np.uint8)


def _split(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB and alpha of a grey, grey+alpha, RGB or RGBA array; anything else is one black pixel."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        return np.zeros((1, 1, 3), np.uint8), None
    channels = array.shape[2]
    if channels <= 2:
        rgb = np.repeat(array[:, :, :1], 3, axis=2)
        return rgb, np.ascontiguousarray(array[:, :, 1]) if channels == 2 else None
    alpha = np.ascontiguousarray(array[:, :, 3]) if channels >= 4 else None
    return np.ascontiguousarray(array[:, :, :3]), alpha


# -- backdrop and mask ----------------------------------------------------------------------------


@cache
def _basis(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    x = (xs / max(width - 1, 1) - 0.5).ravel()
    y = (ys / max(height - 1, 1) - 0.5).ravel()
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _border(height: int, width: int) -> np.ndarray:
    band = max(2, round(min(height, width) * BORDER))
    mask = np.ones((height, width), bool)
    mask[band:-band, band:-band] = False
    return mask.ravel()


def _fit(basis: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations: six unknowns, so a 6x6 solve (lstsq's SVD costs
    a hundred times more here)."""
    rows = basis.astype(np.float64)
    gram = rows.T @ rows + np.eye(rows.shape[1]) * 1e-6
    return np.linalg.solve(gram, rows.T @ values.astype(np.float64))


def _backdrop(lab: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, float]:
    """The backdrop's Lab predicted at every pixel from the pixels ``known`` to be backdrop,
    and its spread there (texture, noise)."""
    height, width = lab.shape[:2]
    basis = _basis(height, width)
    flat = lab.reshape(-1, 3)
    index = np.flatnonzero(known)
    if len(index) > MAX_FIT:  # a smooth surface of six terms needs no more
        index = index[:: len(index) // MAX_FIT]
    rows, values = basis[index], flat[index]
    coef = _fit(rows, values)
    residual = np.linalg.norm(values - rows @ coef, axis=1)
    keep = residual <= max(2.5 * float(np.median(residual)), 3.0)
    if keep.sum() >= 12:
        coef = _fit(rows[keep], values[keep])
        residual = np.linalg.norm(values[keep] - rows[keep] @ coef, axis=1)
    spread = float(np.percentile(residual, 90)) if residual.size else 0.0
    return (basis @ coef.astype(np.float32)).reshape(height, width, 3), spread


def _differences(lab: np.ndarray, backdrop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the backdrop: strict, and forgiving shadows (darker, same chromaticity)."""
    delta = lab - backdrop
    strict = np.sqrt((delta**2).sum(axis=2))
    back_l = np.maximum(backdrop[:, :, 0], 1.0)
    ratio = np.clip(lab[:, :, 0] / back_l, 0.0, 1.0)
    shadow_ab = backdrop[:, :, 1:] * ratio[:, :, None]
    chroma = np.sqrt(((lab[:, :, 1:] - shadow_ab) ** 2).sum(axis=2))
    darker = np.clip(-delta[:, :, 0], 0.0, None)
    brighter = np.clip(delta[:, :, 0], 0.0, None)
    excess = np.clip(darker - SHADOW_DEPTH * back_l, 0.0, None)
    forgiving = np.sqrt(chroma**2 + excess**2 + brighter**2)
    return strict, forgiving


def _clean(mask: np.ndarray) -> np.ndarray:
    """Specks opened away; blobs smaller than a tenth of the largest dropped."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if count <= 1:
        return closed.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(4, 0.1 * areas.max())) + 1
    return np.isin(labels, keep)


def product_mask(lab: np.ndarray) -> np.ndarray:
    """Which pixels of a small Lab image are product (see the module docstring)."""
    height, width = lab.shape[:2]
    if min(height, width) < 8:
        return np.zeros((height, width), bool)
    smooth = cv2.GaussianBlur(lab, (3, 3), 0)
    known = _border(height, width)
    mask = np.zeros((height, width), bool)
    for _ in range(2):
        backdrop, spread = _backdrop(smooth, known)
        mask = _mask(smooth, backdrop, max(MIN_DIFFERENCE, TEXTURE_FACTOR * spread))
        # the second fit sees the backdrop around the product too, not only at the edges
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        known = ~grown.ravel()
        if known.sum() < 12:
            break
    return mask


def _mask(lab: np.ndarray, backdrop: np.ndarray, threshold: float) -> np.ndarray:
    strict, forgiving = _differences(lab, backdrop)
    mask = _clean(forgiving > threshold)
    if mask.mean() < MIN_FORGIVING:
        mask = _clean(strict > threshold)
    return mask


# -- dominant colour ------------------------------------------------------------------------------


def _samples(pixels: np.ndarray) -> np.ndarray:
    if len(pixels) <= MAX_SAMPLES:
        return pixels
    step = len(pixels) / MAX_SAMPLES
    return pixels[(np.arange(MAX_SAMPLES) * step).astype(np.intp)]


def _clusters(pixels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """k-means in Lab (L* weighted down), started from lightness quantiles: deterministic, and
    no touch of OpenCV's global random state.  Each cluster as (median Lab, size)."""
    k = min(CLUSTERS, len(pixels))
    if k <= 1 or float(np.ptp(pixels, axis=0).max()) < 1.0:
        return [(_representative(pixels), len(pixels))]
    features = pixels * np.array([LIGHTNESS_WEIGHT, 1.0, 1.0], np.float32)
    order = np.argsort(pixels[:, 0], kind="stable")
    start = np.empty(len(pixels), np.int32)
    start[order] = (np.arange(len(pixels)) * k // len(pixels)).astype(np.int32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 12, 0.5)
    _, found, _ = cv2.kmeans(
        features.astype(np.float32),
        k,
        start.reshape(-1, 1),
        criteria,
        1,
        cv2.KMEANS_USE_INITIAL_LABELS,
    )
    labels = np.asarray(found).ravel()
    out = []
    for c in range(k):
        members = pixels[labels == c]
        if len(members):
            out.append((_representative(members), len(members)))
    return out


def _representative(members: np.ndarray) -> np.ndarray:
    """Median chroma, and the lightness of the lit side: a shopper names the surface under the
    light, and discounts the shading (the darker half of a shaded cluster pulls a median down)."""
    a, b = np.median(members[:, 1]), np.median(members[:, 2])
    return np.array([np.percentile(members[:, 0], LIT_PERCENTILE), a, b], np.float32)


def _highlight(lab: Lab) -> bool:
    return lab[0] > 88 and math.hypot(lab[1], lab[2]) < 8


def _references(profile: LanguageProfile) -> tuple[tuple[str, ...], np.ndarray]:
    return _references_of(profile.code, profile)


_REFERENCES: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}


def _references_of(code: str, profile: LanguageProfile) -> tuple[tuple[str, ...], np.ndarray]:
    """Per language code: hashing a whole profile (its vocabularies) costs more than naming."""
    if code in _REFERENCES:
        return _REFERENCES[code]
    names = nameable(profile)
    found = tuple(names), np.array(list(names.values()), np.float64).reshape(-1, 3)
    _REFERENCES[code] = found
    return found


def delta_e_many(lab: Lab, references: np.ndarray) -> np.ndarray:
    """CIEDE2000 from one colour to many (rows of Lab): ``colour_science.delta_e`` in numpy,
    since naming a cluster compares it with every reference."""
    l1, a1, b1 = lab
    l2, a2, b2 = references[:, 0], references[:, 1], references[:, 2]
    c_mean = (math.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.where(c1p > 0, np.degrees(np.arctan2(b1, a1p)) % 360, 0.0)
    h2p = np.where(c2p > 0, np.degrees(np.arctan2(b2, a2p)) % 360, 0.0)
    product = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(product == 0, 0.0, dh)
    dh_big = 2 * np.sqrt(product) * np.sin(np.radians(dh / 2))
    total = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= 180,
        total / 2,
        np.where(total < 360, (total + 360) / 2, (total - 360) / 2),
    )
    h_mean = np.where(product == 0, total, h_mean)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    cp_mean = (c1p + c2p) / 2
    l_mean = (l1 + l2) / 2
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = (
        -np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
        * 2
        * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    )
    tl, tc, th = (l2 - l1) / s_l, (c2p - c1p) / s_c, dh_big / s_h
    return np.sqrt(tl**2 + tc**2 + th**2 + r_t * tc * th)


def _nearest(lab: Lab, profile: LanguageProfile) -> tuple[str, float]:
    names, references = _references(profile)
    if not names:
        return "", math.nan
    distances = delta_e_many(lab, references)
    best = int(np.argmin(distances))
    return names[best], float(distances[best])


@dataclass(frozen=True)
class _Cluster:
    lab: Lab
    size: int
    name: str
    distance: float
    key: str


def _dominant(pixels: np.ndarray, profile: LanguageProfile) -> tuple[str, Lab, float, float]:
    """(name, Lab, distance, share) of the dominant colour.

    The winning *group* is the cluster with most pixels counting its neighbour-named clusters
    (lit red and shaded wine-red are one colour); the colour reported is the group's largest
    cluster, not the winner itself, which may be a small bridge between two big ones (a light
    grey shadow links a grey product to a white backdrop remnant)."""
    clusters = []
    for centre, size in _clusters(_samples(pixels)):
        lab = (float(centre[0]), float(centre[1]), float(centre[2]))
        name, distance = _nearest(lab, profile)
        clusters.append(_Cluster(lab, size, name, distance, _key(name, profile)))
    if not clusters or not clusters[0].name:
        return "", (0.0, 0.0, 0.0), 0.0, 0.0
    total = sum(c.size for c in clusters)
    chromatic = sum(c.size for c in clusters if math.hypot(c.lab[1], c.lab[2]) > 12)

    def group(cluster: _Cluster) -> list[_Cluster]:
        return [c for c in clusters if keys_neighbour(cluster.key, c.key)]

    def support(cluster: _Cluster) -> tuple[int, int]:
        if _highlight(cluster.lab) and chromatic >= 0.4 * total:
            return (0, cluster.size)  # a specular highlight on a coloured body
        return (sum(c.size for c in group(cluster)), cluster.size)

    winner = max(clusters, key=support)
    best = max(group(winner), key=lambda c: c.size)
    return best.name, best.lab, best.distance, support(winner)[0] / total


def _key(name: str, profile: LanguageProfile) -> str:
    colours = read_colours(name, profile)
    return colours[0].key if colours else name


# -- the public API -------------------------------------------------------------------------------


def estimate_colour(image: Image.Image | np.ndarray, profile: LanguageProfile) -> ColourEstimate:
    """The product's dominant colour, named in the profile's language; never raises on pixels
    (a blank, tiny or one-colour image gives ``product_fraction`` ~0)."""
    start = time.perf_counter()
    small, alpha = _small_rgb(image)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    mask = _alpha_mask(alpha)
    if mask is None:
        mask = product_mask(lab)
    fraction = float(mask.mean()) if mask.size else 0.0
    pixels = lab[mask] if mask.any() else lab.reshape(-1, 3)
    name, dominant, distance, share = _dominant(pixels, profile)
    return ColourEstimate(
        name=name,
        lab=dominant,
        distance=distance,
        share=share,
        product_fraction=fraction,
        ms=(time.perf_counter() - start) * 1000,
    )


def _alpha_mask(alpha: np.ndarray | None) -> np.ndarray | None:
    """A cut-out's own transparency is a better product mask than any backdrop model."""
    if alpha is None or float((alpha < 128).mean()) < 0.01:
        return None
    return alpha >= 128


def check_colour(
    model_colour: str, estimate: ColourEstimate, profile: LanguageProfile
) -> ColourCheck:
    """Whether the model's colour text agrees with the pixels.

    Any colour of the text counts ("azul e branco" agrees with a white estimate): the estimate
    is the *dominant* colour, the text may list a secondary one first.  A colour agrees when it
    is the estimated name or a neighbour of it, or when its reference is within ``AGREE_DE`` of
    the measured Lab.  Texts with a non-colour (transparente, estampado), texts naming nothing
    the vocabulary knows, and estimates that found no product are not checkable: they agree.
    """
    lexicon = lexicon_for(profile)
    colours = read_colours(model_colour, profile)
    if (
        lexicon is None
        or not checkable(model_colour, profile)
        or estimate.product_fraction < MIN_PRODUCT_FRACTION
        or not estimate.name
    ):
        return ColourCheck(model_colour, estimate.name, 0.0, agrees=True, checkable=False)
    distance = math.inf
    agrees = False
    for colour in colours:
        reference = colour.lab(lexicon)
        if reference is None:
            continue
        distance = min(distance, delta_e(reference, estimate.lab))
        agrees = agrees or neighbours(colour.name(lexicon), estimate.name, profile)
    agrees = agrees or distance <= AGREE_DE
    return ColourCheck(model_colour, estimate.name, distance, agrees=agrees, checkable=True)
