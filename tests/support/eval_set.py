"""A labelled set of drawn product photos whose category and colour are known.

Six silhouettes, each a leaf of the shipped pt-BR tree (a T-shirt, a mug, a sneaker, a
backpack, a football, a bottle), drawn in one of ten colours of the pt-BR vocabulary (the
colour's own reference, so the pixel estimate names it) on a white studio backdrop with a
shadow.  Item i is silhouette i mod 6 in colour (i × 7) mod 10, so category and colour vary
independently.  The labels are what the drawing is; a model that reads the photo could get
them, a blind one cannot.  ``python bench/eval_set.py OUT`` writes one for a person to try.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from schemas.language import PT_BR
from services.language.colour_science import reference_lab
from tests.support.colour_images import lab_to_rgb

COLOURS = (
    "vermelho",
    "azul",
    "verde",
    "amarelo",
    "preto",
    "laranja",
    "roxo",
    "rosa",
    "marrom",
    "cinza",
)

Draw = Callable[[ImageDraw.ImageDraw, tuple[int, int, int]], None]


def _tshirt(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.polygon(
        [(230, 110), (290, 90), (350, 90), (410, 110), (500, 190), (450, 250), (410, 215),
         (410, 420), (230, 420), (230, 215), (190, 250), (140, 190)],
        fill=c,
    )  # fmt: skip
    d.ellipse((290, 75, 350, 115), fill="white")


def _mug(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.ellipse((390, 170, 490, 320), outline=c, width=26)
    d.rounded_rectangle((200, 130, 420, 400), radius=24, fill=c)


def _sneaker(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.polygon(
        [(130, 330), (150, 230), (260, 200), (330, 250), (480, 290), (520, 340), (510, 370),
         (130, 370)],
        fill=c,
    )  # fmt: skip
    d.rectangle((125, 365, 520, 390), fill=(240, 240, 240), outline=(200, 200, 200))


def _backpack(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.arc((260, 60, 380, 170), 180, 360, fill=c, width=14)
    d.rounded_rectangle((210, 110, 430, 420), radius=60, fill=c)
    d.rounded_rectangle((250, 280, 390, 390), radius=20, outline=(30, 30, 30), width=4)


def _football(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.ellipse((200, 110, 440, 350), fill=c)
    for x, y in ((320, 230), (260, 170), (380, 170), (250, 290), (390, 290)):
        d.regular_polygon((x, y, 26), 5, fill=(250, 250, 250))


def _bottle(d: ImageDraw.ImageDraw, c: tuple[int, int, int]) -> None:
    d.rounded_rectangle((290, 70, 350, 120), radius=8, fill=(60, 60, 60))
    d.rounded_rectangle((255, 115, 385, 420), radius=40, fill=c)


SHAPES: tuple[tuple[str, Draw, dict[str, object]], ...] = (
    ("Vestuário > Blusas e Camisetas > Camisetas", _tshirt, {"comprimento_manga": "curta"}),
    ("Casa e Cozinha > Mesa Posta > Xícaras e Canecas", _mug, {}),
    ("Calçados > Tênis > Tênis Casual", _sneaker, {"tipo_fechamento": "cadarço"}),
    ("Bolsas e Acessórios > Mochilas", _backpack, {}),
    ("Esporte e Lazer > Futebol > Bolas de Futebol", _football, {}),
    ("Casa e Cozinha > Potes e Garrafas > Garrafas Térmicas e Squeezes", _bottle, {}),
)


def colour_rgb(name: str) -> tuple[int, int, int]:
    lab = reference_lab(name, PT_BR)
    assert lab is not None, name
    r, g, b = (round(float(v) * 255) for v in lab_to_rgb(lab))
    return r, g, b


def photo(index: int) -> tuple[Image.Image, str, str, dict[str, object]]:
    """Item ``index``'s photo, leaf path, colour name and attributes."""
    path, draw, attributes = SHAPES[index % len(SHAPES)]
    colour = COLOURS[(index * 7) % len(COLOURS)]
    image = Image.new("RGB", (640, 480), "white")
    d = ImageDraw.Draw(image)
    d.ellipse((150, 405, 490, 455), fill=(228, 228, 228))  # the studio shadow
    draw(d, colour_rgb(colour))
    noise = np.random.default_rng(index).normal(0, 2.0, (480, 640, 3))
    pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), path, colour, attributes


def write_eval_set(out: Path, count: int = 30) -> Path:
    """``count`` photos in ``out/photos`` and ``out/set.jsonl`` labelling them; the set's path."""
    (out / "photos").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image, path, colour, attributes = photo(i)
        name = f"photos/item-{i:03d}.jpg"
        image.save(out / name, "JPEG", quality=90)
        lines.append(
            json.dumps(
                {
                    "id": f"item-{i:03d}",
                    "photos": [name],
                    "category": path,
                    "color": colour,
                    "attributes": attributes,
                },
                ensure_ascii=False,
            )
        )
    target = out / "set.jsonl"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
