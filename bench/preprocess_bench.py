"""Preprocessing benchmark: large phone photos → encoder-ready image, ours vs a naive decode.

    python bench/preprocess_bench.py [--repeats 7] [--sizes 336,896]

Generates, in a temp dir, photographic-like test images (smooth gradients + texture + noise +
shapes, so JPEG/PNG/WebP compress like a photo, not like flat colour): 12 MP (4000x3000) and
24 MP (6000x4000) JPEGs at quality 90, a 24 MP JPEG with an EXIF orientation tag (6: rotate 90°),
and 12 MP PNG and WebP for context.  Then, in the same run, for each encoder size:

(a) naive: ``Image.open().convert("RGB")`` (full decode), ``exif_transpose``, ``resize`` with
    LANCZOS to the encoder size, then the same letterbox + PNG encoder our path uses (so both
    end with the same encoder-ready bytes and the difference is only how they get there);
(b) ours: ``services.inference.image.preprocess.prepare_image`` — exactly what
    ``CardEngine.prepare`` calls — from bytes to the encoder-ready PNG;
(c) OpenCV: ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_{2,4,8}`` (DCT-scaled decode, EXIF
    applied by OpenCV), ``INTER_AREA`` resize, same letterbox + PNG encode (JPEG only).

Timing: the variants are interleaved (a, b, c, a, b, c, ...) ``--repeats`` times; median wall
ms and median CPU ms (``time.process_time``: all single-threaded, so CPU time is the cost without
the waits that other processes on a shared machine add) with the ratio naive / variant for each.
Peak memory: each variant runs once in a fresh subprocess that resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``) after imports and reading the file, so "peak Δ" is what decoding that
one image added on top of the process (falls back to ``ru_maxrss`` minus the RSS before).
Quality: mean absolute difference (0-255) of each variant's output from the naive one.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.image.preprocess import (  # noqa: E402
    EncoderInput,
    ImageLimits,
    encode_png,
    prepare_image,
)

WHITE = (255, 255, 255)
# A 12 MP noisy PNG is over the service's default 30 MB byte limit; the bench measures decoding,
# so it raises the byte limit (the pixel limit stays the default 60 MP).
LIMITS = ImageLimits(max_bytes=256 * 1024 * 1024)


# -- test images ---------------------------------------------------------------------------------


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth lighting + mid-frequency texture + sensor noise + a few hard-edged objects."""
    rng = np.random.default_rng(seed)
    # Low-resolution fields upscaled: cheap smooth structure at any size.
    small = rng.normal(0, 1, (height // 100 + 2, width // 100 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    mid = rng.normal(0, 1, (height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    texture = cv2.resize(mid, (width, height), interpolation=cv2.INTER_LINEAR)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    arr = 90 + 80 * yy + 40 * xx + 25 * smooth + 16 * texture
    # Fine detail + sensor noise: sized so a 24 MP q90 JPEG is ~7 MB, like a phone's.
    arr += rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width * 4 // 5)), int(rng.integers(0, height * 4 // 5))
        w, h = (
            int(rng.integers(width // 20, width // 4)),
            int(rng.integers(height // 20, height // 4)),
        )
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour, outline=(0, 0, 0), width=6)
    return image


def write_images(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    big = photo_like(6000, 4000, seed=1)
    mid = photo_like(4000, 3000, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    plan: list[tuple[str, Image.Image, str, dict[str, object]]] = [
        ("jpeg-12mp", mid, "JPEG", {"quality": 90}),
        ("jpeg-24mp", big, "JPEG", {"quality": 90}),
        ("jpeg-24mp-exif6", big, "JPEG", {"quality": 90, "exif": exif.tobytes()}),
        ("png-12mp", mid, "PNG", {"compress_level": 6}),
        ("webp-12mp", mid, "WEBP", {"quality": 90}),
    ]
    for name, image, fmt, options in plan:
        path = folder / f"{name}.{fmt.lower()}"
        image.save(path, fmt, **options)
        files[name] = path
    return files


# -- the variants --------------------------------------------------------------------------------


def letterbox_png(image: Image.Image, target: EncoderInput) -> bytes:
    """The last step, shared: letterbox + the same PNG encoder as ours (so a faster encoder is
    not counted as a faster decode)."""
    if target.fit == "pad" and image.width != image.height:
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    return encode_png(image)


def naive(data: bytes, target: EncoderInput) -> bytes:
    image: Image.Image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    scale = target.size / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return letterbox_png(image, target)


def ours(data: bytes, target: EncoderInput) -> bytes:
    return prepare_image(data, target, LIMITS).png


_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
    (1, cv2.IMREAD_COLOR),
)


def opencv(data: bytes, target: EncoderInput) -> bytes:
    buf = np.frombuffer(data, np.uint8)
    # Header only, for the size: Pillow's lazy open (OpenCV has no header-only API).
    width, height = Image.open(io.BytesIO(data)).size
    flag = next((f for k, f in _REDUCED if max(width, height) // k >= target.size), _REDUCED[-1][1])
    bgr = cv2.imdecode(buf, flag)  # applies the EXIF orientation itself
    assert bgr is not None
    h, w = bgr.shape[:2]
    scale = target.size / max(w, h)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return letterbox_png(Image.fromarray(rgb), target)


VARIANTS: dict[str, Callable[[bytes, EncoderInput], bytes]] = {
    "naive": naive,
    "ours": ours,
    "opencv": opencv,
}


# -- measuring -----------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(variant: str, path: str, size: int, fit: str) -> None:
    """One variant, once, in this fresh process; prints the peak RSS it added (MB) as JSON."""
    cv2.setNumThreads(1)
    data = Path(path).read_bytes()
    target = EncoderInput(size, "fit" if fit == "fit" else "pad")
    warm = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(warm, "JPEG")
    VARIANTS[variant](warm.getvalue(), target)  # imports and lazy plugin set-up, not measured
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    VARIANTS[variant](data, target)
    peak = _status_kb("VmHWM") if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_delta_mb": (peak - before) / 1024, "hwm_reset": hwm_reset}))


def peak_memory(variant: str, path: Path, target: EncoderInput) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(path), str(target.size), target.fit],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_delta_mb"])


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@dataclass
class Row:
    image: str
    file_bytes: int
    variant: str
    wall_ms: float
    wall_speedup: float
    cpu_ms: float
    cpu_speedup: float
    peak_mb: float
    mad: float | None
    out: str

    def markdown(self) -> str:
        mad = "-" if self.mad is None else f"{self.mad:.2f}"
        return (
            f"| {self.image} | {self.file_bytes / 1e6:.1f} | {self.variant} | "
            f"{self.wall_ms:.1f} | {self.wall_speedup:.1f}x | "
            f"{self.cpu_ms:.1f} | {self.cpu_speedup:.1f}x | "
            f"{self.peak_mb:.1f} | {mad} | {self.out} |"
        )


def bench_file(name: str, path: Path, target: EncoderInput, repeats: int) -> list[Row]:
    data = path.read_bytes()
    variants = [v for v in VARIANTS if v != "opencv" or name.startswith("jpeg")]
    outputs = {v: VARIANTS[v](data, target) for v in variants}  # warm-up + quality reference
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            started, started_cpu = time.perf_counter(), time.process_time()
            VARIANTS[v](data, target)
            cpu[v].append((time.process_time() - started_cpu) * 1000)
            wall[v].append((time.perf_counter() - started) * 1000)
    reference = decoded(outputs["naive"])
    naive_wall, naive_cpu = statistics.median(wall["naive"]), statistics.median(cpu["naive"])
    rows = []
    for v in variants:
        out = decoded(outputs[v])
        mad = float(np.abs(out - reference).mean()) if out.shape == reference.shape else None
        wall_ms, cpu_ms = statistics.median(wall[v]), statistics.median(cpu[v])
        rows.append(
            Row(
                image=name,
                file_bytes=len(data),
                variant=v,
                wall_ms=wall_ms,
                wall_speedup=naive_wall / wall_ms,
                cpu_ms=cpu_ms,
                cpu_speedup=naive_cpu / cpu_ms,
                peak_mb=peak_memory(v, path, target),
                mad=mad,
                out=f"{out.shape[1]}x{out.shape[0]}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="336,896", help="encoder sizes (pad) to measure")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, path, size, fit = args.child
        child(variant, path, int(size), fit)
        return

    cv2.setNumThreads(1)  # Pillow decodes on one core; compare like with like
    with tempfile.TemporaryDirectory(prefix="vitrine-preprocess-bench-") as tmp:
        print("generating test images ...", flush=True)
        files = write_images(Path(tmp))
        for size in (int(s) for s in args.sizes.split(",")):
            target = EncoderInput(size, "pad")
            print(f"\n## Encoder input {size}x{size} (pad), median of {args.repeats}\n")
            print(
                "| image | file MB | variant | wall ms | vs naive | CPU ms | vs naive | "
                "peak RSS Δ MB | mean abs diff vs naive | output |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|")
            for name, path in files.items():
                for row in bench_file(name, path, target, args.repeats):
                    print(row.markdown(), flush=True)


if __name__ == "__main__":
    main()
