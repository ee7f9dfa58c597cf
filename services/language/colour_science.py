"""Colour names as CIELAB: what the pixel colour check compares the model's ``color_primary`` to.

The model names a colour in words of the output language; the pixels give a point in CIELAB.
To compare the two, every base name of each vocabulary in ``schemas.language`` maps to a
language-neutral *colour key* ("preta", "preto" and "black" are all ``black``), and each key has
one reference: a typical product colour written as sRGB (easy to review against a swatch) and
converted here to CIELAB with the convention of OpenCV's float conversion (sRGB in [0, 1], D65,
L* 0..100), so a Lab computed from pixels with ``cv2.cvtColor`` is directly comparable.

Not every name is a colour.  ``transparente``/``clear`` (the backdrop shows through),
``multicolorido``/``estampado`` (no one colour to find) and ``natural`` (natural wood, linen,
stone and leather span the whole beige-brown range) have no reference: a card with one of
those is *not checkable* and is never flagged.  Material names that do have a usual look
(``madeira``, ``jeans``, ``caramelo``) get a typical Lab.

A colour text is read as base names plus modifiers ("azul claro", "verde-oliva", "azul e
branco", "light blue").  Common compounds ("azul-marinho", "verde militar", "navy blue") have
their own key; other modifiers move the base's reference (lighter, darker, paler, towards
another colour) or are finishes that change nothing (metálico, fosco).  ``translúcido`` makes
the colour not checkable, for the same reason as ``transparente``.  The words themselves are
``schemas.language``'s: this module only says what they mean (which key a name is, what a
modifier does), and any vocabulary modifier it gives no meaning to is a finish.

Agreement is deliberately looser than equality: two names are *neighbours* when they share a
key or a family (the blues, the greys, the off-whites...), form one of a few explicit pairs
that shops use for the same product (preto/grafite, bege/caramelo...), or when their references
are within ``NEIGHBOUR_DE`` of each other.  Everything here is plain data and arithmetic, so the
sink or a report can run the same comparison without OpenCV.  It is colour science, not a
contract, hence its place outside ``schemas/``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from schemas.language import EN, PT_BR, LanguageProfile, colour_pattern, fold

Lab = tuple[float, float, float]

NEIGHBOUR_DE = 10.0
"""References closer than this (CIEDE2000) are neighbours whatever their family: about where
two swatches side by side stop looking like two shades of one colour and start looking like two
colours (peach and nude, coral and salmon, sand and beige)."""


@dataclass(frozen=True)
class Colour:
    """One language-neutral colour: its reference and the family it agrees with."""

    srgb: str | None
    """Typical product colour, "#RRGGBB"; None: not a colour the pixels can check."""
    family: str | None = None


# fmt: off
COLOURS: dict[str, Colour] = {
    # neutrals
    "black": Colour("#161616", "black"),
    "white": Colour("#F6F6F6", "white"),
    "off_white": Colour("#F2EFE6", "white"),
    "ice": Colour("#E6EBEC", "white"),
    "ivory": Colour("#F3ECD6", "white"),
    "cream": Colour("#F0E4C4", "white"),
    "ecru": Colour("#E8DEC6", "white"),
    "grey": Colour("#8E8E8E", "grey"),
    "graphite": Colour("#46494E", "grey"),
    "lead": Colour("#5B5F64", "grey"),
    "silver": Colour("#C2C3C5", "grey"),
    # metals
    "gold": Colour("#D1AA3C", "yellow"),
    "champagne": Colour("#DCC9A0", "yellow"),
    "rose": Colour("#D9A294", "pink"),
    "bronze": Colour("#A0703E", "brown"),
    "copper": Colour("#B66B3A", "orange"),
    # reds
    "red": Colour("#C8202B", "red"),
    "wine": Colour("#6E2430", "red"),
    "burgundy": Colour("#7D1630", "red"),
    "marsala": Colour("#93504E", "red"),
    # pinks
    "pink": Colour("#F1A0BC", "pink"),
    "baby_pink": Colour("#F5C6D4", "pink"),
    "hot_pink": Colour("#EC4896", "pink"),
    "magenta": Colour("#C8228A", "pink"),
    "fuchsia": Colour("#D23C96", "pink"),
    # purples
    "purple": Colour("#652D8E", "purple"),
    "violet": Colour("#7E45B8", "purple"),
    "lilac": Colour("#C2A3D8", "purple"),
    "lavender": Colour("#B5A8DC", "purple"),
    # blues
    "blue": Colour("#1F5FBF", "blue"),
    "navy": Colour("#1E2A4E", "blue"),
    "royal": Colour("#2B48C2", "blue"),
    "baby_blue": Colour("#A9CBEA", "blue"),
    "sky": Colour("#6FB1E3", "blue"),
    "denim": Colour("#41608E", "blue"),
    # blue-greens
    "turquoise": Colour("#1FB3B0", "cyan"),
    "cyan": Colour("#12AEE0", "cyan"),
    "pool": Colour("#33B2D4", "cyan"),
    "teal": Colour("#117777", "cyan"),
    "petrol": Colour("#1C4D5C", "cyan"),
    "petrol_green": Colour("#1E4D47", "cyan"),
    "aqua": Colour("#80D0B8", "cyan"),
    # greens
    "green": Colour("#2E9A46", "green"),
    "flag": Colour("#0A9540", "green"),
    "emerald": Colour("#0F936A", "green"),
    "mint": Colour("#9ADDBF", "green"),
    "lime": Colour("#9CCB34", "green"),
    "olive": Colour("#6C7830", "green"),
    "army": Colour("#4D5426", "green"),
    "moss": Colour("#5F6C32", "green"),
    # yellows
    "yellow": Colour("#F2CC1C", "yellow"),
    "lemon": Colour("#E6E02C", "yellow"),
    "mustard": Colour("#C99E2A", "yellow"),
    # oranges
    "orange": Colour("#EE7621", "orange"),
    "burnt_orange": Colour("#C45518", "orange"),
    "coral": Colour("#F27B68", "orange"),
    "salmon": Colour("#F49A80", "orange"),
    "peach": Colour("#F8C4A2", "orange"),
    # browns
    "brown": Colour("#6A4127", "brown"),
    "chestnut": Colour("#7B4A2B", "brown"),
    "coffee": Colour("#4A3123", "brown"),
    "chocolate": Colour("#45291D", "brown"),
    "caramel": Colour("#AE6D34", "brown"),
    "tan": Colour("#C09A6C", "brown"),
    "wood": Colour("#A87A4C", "brown"),
    # beiges
    "beige": Colour("#D8C3A0", "beige"),
    "sand": Colour("#CCB48C", "beige"),
    "nude": Colour("#E2BBA0", "beige"),
    "khaki": Colour("#BCAE7E", "beige"),
    # not colours the pixels can check
    "transparent": Colour(None),
    "multicolour": Colour(None),
    "patterned": Colour(None),
    "natural": Colour(None),
}
# fmt: on

EXPLICIT_NEIGHBOURS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in (
        ("black", "graphite"),  # a dark grey product is sold as black, and photographs so
        ("black", "coffee"),
        ("black", "navy"),  # navy photographed in soft light reads as black, and is sold so
        ("white", "silver"),
        ("ice", "silver"),
        ("gold", "bronze"),
        ("gold", "mustard"),
        ("gold", "champagne"),
        ("champagne", "beige"),
        ("copper", "bronze"),
        ("copper", "caramel"),
        ("burnt_orange", "caramel"),
        ("rose", "nude"),
        ("rose", "pink"),
        ("beige", "caramel"),
        ("beige", "tan"),
        ("sand", "tan"),
        ("khaki", "olive"),
        ("khaki", "tan"),
        ("wood", "beige"),
        ("peach", "nude"),
        ("salmon", "pink"),
        ("coral", "pink"),
        ("marsala", "brown"),
        ("wine", "purple"),
        ("magenta", "purple"),
        ("fuchsia", "purple"),
        ("lilac", "pink"),
        ("violet", "blue"),
        ("royal", "violet"),
        ("denim", "navy"),
        ("sky", "cyan"),
        ("sky", "pool"),
        ("blue", "cyan"),
        ("turquoise", "green"),
        ("turquoise", "emerald"),
        ("aqua", "mint"),
        ("teal", "emerald"),
        ("petrol", "navy"),
        ("petrol_green", "green"),
        ("lime", "yellow"),
        ("lemon", "lime"),
        ("cream", "beige"),
        ("ivory", "beige"),
    )
)
"""Pairs across families that shops and models use for the same product, beyond closeness."""


@dataclass(frozen=True)
class Modifier:
    """What a modifier word does to its base's reference."""

    lighten: float = 0.0
    """Share of the way from L* to 100 (``claro``)."""
    darken: float = 0.0
    """Share of L* removed (``escuro``)."""
    chroma: float = 1.0
    """Chroma factor (``pastel`` lowers it, ``neon`` raises it)."""
    towards: str | None = None
    """A colour key the reference moves half-way to (``verde turquesa``, ``cinza chumbo``)."""
    checkable: bool = True
    """False: the colour is not what the pixels show (``translúcido``)."""


