"""``vitrine card``: cards for local photos, with the engine the worker loads, in this process.

The engine comes from the worker's registry (``services.inference.worker.engines``), so this
command makes cards exactly as a worker with the same settings would, and keeps as many images
in flight as the engine makes at once (``Engine.parallel``; ``card_for_bytes`` is thread-safe).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vitrine.console import err, fail, out

if TYPE_CHECKING:
    from services.inference.card.errors import CardError
    from services.inference.card.outcome import CardOutcome
    from services.inference.engine.model_files import ModelFiles
    from services.inference.settings import EngineSettings
    from services.inference.worker.engines import Engine

Handler = Annotated[
    str | None,
    typer.Option(
        help="Chat handler for --model: llava15|llava16|qwen25vl|mtmd "
        "(default: chosen from the GGUF files)."
    ),
]
ChatTemplate = Annotated[
    str | None,
    typer.Option(
        help="Chat template for a model without one (or to replace its own): gemma, chatml "
        "or a Jinja file; implies the mtmd handler unless --handler is given."
    ),
]


def card(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    preset: Annotated[str | None, typer.Option(help="Model preset (default: registry's).")] = None,
    quant: Annotated[str | None, typer.Option(help="Quantisation of the preset.")] = None,
    model: Annotated[Path | None, typer.Option(help="Text model GGUF (with --mmproj).")] = None,
    mmproj: Annotated[Path | None, typer.Option(help="Vision projector GGUF.")] = None,
    handler: Handler = None,
    chat_template: ChatTemplate = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Generate a product card for each image; the model loads once for all of them."""
    from rich.progress import Progress

    from services.inference.card.errors import CardError

    overrides = {
        "preset": preset,
        "quant": quant,
        "model_path": model,
        "mmproj_path": mmproj,
        "handler": handler,
        "chat_template": chat_template,
        "seed": seed,
    }
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        fail("no such file: " + ", ".join(missing), 2)
    engine = _load(*_settings({k: v for k, v in overrides.items() if v is not None}))
    failures = 0
    with Progress(console=err, transient=True, disable=len(images) < 2) as progress:
        task = progress.add_task("cards", total=len(images))
        for path, outcome in _cards_in_order(engine, images):
            if isinstance(outcome, CardError):
                failures += 1
                _print_failure(path, outcome, as_json)
            else:
                _print_card(path, outcome, as_json)
            progress.advance(task)
    engine.close()
    if failures:
        raise typer.Exit(1)


def _settings(overrides: dict[str, Any]) -> tuple[EngineSettings, ModelFiles]:
    """The engine settings (environment, then the options) and the model files they name; a
    setting or a file that is wrong is a usage error (exit 2), before anything loads."""
    from pydantic import ValidationError

    from services.inference.engine.model_files import ModelFilesError, resolve
    from services.inference.settings import EngineSettings

    try:
        settings = EngineSettings(**overrides)
        files = resolve(settings)
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(e["msg"] for e in exc.errors()), 2)
    except (ModelFilesError, KeyError) as exc:
        fail(str(exc).strip("'\""), 2)
    return settings, files


def _load(settings: EngineSettings, files: ModelFiles) -> Engine:
    """The engine, loaded as the worker loads it (the registry picks it by name); a load that
    fails (the model, the build, a setting, a crashing self-test) exits 2, as the worker does."""
    from services.inference.card.errors import CardError
    from services.inference.engine.model_files import ModelFilesError
    from services.inference.worker.engines import UnknownEngine, load_engine

    err.print(f"handler: {files.handler} ({files.handler_reason})", highlight=False, markup=False)
    with err.status(f"loading {files.model_id} …"):
        try:
            engine = load_engine(getattr(settings, "engine", None) or "llama", settings)
        except (CardError, ModelFilesError, UnknownEngine) as exc:
            fail(str(exc), 2)
    err.print(f"loaded {engine.model_id} in {engine.load_ms / 1000:.1f}s", highlight=False)
    return engine


def _cards_in_order(
    engine: Engine, images: list[Path]
) -> Iterator[tuple[Path, CardOutcome | CardError]]:
    """Each image with its card or its ``CardError``, in the given order, while up to
    ``engine.parallel`` images are being made at once: a batched engine fills its slots, and
    the output reads as if the images had been done one by one."""
    from concurrent.futures import ThreadPoolExecutor

    from services.inference.card.errors import CardError

    def one(path: Path) -> CardOutcome | CardError:
        try:
            return engine.card_for_bytes(path.read_bytes())
        except CardError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, getattr(engine, "parallel", 1))) as threads:
        yield from zip(images, threads.map(one, images), strict=True)


def _print_card(path: Path, outcome: CardOutcome, as_json: bool) -> None:
    record = {
        "image": str(path),
        "status": "done",
        "card": outcome.card.model_dump(),
        "model": outcome.model_id,
        "prompt_version": outcome.prompt_version,
        "attempts": outcome.attempts,
        "timings": outcome.timings.model_dump(),
        "checks": outcome.checks.model_dump(exclude_none=True) if outcome.checks else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    from vitrine.listing import attributes_text, colour_text

    c: Any = outcome.card
    t = outcome.timings
    out.rule(f"[bold]{path}")
    out.print(f"[bold]{c.product_name}[/]", highlight=False)
    out.print(f"{c.category_path}  [dim]({c.category_id})[/]", highlight=False)
    if c.attributes:
        out.print(attributes_text(c.attributes), highlight=False)
    checks = record["checks"]
    out.print(colour_text(c.color_primary, checks if isinstance(checks, dict) else None))
    out.print(c.description_long, highlight=False)
    for feature in c.features_list:
        out.print(f"  • {feature}", highlight=False)
    out.print(
        f"[dim]{outcome.model_id} · {outcome.prompt_version} · attempts {outcome.attempts} · "
        f"{t.completion_tokens} tokens at {t.tokens_per_s:.1f} tok/s[/]"
    )


def _print_failure(path: Path, exc: Exception, as_json: bool) -> None:
    reason = getattr(exc, "reason", "error")
    if as_json:
        record = {"image": str(path), "status": "failed", "reason": reason, "error": str(exc)}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    err.print(f"[bold red]{path}[/]: {reason}: {exc}", highlight=False)
