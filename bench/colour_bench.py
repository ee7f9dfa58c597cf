"""Pixel colour estimate benchmark: what ``estimate_colour`` costs, and what its segmentation and
clustering buy over the obvious baseline.

    python bench/colour_bench.py [--n 240] [--seed 13] [--repeats 3] [--threads 1]

Photos: ``tests/support/colour_images.py`` (generated product photos of known pt-BR colour;
mixed set, about 40 % with a colour cast or low contrast).

Cost.  Each photo resized so its longest side is 448 and 896 px (the encoder sizes), as a PIL
image (what the engine hands over); the estimate and the baseline run interleaved on the same
photo ``--repeats`` times, so machine load hits them alike.  Reported: median wall ms and
median CPU ms of each, and their ratio.  ``--threads`` is OpenCV's thread count (1: the cost
on one core; 0: OpenCV's default).

Baseline.  The plain mean colour of the centre crop (the middle half of each side), named with
the same vocabulary: what one would write without a backdrop model.

Effect.  Accuracy of both on the set (the expected name or one ``services.language.colour_science``
accepts), overall and on the clean and on the cast/low-contrast photos.

Threshold.  For each candidate ``AGREE_DE``, the share of photos where the *right* colour
agrees with the estimate (what the threshold must not break) and the mean share of *wrong*
vocabulary names that agree (what it lets through); ``AGREE_DE`` is the smallest value with
(nearly) every right colour agreeing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from schemas.language import PT_BR  # noqa: E402
from services.inference.image import pixel_colour  # noqa: E402
from services.inference.image.pixel_colour import (  # noqa: E402
    ColourEstimate,
    check_colour,
    estimate_colour,
)
from services.language.colour_science import nameable  # noqa: E402
from tests.support.colour_images import Sample, generate  # noqa: E402

THRESHOLDS = (8.0, 10.0, 12.0, 14.0, 15.0, 16.0, 18.0, 20.0)


def baseline(image: Image.Image) -> str:
    """The mean colour of the centre crop, named by its nearest reference."""
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    crop = rgb[h // 4 : h - h // 4, w // 4 : w - w // 4].reshape(-1, 3)
    mean = crop.mean(axis=0, dtype=np.float64).astype(np.float32) / 255
    lab = cv2.cvtColor(mean.reshape(1, 1, 3), cv2.COLOR_RGB2Lab)[0, 0]
    return pixel_colour._nearest((float(lab[0]), float(lab[1]), float(lab[2])), PT_BR)[0]


def estimate(image: Image.Image) -> ColourEstimate:
    return estimate_colour(image, PT_BR)


def resized(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def timed(function: Callable[[Image.Image], object], image: Image.Image) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function(image)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def bench_cost(photos: list[Sample], sizes: list[int], repeats: int) -> list[str]:
    rows = []
    for side in sizes:
        images = [resized(p.image, side) for p in photos]
        ours: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        for _ in range(repeats):
            for image in images:
                ours.append(timed(estimate, image))
                base.append(timed(baseline, image))
        ow, oc = (statistics.median(x[i] for x in ours) for i in (0, 1))
        bw, bc = (statistics.median(x[i] for x in base) for i in (0, 1))
        rows.append(
            f"| {side} | {ow:.1f} | {oc:.1f} | {bw:.2f} | {bc:.2f} | {ow / bw:.0f}x | {len(ours)} |"
        )
    return rows


def bench_effect(photos: list[Sample], estimates: list[ColourEstimate]) -> list[str]:
    groups: dict[str, list[tuple[bool, bool]]] = {"all": [], "clean": [], "cast/low": []}
    for photo, estimate in zip(photos, estimates, strict=True):
        hit = (estimate.name in photo.accepted, baseline(photo.image) in photo.accepted)
        groups["all"].append(hit)
        groups["clean" if "clean" in photo.tags else "cast/low"].append(hit)
    rows = []
    for group, hits in groups.items():
        ours = sum(h[0] for h in hits) / max(1, len(hits))
        base = sum(h[1] for h in hits) / max(1, len(hits))
        rows.append(f"| {group} | {len(hits)} | {ours:.1%} | {base:.1%} |")
    return rows


def bench_threshold(photos: list[Sample], estimates: list[ColourEstimate]) -> list[str]:
    names = list(nameable(PT_BR))
    chosen = pixel_colour.AGREE_DE
    rows = []
    try:
        for threshold in THRESHOLDS:
            pixel_colour.AGREE_DE = threshold
            right, wrong = [], []
            for photo, estimate in zip(photos, estimates, strict=True):
                right.append(check_colour(photo.expected, estimate, PT_BR).agrees)
                others = [n for n in names if n not in photo.accepted]
                agree = sum(check_colour(n, estimate, PT_BR).agrees for n in others)
                wrong.append(agree / len(others))
            mark = " (chosen)" if threshold == chosen else ""
            rows.append(
                f"| {threshold:g}{mark} | {sum(right) / len(right):.1%} | "
                f"{statistics.fmean(wrong):.1%} |"
            )
    finally:
        pixel_colour.AGREE_DE = chosen
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=240, help="generated photos")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="448,896")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads; 0 = its default")
    args = parser.parse_args()
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    print(f"generating {args.n} photos (seed {args.seed}) ...", flush=True)
    photos = generate(n=args.n, seed=args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"\n## Cost per photo, median (OpenCV threads: {cv2.getNumThreads()})\n")
    print(
        "| side px | estimate wall ms | estimate CPU ms | baseline wall ms | "
        "baseline CPU ms | ratio (wall) | runs |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in bench_cost(photos[: min(len(photos), 60)], sizes, args.repeats):
        print(row, flush=True)
    estimates = [estimate_colour(p.image, PT_BR) for p in photos]
    print("\n## Effect: right name or an accepted neighbour\n")
    print("| photos | n | estimate | baseline (centre-crop mean) |")
    print("|---|---|---|---|")
    for row in bench_effect(photos, estimates):
        print(row)
    print("\n## Agreement threshold (CIEDE2000 from the model colour's reference)\n")
    print("| AGREE_DE | right colour agrees | wrong names that agree (mean) |")
    print("|---|---|---|")
    for row in bench_threshold(photos, estimates):
        print(row, flush=True)


if __name__ == "__main__":
    main()
