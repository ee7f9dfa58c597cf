"""The pixel colour estimate and the colour vocabulary in CIELAB it names colours with."""

from __future__ import annotations

import math
import re
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from schemas.language import EN, PT_BR, LanguageProfile, colour_pattern
from services.inference.image.pixel_colour import (
    MIN_PRODUCT_FRACTION,
    ColourEstimate,
    check_colour,
    delta_e_many,
    estimate_colour,
)
from services.language.colour_science import (
    COLOURS,
    checkable,
    delta_e,
    key_lab,
    nameable,
    neighbours,
    not_colours,
    parse_colour,
    reference_lab,
    srgb_to_lab,
)
from tests.support.colour_images import NAMES, Sample, generate, sample

# Sharma, Wu & Dalal (2005), "The CIEDE2000 Color-Difference Formula: Implementation Notes,
# Supplementary Test Data, and Mathematical Observations", table 1 (pairs 1, 2, 4, 7, 13-17,
# 21-25, 30, 34, 36, 38, 39): chroma, hue and the arctangent and hue-mean branches.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0010), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0012), 7.2195),
    ((50.0, -0.001, 2.49), (50.0, 0.0009, -2.49), 4.8045),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((50.0, 2.5, 0.0), (58.0, 24.0, 15.0), 19.4535),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.694), (23.0331, 14.973, -42.5619), 2.0373),
    ((90.8027, -2.0831, 1.441), (91.1528, -1.6435, 0.0447), 1.4441),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]

NOT_COLOURS = not_colours(PT_BR) | not_colours(EN)


# -- CIEDE2000 and the Lab convention -------------------------------------------------------------


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA)
def test_ciede2000_matches_the_published_pairs(
    lab1: tuple[float, float, float], lab2: tuple[float, float, float], expected: float
) -> None:
    assert delta_e(lab1, lab2) == pytest.approx(expected, abs=1e-4)
    assert delta_e(lab2, lab1) == pytest.approx(expected, abs=1e-4)
    many = delta_e_many(lab1, np.array([lab2, lab1]))
    assert many[0] == pytest.approx(expected, abs=1e-4)
    assert many[1] == pytest.approx(0.0, abs=1e-9)


def test_references_use_opencvs_lab_convention() -> None:
    """A reference and a Lab measured by ``cv2.cvtColor`` on the same sRGB are one point
    (OpenCV's fixed-point float path rounds a and b to ~1/64, hence the tolerance)."""
    rng = np.random.default_rng(5)
    rgb = rng.random((1, 300, 3)).astype(np.float32)
    measured = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0]
    for colour, lab in zip(rgb[0], measured, strict=True):
        ours = srgb_to_lab((float(colour[0]), float(colour[1]), float(colour[2])))
        assert np.allclose(ours, lab, atol=0.5)


# -- the vocabulary in Lab ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [PT_BR, EN], ids=lambda p: p.code)
def test_every_vocabulary_colour_has_a_reference_or_is_not_a_colour(
    profile: LanguageProfile,
) -> None:
    for name in profile.colours:
        parsed = parse_colour(name, profile)
        assert len(parsed) == 1, (name, parsed)
        if name in NOT_COLOURS:
            assert reference_lab(name, profile) is None and not checkable(name, profile), name
        else:
            assert reference_lab(name, profile) is not None, name


def test_both_genders_share_one_reference() -> None:
    for masculine, feminine in [("preto", "preta"), ("branco", "branca"), ("roxo", "roxa")]:
        assert reference_lab(masculine, PT_BR) == reference_lab(feminine, PT_BR)
    assert reference_lab("prateado", PT_BR) == reference_lab("prata", PT_BR)
    assert reference_lab("black", EN) == reference_lab("preto", PT_BR)


