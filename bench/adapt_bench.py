"""Domain adaptation benchmark: what each VITRINE_PREPROCESS_ADAPT mode costs, and what it buys.

    python bench/adapt_bench.py [--repeats 15] [--sizes 448,896] [--threads 1] [--no-effect]

Cost.  Photographic-like phone photos (``preprocess_bench.photo_like``: smooth lighting,
texture, sensor noise, hard-edged objects; 12 MP JPEG, q90), one as shot and one with a warm
cast and a haze, so that ``auto`` takes its longest path (measure, white balance, contrast) on
the second.  For each encoder size (pad) and mode, ``prepare_image`` runs from bytes to the
encoder-ready PNG, interleaved with the plain path (no adaptation) in the same loop
(plain, mode A, plain, mode B, ...) ``--repeats`` times, so machine load hits them alike.
Reported: median ``adapt_ms`` (the adaptation alone, timed inside ``prepare_image``; the budget
is <= 10 ms at 896 px), median whole ``prepare_image`` ms, and its ratio to the plain path's.
``--threads`` is OpenCV's thread count (1: the cost on one core, as Pillow's resize is; 0:
OpenCV's default, every core).

Effect.  ``services.inference.image.pixel_colour.estimate_colour`` names the product's colour from
``PreparedImage.pixels``.  ``tests/support/colour_images.py`` draws ``--photos`` product photos
of known colour twice, the same objects clean and then with a warm or cool cast or a washed-out look
(paired sets); each is saved as a JPEG (q92, as a shop uploads it), prepared at
``--effect-size`` with each mode, and the estimate counts as right when it is the drawn name or
a neighbour ``services.language.colour_science.neighbours`` accepts.  Reported per subset
(clean, cast, low-contrast), with the share of photos ``auto`` changed.  ``match`` uses a clean
photo of another seed as its reference: one catalogue shot, as an operator would pick.  A mode
helps where it raises the cast and low-contrast columns without lowering the clean one.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from preprocess_bench import photo_like  # noqa: E402

from services.inference.image.adapt import AdaptMode, adapt_mode  # noqa: E402
from services.inference.image.preprocess import (  # noqa: E402
    EncoderInput,
    ImageLimits,
    PreparedImage,
    prepare_image,
)

LIMITS = ImageLimits()
SINGLE_CORRECTIONS = (
    "grayworld",
    "whitepatch",
    "neutral",
    "clahe",
    "stretch",
    "match",
    "match-chroma",
)
"""Each correction alone: both sections measure them, beside their own combinations."""
COST_MODES = ("auto", *SINGLE_CORRECTIONS, "whitepatch+clahe", "neutral+stretch+clahe")
WARM = np.array([1.0, 0.86, 0.68], dtype=np.float32)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def cast_and_haze(image: Image.Image) -> Image.Image:
    """A warm bulb and a washed-out exposure: what ``auto`` is for."""
    arr = np.asarray(image, dtype=np.float32) * WARM
    arr = arr * 0.55 + 95.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def mode_for(name: str, reference: Path) -> AdaptMode:
    return adapt_mode(name, reference if "match" in name else None)


# -- cost -----------------------------------------------------------------------------------------


@dataclass
class CostRow:
    photo: str
    size: int
    mode: str
    adapt_ms: float
    prepare_ms: float
    plain_ms: float
    applied: str

    def markdown(self) -> str:
        return (
            f"| {self.photo} | {self.size} | {self.mode} | {self.adapt_ms:.2f} | "
            f"{self.prepare_ms:.1f} | {self.plain_ms:.1f} | {self.prepare_ms / self.plain_ms:.2f}x "
            f"| {self.applied} |"
        )


def timed(data: bytes, target: EncoderInput, mode: AdaptMode | None) -> tuple[float, PreparedImage]:
    started = time.perf_counter()
    out = prepare_image(data, target, LIMITS, adapt=mode)
    return (time.perf_counter() - started) * 1000.0, out


def bench_cost(
    photos: dict[str, bytes], sizes: Iterable[int], repeats: int, reference: Path
) -> list[CostRow]:
    rows = []
    modes = {name: mode_for(name, reference) for name in COST_MODES}
    for size in sizes:
        target = EncoderInput(size, "pad")
        for photo, data in photos.items():
            plain: list[float] = []
            whole: dict[str, list[float]] = {m: [] for m in modes}
            inner: dict[str, list[float]] = {m: [] for m in modes}
            applied: dict[str, str] = {}
            for name, mode in modes.items():  # warm-up (imports, caches, OpenCV's first calls)
                applied[name] = "+".join(
                    prepare_image(data, target, LIMITS, adapt=mode).adapt_applied
                )
            prepare_image(data, target, LIMITS)
            for _ in range(repeats):
                for name, mode in modes.items():
                    ms, _ = timed(data, target, None)
                    plain.append(ms)
                    ms, out = timed(data, target, mode)
                    whole[name].append(ms)
                    inner[name].append(out.adapt_ms)
            plain_ms = statistics.median(plain)
            for name in modes:
                rows.append(
                    CostRow(
                        photo=photo,
                        size=size,
                        mode=name,
                        adapt_ms=statistics.median(inner[name]),
                        prepare_ms=statistics.median(whole[name]),
                        plain_ms=plain_ms,
                        applied=applied[name] or "-",
                    )
                )
    return rows


# -- effect ---------------------------------------------------------------------------------------


EFFECT_MODES = ("off", "auto", *SINGLE_CORRECTIONS, "neutral+clahe", "whitepatch+clahe")
SUBSETS = ("clean", "cast", "low-contrast")


def subset(tags: frozenset[str]) -> str:
    if "clean" in tags:
        return "clean"
    return "low-contrast" if "low-contrast" in tags else "cast"


def bench_effect(size: int, n: int, seed: int) -> list[str]:
    """Accuracy of the pixel colour estimate per mode; see the module docstring."""
    try:
        from schemas.language import PT_BR
        from services.inference.image.pixel_colour import estimate_colour
        from services.language.colour_science import neighbours
        from tests.support import colour_images
    except ImportError as exc:
        return [f"\n## Effect: not measured ({exc})"]

    print(f"generating {n} clean + {n} cast/low-contrast product photos ...", flush=True)
    # The same n objects twice (same colour, shape, backdrop), once clean and once with a
    # cast or a haze: the two sets are paired.
    photos = colour_images.generate(n, seed, casts=False) + colour_images.generate(
        n, seed, casts=True
    )
    with tempfile.TemporaryDirectory(prefix="vitrine-adapt-effect-") as tmp:
        reference = Path(tmp) / "catalogue.png"  # a clean shot of another set: "typical"
        colour_images.sample(0, seed + 1000, casts=False).image.save(reference)
        modes = {name: mode_for(name, reference) for name in EFFECT_MODES}
        target = EncoderInput(size, "pad")
        right: dict[tuple[str, str], int] = {}
        changed: dict[tuple[str, str], int] = {}
        count: dict[str, int] = dict.fromkeys(SUBSETS, 0)
        for photo in photos:
            group = subset(photo.tags)
            count[group] += 1
            data = jpeg(photo.image, quality=92)  # as a shop uploads it
            for name, mode in modes.items():
                prepared = prepare_image(data, target, LIMITS, adapt=mode)
                assert prepared.pixels is not None
                estimate = estimate_colour(prepared.pixels, PT_BR).name
                good = (
                    estimate == photo.expected
                    or estimate in photo.accepted
                    or neighbours(photo.expected, estimate, PT_BR)
                )
                right[name, group] = right.get((name, group), 0) + int(good)
                changed[name, group] = changed.get((name, group), 0) + int(
                    bool(prepared.adapt_applied)
                )
    lines = [
        f"\n## Effect: pixel colour estimate right (name or accepted neighbour), {size} px, "
        f"tests/support/colour_images.py seed {seed}\n",
        "| mode | " + " | ".join(f"{g} (n={count[g]})" for g in SUBSETS) + " | auto changed |",
        "|---|" + "---|" * (len(SUBSETS) + 1),
    ]
    for name in modes:
        cells = [f"{right[name, g] / max(1, count[g]):.1%}" for g in SUBSETS]
        moved = "/".join(f"{changed[name, g] / max(1, count[g]):.0%}" for g in SUBSETS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {moved if name == 'auto' else ''} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="448,896", help="encoder sizes (pad) to measure")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads; 0 = its default")
    parser.add_argument("--no-effect", action="store_true", help="the cost tables only")
    parser.add_argument("--no-cost", action="store_true", help="the effect table only")
    parser.add_argument("--effect-size", type=int, default=896, help="encoder size (effect)")
    parser.add_argument("--photos", type=int, default=240, help="photos per set (effect)")
    parser.add_argument("--seed", type=int, default=13, help="colour_images seed (effect)")
    args = parser.parse_args()
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.no_cost:
        with tempfile.TemporaryDirectory(prefix="vitrine-adapt-bench-") as tmp:
            reference = Path(tmp) / "reference.jpg"
            photo_like(1600, 1200, seed=7).save(reference, "JPEG", quality=90)
            print("generating test photos ...", flush=True)
            shot = photo_like(4000, 3000, seed=2)
            photos = {"12mp": jpeg(shot), "12mp-cast-hazy": jpeg(cast_and_haze(shot))}
            print(
                f"\n## Cost, median of {args.repeats} (OpenCV threads: "
                f"{cv2.getNumThreads()}), 12 MP JPEG -> encoder input\n"
            )
            print("| photo | size | mode | adapt ms | prepare ms | plain ms | ratio | applied |")
            print("|---|---|---|---|---|---|---|---|")
            for row in bench_cost(photos, sizes, args.repeats, reference):
                print(row.markdown(), flush=True)
    if not args.no_effect:
        for line in bench_effect(args.effect_size, args.photos, args.seed):
            print(line, flush=True)


if __name__ == "__main__":
    main()
