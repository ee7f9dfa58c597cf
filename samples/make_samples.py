"""Draw the bundled sample product photos (so the repo ships no downloaded images).

    python samples/make_samples.py

Simple studio-style renders on white: a mug, a t-shirt and a sneaker, as 1200x900 JPEGs with an
EXIF orientation tag on one of them, like a phone shot.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
SIZE = (1200, 900)


def shadow(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    draw.ellipse(box, fill=(225, 225, 225))


def mug() -> Image.Image:
    img = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(img)
    shadow(d, (380, 700, 820, 780))
    d.rounded_rectangle((420, 260, 760, 740), radius=40, fill=(28, 52, 120))
    d.ellipse((420, 230, 760, 300), fill=(20, 40, 95))
    d.ellipse((440, 240, 740, 290), fill=(60, 40, 30))
    d.arc((700, 360, 900, 600), start=-80, end=80, fill=(28, 52, 120), width=40)
    d.rectangle((450, 300, 480, 700), fill=(60, 90, 170))  # highlight
    return img.filter(ImageFilter.GaussianBlur(1.2))


def tshirt() -> Image.Image:
    img = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(img)
    red = (190, 30, 40)
    d.polygon(
        [
            (430, 180),
            (520, 150),
            (680, 150),
            (770, 180),
            (930, 300),
            (860, 400),
            (780, 350),
            (780, 780),
            (420, 780),
            (420, 350),
            (340, 400),
            (270, 300),
        ],
        fill=red,
    )
    d.ellipse((540, 140, 660, 200), fill="white")
    d.line([(420, 350), (420, 780)], fill=(150, 20, 30), width=6)
    return img.filter(ImageFilter.GaussianBlur(1.0))


def sneaker() -> Image.Image:
    img = Image.new("RGB", SIZE, "white")
    d = ImageDraw.Draw(img)
    shadow(d, (220, 640, 1000, 720))
    d.polygon(
        [
            (250, 620),
            (260, 480),
            (420, 420),
            (560, 300),
            (700, 320),
            (760, 470),
            (980, 540),
            (990, 630),
        ],
        fill=(35, 35, 35),
    )
    d.rectangle((240, 620, 1000, 670), fill=(245, 245, 245))
    for x in range(560, 700, 28):
        d.line([(x, 340), (x + 30, 420)], fill=(240, 240, 240), width=6)
    return img.filter(ImageFilter.GaussianBlur(1.0))


def main() -> None:
    mug().save(HERE / "caneca-azul.jpg", quality=88)
    tshirt().save(HERE / "camiseta-vermelha.jpg", quality=88)
    # Stored sideways with orientation 8, as phones do: the pipeline must rotate it upright.
    exif = Image.Exif()
    exif[0x0112] = 8
    sneaker().rotate(-90, expand=True).save(HERE / "tenis-preto.jpg", quality=88, exif=exif)
    for path in sorted(HERE.glob("*.jpg")):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