LIGHT = Modifier(lighten=0.35, chroma=0.85)
DARK = Modifier(darken=0.35, chroma=0.9)
PASTEL = Modifier(lighten=0.5, chroma=0.45)
NEON = Modifier(chroma=1.25)
BURNT = Modifier(darken=0.2, chroma=0.9)
AGED = Modifier(darken=0.15, chroma=0.8)
FINISH = Modifier()
SEE_THROUGH = Modifier(checkable=False)


@dataclass(frozen=True)
class Lexicon:
    """One language's words for the colour keys."""

    words: dict[str, str]
    """Folded name (hyphens as spaces; both genders) -> colour key; compounds included."""
    names: dict[str, str]
    """Colour key -> the name an estimate is given in this language (a vocabulary name)."""
    modifiers: dict[str, tuple[str, Modifier]]
    """Folded modifier -> (the form it is written in, what it does)."""
    modifiers_first: bool
    """English puts a modifier before its colour ("light blue"), Portuguese after."""


def _lexicon(
    profile: LanguageProfile,
    names: dict[str, str],
    aliases: dict[str, str],
    effects: dict[str, Modifier],
    modifiers_first: bool,
) -> Lexicon:
    """A language's lexicon: ``effects`` say what the modifiers that move a reference do; every
    other modifier of the profile's vocabulary is a finish, so a modifier added to
    ``schemas.language`` is read (and changes nothing) without being listed again here."""
    finishes = profile.colour_modifiers - profile.colour_connectors - effects.keys()
    modifiers = {**effects, **dict.fromkeys(sorted(finishes), FINISH)}
    words = {_phrase(name): key for key, name in names.items()}
    words.update({_phrase(alias): key for alias, key in aliases.items()})
    mods = {_phrase(word): (word, effect) for word, effect in modifiers.items()}
    return Lexicon(words=words, names=names, modifiers=mods, modifiers_first=modifiers_first)


