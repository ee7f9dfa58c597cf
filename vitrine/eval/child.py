"""One candidate's generations, in a process of its own: ``python -m vitrine.eval.child SPEC``.

Why a process per candidate: each loads its model once, as a worker does; its peak RSS is its
own (``ru_maxrss`` cannot be reset inside a process); a crash in llama.cpp costs one candidate's
run, not the comparison; and the settings are the candidate's environment, read exactly the way
a worker reads them.  The parent (``runner.py``) writes the spec: the photos already on disk (so
every candidate reads the same bytes), the (item, seed) pairs still to do, and the results file.

Cards are made ``engine.parallel`` at a time, as the worker keeps that many jobs in flight, so
cards per minute is the engine's at its parallelism; every result is appended to the results
file as soon as it exists (one JSON line), which is what makes an interrupted run resumable.
stdout carries one JSON line per event for the parent's progress bar.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from schemas.facts import ProductFacts, facts_from_metadata
from services.inference.card.errors import CardError, EngineClosed, GenerationError
from services.inference.card.outcome import CardOutcome
from services.inference.image.pixel_colour import ColourEstimate, check_colour, estimate_colour
from services.inference.settings import EngineSettings
from services.inference.worker.engines import Engine, load_engine


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, ensure_ascii=False), flush=True)


def _first_broken(failures: list[Any]) -> list[str]:
    """The rules the first attempt broke: a check's names, or ``parses`` when it did not
    produce a card at all (a truncated or invalid document, a timeout)."""
    if not failures:
        return []
    first = failures[0]
    if first.checks:
        return list(dict.fromkeys(first.checks))
    return ["parses"] if first.reason != "semantic_check" else ["unknown"]


def _failures(failures: list[Any]) -> list[dict[str, Any]]:
    return [
        {"attempt": f.attempt, "reason": str(f.reason), "checks": list(f.checks)} for f in failures
    ]


class Run:
    """The engine, the photos' bytes and pixel colours, and the results file."""

    def __init__(self, out: TextIO, engine: Engine, settings: EngineSettings) -> None:
        self.out = out
        self.engine = engine
        self.settings = settings
        self.lock = threading.Lock()
        self.estimates: dict[str, ColourEstimate | None] = {}

    def estimate(self, photo: str) -> ColourEstimate | None:
        """The product's colour as the pixels name it, once per photo; None when unreadable."""
        with self.lock:
            if photo in self.estimates:
                return self.estimates[photo]
        try:
            with Image.open(photo) as image:
                found: ColourEstimate | None = estimate_colour(
                    image.convert("RGB"), self.settings.profile
                )
        except Exception:
            found = None
        with self.lock:
            self.estimates[photo] = found
        return found

    def one(self, item: dict[str, Any], seed: int) -> dict[str, Any]:
        photos = [Path(p).read_bytes() for p in item["photos"]]
        facts: ProductFacts | None = None
        if item.get("facts"):
            facts = facts_from_metadata(item["facts"]).facts
        started = time.perf_counter()
        record: dict[str, Any] = {"id": item["id"], "seed": seed}
        outcome: CardOutcome | None = None
        try:
            if len(photos) == 1:
                outcome = self.engine.card_for_bytes(photos[0], seed=seed, facts=facts)
            else:
                outcome = self.engine.card_for_photos(
                    photos, facts=facts, main=item["main"], seed=seed
                )
        except EngineClosed:
            raise
        except CardError as exc:
            attempts = exc.attempts if isinstance(exc, GenerationError) else []
            record.update(
                ok=False,
                reason=str(exc.reason),
                detail=str(exc)[:500],
                attempts=max(1, len(attempts)),
                failures=_failures(attempts),
                first_broken=_first_broken(attempts) or ["parses"],
            )
            refused = getattr(exc, "card", None)
            if refused is not None:  # parsed, but broke a content check: not delivered
                record["refused_card"] = refused.model_dump(mode="json")
            timings = getattr(exc, "timings", None)
            if timings is not None:
                record["timings"] = timings.model_dump(mode="json")
        except Exception as exc:
            record.update(
                ok=False,
                reason="internal_error",
                detail=f"{type(exc).__name__}: {exc}"[:500],
                attempts=1,
                failures=[],
                first_broken=["parses"],
            )
            traceback.print_exc(file=sys.stderr)
        record["seconds"] = round(time.perf_counter() - started, 3)
        if outcome is not None:
            record.update(
                ok=True,
                card=outcome.card.model_dump(mode="json"),
                attempts=outcome.attempts,
                failures=_failures(outcome.failures),
                first_broken=_first_broken(outcome.failures),
                timings=outcome.timings.model_dump(mode="json"),
                model_id=outcome.model_id,
                prompt_version=outcome.prompt_version,
            )
            estimate = self.estimate(item["photos"][item["main"]])
            if estimate is not None:
                verdict = check_colour(outcome.card.color_primary, estimate, self.settings.profile)
                record["pixels"] = {
                    "estimate": estimate.name,
                    "agrees": verdict.agrees,
                    "checkable": verdict.checkable,
                    "distance": round(verdict.distance, 2),
                }
        self.write(record)
        return record

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()
        _emit("card", id=record["id"], seed=record["seed"], ok=record["ok"])


def _file_sizes(engine: Engine) -> dict[str, int]:
    """The model and projector files' sizes: what a quantization saves on disk."""
    files = getattr(engine, "files", None)
    sizes = {}
    for path in (getattr(files, "model", None), getattr(files, "mmproj", None)):
        if path is not None and Path(path).is_file():
            sizes[Path(path).name] = Path(path).stat().st_size
    return sizes


def _die_with_parent() -> None:
    """End with the parent: an orphan would go on appending to the results file while a
    resumed run's new child writes the same cards (Linux's PR_SET_PDEATHSIG; elsewhere a
    thread watching for a new parent)."""
    parent = os.getppid()
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the call
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> int:
    _die_with_parent()
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    started = time.perf_counter()
    settings = EngineSettings()
    engine = load_engine("llama", settings)
    load_s = time.perf_counter() - started
    prompt = engine.prompt
    _emit(
        "loaded",
        load_s=round(load_s, 3),
        parallel=engine.parallel,
        model_id=engine.model_id,
        prompt_version=getattr(prompt, "version", None),
        describe=engine.describe(),
        files=_file_sizes(engine),
    )
    items = {item["id"]: item for item in spec["items"]}
    began = time.perf_counter()
    try:
        with Path(spec["results"]).open("a", encoding="utf-8") as results:
            run = Run(results, engine, settings)
            with ThreadPoolExecutor(max_workers=max(1, engine.parallel)) as pool:
                futures = [pool.submit(run.one, items[i], seed) for i, seed in spec["todo"]]
                for future in futures:
                    future.result()
    finally:
        wall = time.perf_counter() - began
        engine.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _emit("done", wall_s=round(wall, 3), cards=len(spec["todo"]), peak_rss_bytes=peak)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("VITRINE_LOG_LEVEL", "WARNING")
    sys.exit(main())