def test_compounds_have_their_own_reference_and_modifiers_move_the_base() -> None:
    navy, blue = reference_lab("azul-marinho", PT_BR), reference_lab("azul", PT_BR)
    assert navy is not None and blue is not None
    assert navy == key_lab("navy") and navy[0] < blue[0] - 15
    assert reference_lab("azul marinho", PT_BR) == navy == reference_lab("navy blue", EN)
    green, light, dark = (reference_lab(n, PT_BR) for n in ("verde", "verde claro", "verde escuro"))
    assert green and light and dark and dark[0] < green[0] < light[0]
    assert reference_lab("light blue", EN) == reference_lab("azul claro", PT_BR)
    assert reference_lab("preto fosco", PT_BR) == reference_lab("preto", PT_BR)
    assert reference_lab("azul translúcido", PT_BR) is None
    assert reference_lab("azul e branco", PT_BR) is None  # two colours: no single reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("azul-marinho", ["azul-marinho"]),
        ("Azul Marinho", ["azul-marinho"]),
        ("verde claro", ["verde claro"]),
        ("verde-água", ["verde-água"]),
        ("Verde Agua", ["verde-água"]),
        ("azul e branco", ["azul", "branco"]),
        ("preto com dourado claro", ["preto", "dourado claro"]),
        ("Preto", ["preto"]),
        ("PRETA FOSCA", ["preto"]),
        ("lilas", ["lilás"]),
        ("Bordo", ["bordô"]),
        ("cinza chumbo", ["chumbo"]),
        ("off-white", ["off-white"]),
        ("transparente", ["transparente"]),
        ("", []),
        ("não sei", []),
    ],
)
def test_parse_colour_pt(text: str, expected: list[str]) -> None:
    assert parse_colour(text, PT_BR) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("navy blue", ["navy"]),
        ("light blue", ["light blue"]),
        ("black and white", ["black", "white"]),
        ("Gray", ["grey"]),
        ("rose gold", ["rose gold"]),
    ],
)
def test_parse_colour_en(text: str, expected: list[str]) -> None:
    assert parse_colour(text, EN) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("azul", "azul-marinho", True),
        ("cinza", "prata", True),
        ("grafite", "chumbo", True),
        ("branco", "gelo", True),
        ("off-white", "marfim", True),
        ("vermelho", "bordô", True),
        ("marrom", "caramelo", True),
        ("bege", "areia", True),
        ("rosa", "pink", True),
        ("roxo", "lilás", True),
        ("dourado", "mostarda", True),
        ("laranja", "salmão", True),
        ("verde claro", "verde", True),
        ("pêssego", "nude", True),  # different families, references close
        ("vermelho", "verde", False),
        ("preto", "branco", False),
        ("azul", "laranja", False),
        ("amarelo", "roxo", False),
        ("transparente", "azul", False),
    ],
)
def test_neighbours(a: str, b: str, expected: bool) -> None:
    assert neighbours(a, b, PT_BR) is expected
    assert neighbours(b, a, PT_BR) is expected


@pytest.mark.parametrize("profile", [PT_BR, EN], ids=lambda p: p.code)
def test_every_estimate_name_is_a_colour_the_card_grammar_accepts(
    profile: LanguageProfile,
) -> None:
    grammar = re.compile(colour_pattern(profile))
    names = nameable(profile)
    assert len(names) >= 40
    assert all(grammar.fullmatch(name) for name in names)


def test_colour_table_is_consistent() -> None:
    for key, colour in COLOURS.items():
        assert (colour.srgb is None) == (colour.family is None), key
        assert (key_lab(key) is None) == (colour.srgb is None), key


# -- the estimate on generated photos -------------------------------------------------------------


@pytest.fixture(scope="module")
def photos() -> list[Sample]:
    return generate(n=240, seed=13)


def test_the_generated_set(photos: list[Sample]) -> None:
    assert len(photos) >= 200
    assert len({p.expected for p in photos}) >= 30
    assert {t for p in photos for t in p.tags if t.startswith("bg:")} == {
        "bg:white",
        "bg:grey",
        "bg:gradient",
        "bg:texture",
    }
    assert all(448 <= max(p.image.size) <= 896 for p in photos)
    assert all(p.expected in p.accepted for p in photos)
    again = sample(7, seed=13)
    assert np.array_equal(np.asarray(again.image), np.asarray(photos[7].image))
    assert all(not t.tags & {"clean"} for t in generate(n=12, seed=3, casts=True))
    assert all("clean" in t.tags for t in generate(n=12, seed=3, casts=False))


def test_estimate_names_the_generated_photos(photos: list[Sample]) -> None:
    """The right name or an accepted neighbour on >= 95 % of the mixed set (casts and low
    contrast included), and on >= 97 % of its clean photos."""
    right: list[bool] = []
    confusions: Counter[tuple[str, str]] = Counter()
    by_tag: dict[str, list[bool]] = {}
    for photo in photos:
        estimate = estimate_colour(photo.image, PT_BR)
        good = estimate.name in photo.accepted
        right.append(good)
        if not good:
            confusions[(photo.expected, estimate.name)] += 1
        for tag in photo.tags:
            if not tag.startswith(("size:", "shape:")):
                by_tag.setdefault(tag, []).append(good)
    accuracy = sum(right) / len(right)
    print(f"\naccuracy {accuracy:.1%} on {len(right)} photos")
    for tag, hits in sorted(by_tag.items()):
        print(f"  {tag:14} {sum(hits)}/{len(hits)}")
    print("confusions (expected -> estimated):")
    for (expected, got), count in confusions.most_common():
        print(f"  {expected} -> {got}: {count}")
    clean = by_tag["clean"]
    assert accuracy >= 0.95
    assert sum(clean) / len(clean) >= 0.97


def test_estimate_reports_a_coherent_result(photos: list[Sample]) -> None:
    estimate = estimate_colour(photos[0].image, PT_BR)
    reference = nameable(PT_BR)[estimate.name]
    assert estimate.distance == pytest.approx(delta_e(estimate.lab, reference), abs=1e-3)
    assert 0 < estimate.share <= 1
    assert 0.05 < estimate.product_fraction < 0.9
    assert estimate.ms > 0
    english = estimate_colour(photos[0].image, EN)
    assert english.name in nameable(EN)


