"""How often a real model's card passes every rule on the first try, per rule.

    python bench/card_quality_bench.py --model gemma-3-270m-q4_k_m.gguf --mmproj mmproj-640.gguf \
        [--handler llava15] [--seeds 3] [--generated 7] [--attempts 1] \
        [--variant NAME:VITRINE_X=1,VITRINE_Y=2 ...] [--json out.json]

Each generation is one (image, seed): the bundled samples plus ``--generated`` drawn photos (a
coloured product shape on white, a different shape and colour each), times ``--seeds`` seeds.
With ``--attempts 1`` every generation is a first attempt and the report gives, per rule, the
share of first attempts that passed it (a card that does not parse fails every content rule);
with ``--attempts 3`` it gives mean attempts and seconds per final card (the retry budget the
services use).  Variants (e.g. a prompt language) are run interleaved, generation by generation,
so machine load hits them alike.  With a random projector the model is blind: the numbers
measure the grammar, the prompt and the checks, not what the model sees.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from services.inference.card.errors import GenerationError, SemanticCheckFailed  # noqa: E402
from services.inference.engine.card_engine import CardEngine  # noqa: E402
from services.inference.engine.model_files import resolve  # noqa: E402
from services.inference.settings import EngineSettings  # noqa: E402
from vitrine.eval.scoring import BASE_RULES  # noqa: E402

RULES = BASE_RULES
"""Every rule a first attempt is held to (``vitrine eval`` scores the same list)."""


def drawn_photo(i: int) -> bytes:
    """A product-like shape in a distinct colour on a white studio background."""
    r, g, b = (int(c * 255) for c in colorsys.hsv_to_rgb((i * 0.137) % 1.0, 0.75, 0.7))
    img = Image.new("RGB", (1200, 900), "white")
    d = ImageDraw.Draw(img)
    d.ellipse((350, 720, 850, 800), fill=(225, 225, 225))
    shape = i % 3
    if shape == 0:
        d.rounded_rectangle((420, 220, 780, 740), radius=60, fill=(r, g, b))
    elif shape == 1:
        d.ellipse((380, 200, 820, 740), fill=(r, g, b))
    else:
        d.polygon([(600, 180), (860, 740), (340, 740)], fill=(r, g, b))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def images(generated: int) -> list[tuple[str, bytes]]:
    found = [(p.name, p.read_bytes()) for p in sorted((ROOT / "samples").glob("*.jpg"))]
    return found + [(f"drawn-{i}", drawn_photo(i)) for i in range(generated)]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        env[key.strip().removeprefix("VITRINE_").lower()] = value
    return name, env


def load(args: argparse.Namespace, overrides: dict[str, str]) -> CardEngine:
    values: dict[str, Any] = {
        "model_path": args.model,
        "mmproj_path": args.mmproj,
        "n_threads": args.threads,
        "max_attempts": args.attempts,
        "job_timeout_s": 0,
    }
    if args.handler:
        values["handler"] = args.handler
    values.update(overrides)
    settings = EngineSettings(**values)
    return CardEngine(resolve(settings), settings)


def one(engine: CardEngine, data: bytes, seed: int) -> dict[str, Any]:
    """Generate one card; which rules its first attempt broke, attempts and seconds."""
    started = time.perf_counter()
    try:
        outcome = engine.card_for_bytes(data, seed=seed)
    except GenerationError as exc:
        first = exc.attempts[0] if exc.attempts else None
        broken = _first_broken(exc, first)
        return {
            "ok": False,
            "attempts": len(exc.attempts),
            "seconds": time.perf_counter() - started,
            "first_broken": broken,
            "error": str(exc)[:300],
        }
    broken = []
    if outcome.failures:
        broken = _first_broken(None, outcome.failures[0])
    return {
        "ok": True,
        "attempts": outcome.attempts,
        "seconds": time.perf_counter() - started,
        "first_broken": broken,
        "completion_tokens": outcome.timings.completion_tokens,
        "card": outcome.card.model_dump(),
    }


def _first_broken(exc: GenerationError | None, first: Any) -> list[str]:
    checks = getattr(first, "checks", None)
    if checks:
        return list(checks)
    if first is not None and first.reason != "semantic_check":
        return ["parses"]
    if isinstance(exc, SemanticCheckFailed) and len(exc.attempts) == 1:
        return list(exc.checks)
    # an older engine that records no checks per attempt: parse them out of the detail text
    detail = first.detail if first is not None else ""
    return [r for r in RULES if r.split("_", 1)[-1] in detail] or ["unknown"]


def report(name: str, rows: list[dict[str, Any]], attempts: int) -> dict[str, Any]:
    n = len(rows)
    broken: Counter[str] = Counter()
    for row in rows:
        names = set(row["first_broken"])
        if "parses" in names:
            names |= set(RULES)
        broken.update(names)
    rates = {rule: 1 - broken[rule] / n for rule in RULES}
    first_pass = sum(1 for r in rows if not r["first_broken"]) / n
    summary = {
        "variant": name,
        "generations": n,
        "first_attempt_pass": first_pass,
        "rule_first_attempt_pass": rates,
        "final_ok": sum(r["ok"] for r in rows) / n,
        "mean_attempts": statistics.mean(r["attempts"] for r in rows),
        "seconds_per_card": statistics.mean(r["seconds"] for r in rows),
        "max_attempts": attempts,
    }
    print(f"\n== {name}: {n} generations, max_attempts={attempts}")
    print(f"first attempt passes every rule: {first_pass:.0%}")
    for rule in RULES:
        print(f"  {rule:<24} {rates[rule]:>5.0%}")
    print(
        f"final ok {summary['final_ok']:.0%}  mean attempts {summary['mean_attempts']:.2f}  "
        f"seconds/card {summary['seconds_per_card']:.1f}"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mmproj", type=Path, required=True)
    parser.add_argument("--handler")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--generated", type=int, default=7)
    parser.add_argument("--attempts", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    variants = [parse_variant(v) for v in args.variant] or [("default", {})]
    engines = [(name, load(args, env)) for name, env in variants]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in engines}
    for label, data in images(args.generated):
        for seed in range(args.seeds):
            for name, engine in engines:
                row = one(engine, data, 1000 + seed)
                row.update(image=label, seed=1000 + seed)
                rows[name].append(row)
                mark = "ok " if not row["first_broken"] else "bad"
                print(
                    f"{name:<10} {label:<24} seed {seed} {mark} {row['seconds']:5.1f}s "
                    f"{','.join(row['first_broken'])}",
                    flush=True,
                )
    summaries = [report(name, rows[name], args.attempts) for name, _ in engines]
    if args.json:
        args.json.write_text(
            json.dumps({"summaries": summaries, "rows": rows}, ensure_ascii=False, indent=1)
        )


if __name__ == "__main__":
    main()
