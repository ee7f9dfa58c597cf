"""Long-run memory benchmark: N cards in a row from one loaded engine (tiny model), RSS sampled.

    python bench/memory_bench.py --cards 500 --handler llava15|mtmd|both
                                 [--max-tokens 64] [--threads N] [--grammar-backend B]
                                 [--recycle-every 0] [--trim]

One process loads the engine once (tiny GGUF pair from tests/support/tiny_models.py, as the tests
do), then generates ``--cards`` cards in a row through ``card_for_bytes`` — exactly the worker's
path: preprocess, image encode (mtmd bitmap + chunks), prompt eval, grammar-constrained generation,
parse — cycling through 100 different photos (photographic-like content, 320-1600 px wide, varied
aspect ratios, JPEG / PNG / WebP; written to disk once and read back per card, as the worker
fetches an object).  ``--max-tokens 64`` cannot hold a card, so every card ends as a truncated
attempt: the point is the number of image encodes + generations, not the text.

RSS (psutil) is sampled every 25 cards.  Reported: warm-up RSS (after card 20), final RSS, growth,
growth over whole cycles of the photo pool (the same photo just processed at both ends: RSS swings
with the recent photos' sizes, see ``Result.cycle_growth``), and the least-squares slope over the
post-warm-up samples (MB per 100 cards).  Also sampled: the number of live Python objects (a
Python-side leak shows there) and, with ``--trim``, RSS right after glibc's ``malloc_trim(0)``
(freed-but-cached heap returned: what is left is memory still in use).  ``--recycle-every N``
closes and reloads the engine every N cards (the recycle-on-schedule remedy, for before/after
numbers should a leak appear).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.card.errors import GenerationError  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from tests.support.tiny_models import TinyPair, generate  # noqa: E402

PAIR_FOR_HANDLER = {"llava15": "llava", "mtmd": "mtmd"}
WARMUP = 20
EVERY = 25
POOL = 100


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / (1024 * 1024)


def malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load(pair: TinyPair, max_tokens: int, threads: int, grammar: str | None) -> CardEngine:
    extra: dict[str, object] = {} if grammar is None else {"grammar_backend": grammar}
    settings = EngineSettings(
        model_path=pair.model,
        mmproj_path=pair.mmproj,
        handler=pair.handler,
        n_ctx=4096,
        n_threads=threads,
        max_tokens=max_tokens,
        max_attempts=1,
        **extra,  # type: ignore[arg-type]
    )
    return CardEngine(resolve(settings), settings)


def varied_image(i: int) -> bytes:
    """Photo ``i``: its own content, size, aspect ratio and format."""
    rng = np.random.default_rng(i)
    w = int(rng.integers(320, 1600))
    h = int(w * rng.choice([0.5, 0.75, 1.0, 4 / 3, 1.5]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.integers(40, 220, 3)
    arr = np.empty((h, w, 3), np.float32)
    for c in range(3):
        arr[..., c] = base[c] + 30 * np.sin(xx / rng.uniform(20, 200)) + 0.05 * (yy - h / 2)
    arr += rng.normal(0, 8, (h, w, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        box = (x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    fmt = ("JPEG", "JPEG", "PNG", "WEBP")[i % 4]
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt != "PNG" else {"compress_level": 1}))
    return buf.getvalue()


def load_settings_backend(grammar: str | None) -> str:
    return grammar or str(EngineSettings.model_fields["grammar_backend"].default)


def write_photos(folder: Path) -> list[Path]:
    """The pool of ``POOL`` different photos, written once (generating them in the measured
    process would add numpy/Pillow temporaries of the generator, not of the worker, to RSS)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(POOL):
        path = folder / f"photo-{i:03d}.bin"
        if not path.exists():
            path.write_bytes(varied_image(i))
        paths.append(path)
    return paths


@dataclass
class Sample:
    card: int
    rss_mb: float
    trimmed_mb: float | None
    py_objects: int