# -- checks ---------------------------------------------------------------------------------------


def _estimate(name: str, fraction: float = 0.3) -> ColourEstimate:
    lab = reference_lab(name, PT_BR)
    assert lab is not None
    return ColourEstimate(name, lab, 0.0, 1.0, fraction, 1.0)


def test_check_agrees_with_the_same_colour_and_a_neighbour() -> None:
    navy = _estimate("azul-marinho")
    same = check_colour("azul-marinho", navy, PT_BR)
    assert same.agrees and same.checkable and same.distance == pytest.approx(0.0, abs=1e-6)
    assert check_colour("azul", navy, PT_BR).agrees  # neighbour
    assert check_colour("Azul Marinho", navy, PT_BR).agrees
    assert check_colour("branco e azul-marinho", navy, PT_BR).agrees  # any of its colours


def test_check_disagrees_with_another_colour() -> None:
    found = check_colour("vermelho", _estimate("azul-marinho"), PT_BR)
    assert not found.agrees and found.checkable and found.distance > 30
    assert not check_colour("amarelo", _estimate("roxo"), PT_BR).agrees
    assert not check_colour("branco", _estimate("preto"), PT_BR).agrees
    assert found.as_json() == {
        "model": "vermelho",
        "estimate": "azul-marinho",
        "distance": round(found.distance, 2),
        "agrees": False,
        "checkable": True,
    }


@pytest.mark.parametrize("text", ["transparente", "multicolorida", "estampado", "azul e incolor"])
def test_check_does_not_judge_non_colours(text: str) -> None:
    found = check_colour(text, _estimate("vermelho"), PT_BR)
    assert found.agrees and not found.checkable and found.distance == 0.0


def test_check_does_not_judge_by_an_estimate_that_found_no_product() -> None:
    found = check_colour("vermelho", _estimate("azul", fraction=MIN_PRODUCT_FRACTION / 2), PT_BR)
    assert found.agrees and not found.checkable


def test_check_on_a_real_estimate() -> None:
    photo = _disc((25, 40, 140), background=(245, 245, 245))
    estimate = estimate_colour(photo, PT_BR)
    assert check_colour("azul", estimate, PT_BR).agrees
    assert not check_colour("vermelho", estimate, PT_BR).agrees
    assert not check_colour("verde", estimate, PT_BR).agrees


# -- robustness -----------------------------------------------------------------------------------


def _disc(colour: tuple[int, int, int], background: tuple[int, int, int]) -> Image.Image:
    pixels = np.full((480, 640, 3), background, np.uint8)
    cv2.circle(pixels, (320, 240), 150, colour, -1)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (640, 480), (255, 255, 255)),
        Image.new("RGB", (640, 480), (200, 30, 30)),
        Image.new("RGB", (8, 8), (10, 200, 10)),
        Image.new("RGB", (1, 1), (0, 0, 0)),
        Image.new("L", (300, 200), 128),
        np.zeros((0, 0, 3), np.uint8),
        np.full((50, 3), 0.5, np.float32),
        np.full((64, 64, 3), np.nan, np.float64),
    ],
    ids=["white", "one-colour", "8x8", "1x1", "grey-L", "empty", "float-2d", "nan"],
)
def test_weird_images_give_a_low_product_fraction_and_do_not_raise(
    image: Image.Image | np.ndarray,
) -> None:
    estimate = estimate_colour(image, PT_BR)
    assert estimate.product_fraction < MIN_PRODUCT_FRACTION
    assert estimate.name in nameable(PT_BR)
    assert math.isfinite(estimate.distance)
    assert not check_colour("vermelho", estimate, PT_BR).checkable


def test_array_input_is_rgb_and_matches_pil() -> None:
    photo = _disc((200, 30, 30), background=(240, 240, 240))
    from_pil = estimate_colour(photo, PT_BR)
    from_array = estimate_colour(np.asarray(photo), PT_BR)
    assert from_pil.name == from_array.name == "vermelho"
    assert from_pil.product_fraction == pytest.approx(from_array.product_fraction, abs=0.02)
    assert estimate_colour(np.asarray(photo).astype(np.float32) / 255, PT_BR).name == "vermelho"


def test_a_cut_out_uses_its_transparency() -> None:
    """An RGBA product shot: the transparent surround is backdrop, whatever colour it holds."""
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[:, :, :3] = (30, 160, 60)  # the hidden surround is green
    cv2.circle(rgba, (200, 200), 120, (220, 200, 30, 255), -1)
    estimate = estimate_colour(Image.fromarray(rgba, "RGBA"), PT_BR)
    assert estimate.name in {"amarelo", "dourado", "mostarda"}
    assert estimate.product_fraction == pytest.approx(math.pi * 120**2 / 400**2, abs=0.03)
    assert estimate_colour(rgba, PT_BR).name == estimate.name


def test_generator_names_are_in_the_vocabulary() -> None:
    assert all(reference_lab(name, PT_BR) is not None for name in NAMES)