def _phrase(text: str) -> str:
    return " ".join(_tokens(text))


def _tokens(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", fold(text))


PT_LEXICON = _lexicon(
    PT_BR,
    names={
        "black": "preto",
        "white": "branco",
        "off_white": "off-white",
        "ice": "gelo",
        "ivory": "marfim",
        "cream": "creme",
        "ecru": "branco cru",
        "grey": "cinza",
        "graphite": "grafite",
        "lead": "chumbo",
        "silver": "prata",
        "gold": "dourado",
        "champagne": "dourado champanhe",
        "rose": "rosé",
        "bronze": "bronze",
        "copper": "cobre",
        "red": "vermelho",
        "wine": "vinho",
        "burgundy": "bordô",
        "marsala": "marsala",
        "pink": "rosa",
        "baby_pink": "rosa bebê",
        "hot_pink": "pink",
        "magenta": "magenta",
        "fuchsia": "fúcsia",
        "purple": "roxo",
        "violet": "violeta",
        "lilac": "lilás",
        "lavender": "lavanda",
        "blue": "azul",
        "navy": "azul-marinho",
        "royal": "azul royal",
        "baby_blue": "azul bebê",
        "sky": "azul celeste",
        "denim": "jeans",
        "turquoise": "turquesa",
        "cyan": "ciano",
        "pool": "azul piscina",
        "petrol": "azul petróleo",
        "petrol_green": "verde petróleo",
        "aqua": "verde-água",
        "green": "verde",
        "flag": "verde bandeira",
        "emerald": "verde esmeralda",
        "mint": "verde menta",
        "lime": "verde limão",
        "olive": "verde-oliva",
        "army": "verde militar",
        "moss": "verde musgo",
        "yellow": "amarelo",
        "lemon": "amarelo limão",
        "mustard": "mostarda",
        "orange": "laranja",
        "burnt_orange": "laranja queimado",
        "coral": "coral",
        "salmon": "salmão",
        "peach": "pêssego",
        "brown": "marrom",
        "chestnut": "castanho",
        "coffee": "café",
        "chocolate": "chocolate",
        "caramel": "caramelo",
        "wood": "madeira",
        "beige": "bege",
        "sand": "areia",
        "nude": "nude",
        "khaki": "caqui",
        "transparent": "transparente",
        "multicolour": "multicolorido",
        "patterned": "estampado",
        "natural": "natural",
    },
    aliases={
        "preta": "black",
        "branca": "white",
        "branca crua": "ecru",
        "prateado": "silver",
        "prateada": "silver",
        "dourada": "gold",
        "ouro": "gold",
        "ouro rosé": "rose",
        "dourado rosé": "rose",
        "dourada rosé": "rose",
        "dourada champanhe": "champagne",
        "ouro champanhe": "champagne",
        "vermelha": "red",
        "roxa": "purple",
        "azul marinho": "navy",
        "azul turquesa": "turquoise",
        "verde turquesa": "turquoise",
        "verde agua": "aqua",
        "azul agua": "aqua",
        "verde oliva": "olive",
        "amarela": "yellow",
        "amarela limão": "lemon",
        "amarelo queimado": "mustard",
        "amarela queimada": "mustard",
        "laranja queimada": "burnt_orange",
        "castanha": "chestnut",
        "cinza chumbo": "lead",
        "cinza grafite": "graphite",
        "incolor": "transparent",
        "multicolorida": "multicolour",
        "colorido": "multicolour",
        "colorida": "multicolour",
        "estampada": "patterned",
    },
    effects={
        "claro": LIGHT,
        "clara": LIGHT,
        "escuro": DARK,
        "escura": DARK,
        "pastel": PASTEL,
        "bebê": PASTEL,
        "neon": NEON,
        "queimado": BURNT,
        "queimada": BURNT,
        "envelhecido": AGED,
        "envelhecida": AGED,
        "translúcido": SEE_THROUGH,
        "translúcida": SEE_THROUGH,
        "marinho": Modifier(towards="navy"),
        "celeste": Modifier(towards="sky"),
        "petróleo": Modifier(towards="petrol"),
        "piscina": Modifier(towards="pool"),
        "turquesa": Modifier(towards="turquoise"),
        "oliva": Modifier(towards="olive"),
        "militar": Modifier(towards="army"),
        "musgo": Modifier(towards="moss"),
        "limão": Modifier(towards="lime"),
        "água": Modifier(towards="aqua"),
        "bandeira": Modifier(towards="flag"),
        "menta": Modifier(towards="mint"),
        "esmeralda": Modifier(towards="emerald"),
        "chumbo": Modifier(towards="lead"),
        "grafite": Modifier(towards="graphite"),
        "rosé": Modifier(towards="rose"),
        "champanhe": Modifier(towards="champagne"),
    },
    modifiers_first=False,
)

EN_LEXICON = _lexicon(
    EN,
    names={
        "black": "black",
        "white": "white",
        "off_white": "off-white",
        "ivory": "ivory",
        "cream": "cream",
        "grey": "grey",
        "graphite": "graphite",
        "silver": "silver",
        "gold": "gold",
        "champagne": "champagne gold",
        "rose": "rose gold",
        "bronze": "bronze",
        "copper": "copper",
        "red": "red",
        "wine": "wine",
        "burgundy": "burgundy",
        "pink": "pink",
        "baby_pink": "baby pink",
        "magenta": "magenta",
        "fuchsia": "fuchsia",
        "purple": "purple",
        "violet": "violet",
        "lilac": "lilac",
        "lavender": "lavender",
        "blue": "blue",
        "navy": "navy",
        "royal": "royal blue",
        "baby_blue": "baby blue",
        "sky": "sky blue",
        "denim": "denim",
        "turquoise": "turquoise",
        "cyan": "cyan",
        "teal": "teal",
        "green": "green",
        "emerald": "emerald green",
        "mint": "mint green",
        "lime": "lime green",
        "olive": "olive",
        "yellow": "yellow",
        "mustard": "mustard",
        "orange": "orange",
        "coral": "coral",
        "salmon": "salmon",
        "peach": "peach",
        "brown": "brown",
        "chocolate": "chocolate",
        "caramel": "caramel",
        "tan": "tan",
        "wood": "wood",
        "beige": "beige",
        "sand": "sand",
        "nude": "nude",
        "khaki": "khaki",
        "transparent": "transparent",
        "multicolour": "multicolour",
        "patterned": "patterned",
        "natural": "natural",
    },
    aliases={
        "gray": "grey",
        "golden": "gold",
        "rose": "rose",
        "navy blue": "navy",
        "olive green": "olive",
        "heather grey": "grey",
        "heather gray": "grey",
        "clear": "transparent",
        "multicolor": "multicolour",
        "multicoloured": "multicolour",
        "multicolored": "multicolour",
    },
    effects={
        "light": LIGHT,
        "pale": LIGHT,
        "dark": DARK,
        "deep": DARK,
        "pastel": PASTEL,
        "baby": PASTEL,
        "neon": NEON,
        "navy": Modifier(towards="navy"),
        "sky": Modifier(towards="sky"),
        "olive": Modifier(towards="olive"),
        "lime": Modifier(towards="lime"),
        "mint": Modifier(towards="mint"),
        "emerald": Modifier(towards="emerald"),
        "rose": Modifier(towards="rose"),
        "champagne": Modifier(towards="champagne"),
        "translucent": SEE_THROUGH,
    },
    modifiers_first=True,
)

LEXICONS: dict[str, Lexicon] = {PT_BR.code.lower(): PT_LEXICON, EN.code.lower(): EN_LEXICON}


def lexicon_for(profile: LanguageProfile) -> Lexicon | None:
    """The profile's lexicon; None for a language without one (nothing is then checkable)."""
    return LEXICONS.get(profile.code.lower())


# -- colour arithmetic ----------------------------------------------------------------------------


def srgb_to_lab(rgb: tuple[float, float, float]) -> Lab:
    """sRGB in [0, 1] to CIELAB exactly as ``cv2.cvtColor(float32, COLOR_RGB2Lab)`` does."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    r, g, b = linear
    x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.950456
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.088754

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    lightness = 116 * f(y) - 16 if y > 0.008856 else 903.3 * y
    return (lightness, 500 * (f(x) - f(y)), 200 * (f(y) - f(z)))


def hex_to_lab(code: str) -> Lab:
    value = int(code.lstrip("#"), 16)
    rgb = ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    return srgb_to_lab((rgb[0] / 255, rgb[1] / 255, rgb[2] / 255))


def delta_e(lab1: Lab, lab2: Lab) -> float:
    """CIEDE2000 (Sharma, Wu & Dalal 2005): perceptual distance, ~1 = just noticeable."""
    l1, a1, b1 = lab1
    l2, a2, b2 = lab2
    c_mean = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dlp, dcp = l2 - l1, c2p - c1p
    dhp = _hue_difference(h1p, h2p, c1p * c2p)
    dhp_big = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))
    lp_mean, cp_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    hp_mean = _hue_mean(h1p, h2p, c1p * c2p)
    t = (
        1
        - 0.17 * math.cos(math.radians(hp_mean - 30))
        + 0.24 * math.cos(math.radians(2 * hp_mean))
        + 0.32 * math.cos(math.radians(3 * hp_mean + 6))
        - 0.20 * math.cos(math.radians(4 * hp_mean - 63))
    )
    d_theta = 30 * math.exp(-(((hp_mean - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (lp_mean - 50) ** 2 / math.sqrt(20 + (lp_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    tl, tc, th = dlp / s_l, dcp / s_c, dhp_big / s_h
    return math.sqrt(tl * tl + tc * tc + th * th + r_t * tc * th)


def _hue_difference(h1: float, h2: float, chroma_product: float) -> float:
    if chroma_product == 0:
        return 0.0
    diff = h2 - h1
    if diff > 180:
        return diff - 360
    if diff < -180:
        return diff + 360
    return diff


def _hue_mean(h1: float, h2: float, chroma_product: float) -> float:
    if chroma_product == 0:
        return h1 + h2
    if abs(h1 - h2) <= 180:
        return (h1 + h2) / 2
    return (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2


@cache
def key_lab(key: str) -> Lab | None:
    """The reference of a colour key; None for a non-colour (or an unknown key)."""
    colour = COLOURS.get(key)
    return hex_to_lab(colour.srgb) if colour and colour.srgb else None


def _modified(lab: Lab, modifier: Modifier) -> Lab:
    lightness, a, b = lab
    lightness += (100 - lightness) * modifier.lighten
    lightness *= 1 - modifier.darken
    a, b = a * modifier.chroma, b * modifier.chroma
    target = key_lab(modifier.towards) if modifier.towards else None
    if target is not None:
        lightness, a, b = (lightness + target[0]) / 2, (a + target[1]) / 2, (b + target[2]) / 2
    return (min(100.0, lightness), a, b)


# -- reading colour texts -------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedColour:
    """One colour of a colour text: its key and the modifiers that change its reference."""

    key: str
    modifiers: tuple[str, ...] = ()
    """Written forms of the modifiers that act on the reference, in order ("claro")."""
    checkable: bool = True

    def lab(self, lexicon: Lexicon) -> Lab | None:
        lab = key_lab(self.key)
        if lab is None or not self.checkable:
            return None
        for written in self.modifiers:
            lab = _modified(lab, lexicon.modifiers[_phrase(written)][1])
        return lab

    def name(self, lexicon: Lexicon) -> str:
        base = lexicon.names.get(self.key, self.key)
        if not self.modifiers:
            return base
        if lexicon.modifiers_first:
            return " ".join((*self.modifiers, base))
        return " ".join((base, *self.modifiers))


def read_colours(text: str, profile: LanguageProfile) -> list[NamedColour]:
    """The colours of a colour text, in order; empty when it names none this profile knows."""
    lexicon = lexicon_for(profile)
    if lexicon is None:
        return []
    connectors = {fold(c) for c in profile.colour_connectors}
    colours: list[NamedColour] = []
    segment: list[str] = []
    for token in [*_tokens(text), None]:
        if token is None or token in connectors:
            colours.extend(_read_segment(segment, lexicon))
            segment = []
        else:
            segment.append(token)
    return colours


def _read_segment(tokens: list[str], lexicon: Lexicon) -> list[NamedColour]:
    """One connector-free stretch: colour words (longest phrase first) and their modifiers."""
    items: list[tuple[str, str]] = []  # ("colour", key) or ("modifier", folded word)
    i = 0
    while i < len(tokens):
        item, used = _match(tokens, i, lexicon)
        if item is not None:
            items.append(item)
        i += used
    return _attach(items, lexicon)


def _match(tokens: list[str], i: int, lexicon: Lexicon) -> tuple[tuple[str, str] | None, int]:
    """The item starting at token ``i`` and how many tokens it takes; unknown words are skipped."""
    for length in (3, 2):
        phrase = " ".join(tokens[i : i + length])
        if i + length <= len(tokens) and phrase in lexicon.words:
            return ("colour", lexicon.words[phrase]), length
    word = tokens[i]
    if word in lexicon.words or word in lexicon.modifiers:
        return _word_item(word, tokens, i, lexicon), 1
    return None, 1


def _word_item(word: str, tokens: list[str], i: int, lexicon: Lexicon) -> tuple[str, str]:
    """A word that is both a colour and a modifier ("turquesa", "navy") modifies the colour
    word on its modifier side when there is one, and is a colour otherwise."""
    if word not in lexicon.modifiers:
        return ("colour", lexicon.words[word])
    if word not in lexicon.words:
        return ("modifier", word)
    j = i + 1 if lexicon.modifiers_first else i - 1
    if 0 <= j < len(tokens) and tokens[j] in lexicon.words:
        return ("modifier", word)
    return ("colour", lexicon.words[word])


def _attach(items: list[tuple[str, str]], lexicon: Lexicon) -> list[NamedColour]:
    heads = [n for n, (kind, _) in enumerate(items) if kind == "colour"]
    if not heads:
        return []
    mods: dict[int, list[str]] = {h: [] for h in heads}
    for n, (kind, word) in enumerate(items):
        if kind == "modifier":
            mods[_nearest(n, heads, lexicon.modifiers_first)].append(word)
    return [_named(items[h][1], mods[h], lexicon) for h in heads]


def _nearest(n: int, heads: list[int], modifiers_first: bool) -> int:
    after = [h for h in heads if h > n]
    before = [h for h in heads if h < n]
    if modifiers_first:
        return after[0] if after else before[-1]
    return before[-1] if before else after[0]


def _named(key: str, words: list[str], lexicon: Lexicon) -> NamedColour:
    effects = [lexicon.modifiers[w] for w in words]
    acting = tuple(written for written, m in effects if m != FINISH and m.checkable)
    checkable = all(m.checkable for _, m in effects) and key_lab(key) is not None
    return NamedColour(key=key, modifiers=acting, checkable=checkable)


# -- the public helpers ---------------------------------------------------------------------------


def parse_colour(text: str, profile: LanguageProfile) -> list[str]:
    """The colour names a colour text contains, in order, in their canonical written form.

    "Azul-Marinho" -> ["azul-marinho"]; "verde clara fosca" -> ["verde clara"];
    "azul e branco" -> ["azul", "branco"]; "preta" -> ["preto"].  A finish (fosco, metálico)
    is dropped because it does not change the colour; names with no reference (transparente)
    are kept, so a caller can tell "not a colour" from "no colour found".
    """
    lexicon = lexicon_for(profile)
    if lexicon is None:
        return []
    return [c.name(lexicon) for c in read_colours(text, profile)]


def _single(name: str, profile: LanguageProfile) -> tuple[NamedColour, Lexicon] | None:
    lexicon = lexicon_for(profile)
    colours = read_colours(name, profile)
    if lexicon is None or len(colours) != 1:
        return None
    return colours[0], lexicon


def reference_lab(name: str, profile: LanguageProfile) -> Lab | None:
    """The reference of one colour name (modifiers applied); None for a non-colour, an unknown
    name, or a text naming several colours (their references would have to be averaged, which
    describes neither)."""
    single = _single(name, profile)
    return single[0].lab(single[1]) if single else None


def checkable(name: str, profile: LanguageProfile) -> bool:
    """Whether the pixels can say anything about a colour text: it names at least one colour,
    and every colour it names has a reference."""
    lexicon = lexicon_for(profile)
    colours = read_colours(name, profile)
    return (
        lexicon is not None and bool(colours) and all(c.lab(lexicon) is not None for c in colours)
    )


def not_colours(profile: LanguageProfile) -> frozenset[str]:
    """The profile's colour names that name no colour the pixels can check: see-through
    (transparente), several colours or a pattern (multicolorido, estampado), or a range as wide
    as a material's (natural).  A card may hold them; it is then never flagged."""
    lexicon = lexicon_for(profile)
    if lexicon is None:
        return frozenset()
    return frozenset(
        name
        for name in profile.colours
        if (key := lexicon.words.get(_phrase(name))) is not None and key_lab(key) is None
    )


def neighbours(a: str, b: str, profile: LanguageProfile) -> bool:
    """Whether two single colour names count as agreement (see the module docstring)."""
    first, second = _single(a, profile), _single(b, profile)
    if first is None or second is None:
        return False
    (one, lexicon), (other, _) = first, second
    lab_one, lab_other = one.lab(lexicon), other.lab(lexicon)
    if lab_one is None or lab_other is None:
        return False
    return keys_neighbour(one.key, other.key) or delta_e(lab_one, lab_other) <= NEIGHBOUR_DE


def keys_neighbour(one: str, other: str) -> bool:
    """Same key, same family, or an explicit pair (the reference distance aside)."""
    if one == other or frozenset((one, other)) in EXPLICIT_NEIGHBOURS:
        return True
    family = COLOURS[one].family if one in COLOURS else None
    return family is not None and family == (COLOURS[other].family if other in COLOURS else None)


def nameable(profile: LanguageProfile) -> dict[str, Lab]:
    """Every name an estimate may be given in this language, with its reference.

    Only names the card grammar accepts (``colour_pattern``): the engine's ``replace`` policy
    writes the estimate into ``color_primary``, so it has to be a colour the card may hold
    (English's "royal blue" is not, the grammar putting modifiers after the base)."""
    return dict(_nameable(profile.code, profile))


_NAMEABLE: dict[str, tuple[tuple[str, Lab], ...]] = {}


def _nameable(code: str, profile: LanguageProfile) -> tuple[tuple[str, Lab], ...]:
    # keyed by code: hashing a whole profile (its vocabularies) costs more than the lookup
    if code not in _NAMEABLE:
        lexicon = lexicon_for(profile)
        grammar = re.compile(colour_pattern(profile))
        names = lexicon.names.items() if lexicon else ()
        _NAMEABLE[code] = tuple(
            (name, lab)
            for key, name in names
            if (lab := key_lab(key)) is not None and grammar.fullmatch(name)
        )
    return _NAMEABLE[code]


def accepted_names(name: str, profile: LanguageProfile, among: Iterable[str] = ()) -> set[str]:
    """The names (of ``among``, default every nameable one) that agree with ``name``."""
    pool = list(among) or list(nameable(profile))
    return {other for other in pool if neighbours(name, other, profile)}