@dataclass
class Result:
    handler: str
    cards: int
    after_load_mb: float
    samples: list[Sample]
    card_s: list[float]

    @property
    def warm(self) -> Sample:
        return next(s for s in self.samples if s.card >= WARMUP)

    @property
    def final(self) -> Sample:
        return self.samples[-1]

    @property
    def growth_mb(self) -> float:
        return self.final.rss_mb - self.warm.rss_mb

    @property
    def cycle_growth(self) -> tuple[int, int, float] | None:
        """(from card, to card, MB): RSS change over whole cycles of the photo pool.

        Cards cycle through ``POOL`` photos, and RSS after a card depends on the sizes of the
        last few photos (glibc keeps freed Pillow buffers mapped), so RSS swings with the cycle;
        comparing the same point of the cycle removes the swing and leaves any real growth.
        """
        by_card = {s.card: s.rss_mb for s in self.samples}
        cycles = (self.final.card - WARMUP) // POOL
        start = self.final.card - cycles * POOL
        if cycles < 1 or start not in by_card:
            return None
        return start, self.final.card, self.final.rss_mb - by_card[start]

    @property
    def slope_mb_per_100(self) -> float:
        """Least-squares slope of RSS over the post-warm-up samples."""
        post = [s for s in self.samples if s.card >= WARMUP]
        x = np.array([s.card for s in post], float)
        y = np.array([s.rss_mb for s in post], float)
        return float(np.polyfit(x, y, 1)[0] * 100)

    def markdown(self) -> str:
        cycle = self.cycle_growth
        cycle_text = "-" if cycle is None else f"{cycle[2]:+.1f} ({cycle[0]} → {cycle[1]})"
        return (
            f"| {self.handler} | {self.cards} | {self.after_load_mb:.1f} | "
            f"{self.warm.rss_mb:.1f} | {self.final.rss_mb:.1f} | {self.growth_mb:+.1f} | "
            f"{cycle_text} | {self.slope_mb_per_100:+.2f} | "
            f"{max(s.rss_mb for s in self.samples):.1f} | {statistics.median(self.card_s):.2f} |"
        )


def run(handler: str, args: argparse.Namespace) -> Result:
    pair = generate(args.models)[PAIR_FOR_HANDLER[handler]]
    photos = write_photos(args.models / "photos")
    engine = load(pair, args.max_tokens, args.threads, args.grammar_backend)
    after_load = rss_mb()
    samples: list[Sample] = []
    card_s: list[float] = []
    started = time.perf_counter()
    for i in range(1, args.cards + 1):
        if args.recycle_every and i > 1 and (i - 1) % args.recycle_every == 0:
            engine.close()
            del engine
            gc.collect()
            engine = load(pair, args.max_tokens, args.threads, args.grammar_backend)
        photo = photos[i % len(photos)]
        data = photo.read_bytes()  # as the worker fetches the object
        card_started = time.perf_counter()
        with contextlib.suppress(GenerationError):  # 64 tokens cannot hold a card: truncated
            engine.card_for_bytes(data, seed=i)
        card_s.append(time.perf_counter() - card_started)
        if card_s[-1] > 5:
            print(f"  [{handler}] card {i} ({photo.name}) took {card_s[-1]:.1f}s", flush=True)
        if i in (WARMUP, args.cards) or i % EVERY == 0:
            gc.collect()
            rss = rss_mb()
            trimmed = None
            if args.trim:
                malloc_trim()
                trimmed = rss_mb()
            objects = len(gc.get_objects()) - len(samples)  # not counting our own samples
            samples.append(Sample(i, rss, trimmed, objects))
            extra = f", after malloc_trim {trimmed:.1f} MB" if trimmed is not None else ""
            print(
                f"  [{handler}] card {i:4d}: RSS {rss:.1f} MB{extra}, "
                f"{samples[-1].py_objects} Python objects, {time.perf_counter() - started:.0f}s",
                flush=True,
            )
    engine.close()
    return Result(handler, args.cards, after_load, samples, card_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=500)
    parser.add_argument("--handler", choices=["llava15", "mtmd", "both"], default="both")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--recycle-every", type=int, default=0, help="reload engine (0 = never)")
    parser.add_argument("--trim", action="store_true", help="also sample RSS after malloc_trim")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama threads")
    parser.add_argument(
        "--grammar-backend", default=None, help="engine's grammar backend (default: settings')"
    )
    parser.add_argument("--models", type=Path, default=Path("/tmp/vitrine-bench-models"))
    args = parser.parse_args()
    if args.cards < WARMUP + EVERY:
        parser.error(f"--cards must be at least {WARMUP + EVERY}")
    handlers = ["llava15", "mtmd"] if args.handler == "both" else [args.handler]

    print(
        f"cards: {args.cards}, max_tokens: {args.max_tokens} (1 attempt), "
        f"recycle every: {args.recycle_every or 'never'}, threads: {args.threads}, "
        f"grammar backend: {load_settings_backend(args.grammar_backend)}, "
        f"cores: {os.cpu_count()}"
    )
    results = [run(h, args) for h in handlers]

    print(f"\n## RSS over {args.cards} cards in one process (sampled every {EVERY})\n")
    print(
        "| handler | cards | after load MB | warm-up (card 20) MB | final MB | growth MB | "
        f"growth over whole {POOL}-photo cycles MB | slope MB/100 cards | peak MB | "
        "median s/card |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.markdown())
    for r in results:
        print(f"\n### {r.handler}: samples\n")
        print("| after card | RSS MB | RSS after malloc_trim MB | live Python objects |")
        print("|---|---|---|---|")
        for smp in r.samples:
            t = "-" if smp.trimmed_mb is None else f"{smp.trimmed_mb:.1f}"
            print(f"| {smp.card} | {smp.rss_mb:.1f} | {t} | {smp.py_objects} |")


if __name__ == "__main__":
    main()
