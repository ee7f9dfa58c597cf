"""``vitrine``: the command line for people who run the pipeline.

User errors (a missing file, an offline hub, an unknown preset) print one ``error:`` line and exit
non-zero, like git or kubectl; tracebacks are kept for bugs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="vitrine: product photos in, validated product cards out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List and download model presets.", no_args_is_help=True)
schemas_app = typer.Typer(help="Export the JSON Schemas of the contracts.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(schemas_app, name="schemas")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# -- models -----------------------------------------------------------------------------------


@models_app.command("list")
def models_list() -> None:
    """Show the presets, their files and whether they are downloaded."""
    from services.inference.model_files import ModelFilesError, resolve
    from services.inference.presets import load_registry
    from services.inference.settings import EngineSettings

    registry = load_registry()
    table = Table(title="model presets", title_justify="left")
    for column in ("preset", "model", "handler", "quants", "GB", "downloaded"):
        table.add_column(column)
    for name, preset in registry.presets.items():
        have = []
        for quant in preset.quants:
            try:
                resolve(EngineSettings(preset=name, quant=quant))
                have.append(quant)
            except ModelFilesError:
                pass
        label = f"{name} (default)" if name == registry.default else name
        table.add_row(
            label,
            preset.title,
            preset.handler,
            ", ".join(preset.quants),
            f"{preset.size_gb:.1f}",
            ", ".join(have) or "-",
        )
    out.print(table)


@models_app.command("pull")
def models_pull(
    preset: Annotated[str, typer.Argument(help="Preset name (see `vitrine models list`).")],
    quant: Annotated[str | None, typer.Option(help="Quantisation, e.g. Q4_K_M.")] = None,
) -> None:
    """Download a preset's model and vision projector from the Hugging Face hub."""
    from services.inference.model_files import ModelFilesError, pull
    from services.inference.settings import EngineSettings

    settings = EngineSettings()
    try:
        files = pull(preset, quant, settings.models_dir)
    except (ModelFilesError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    out.print(f"model:  {files.model}\nmmproj: {files.mmproj}")


# -- schemas ----------------------------------------------------------------------------------


@schemas_app.command("export")
def schemas_export(
    check: Annotated[bool, typer.Option(help="Exit 1 if a committed file is stale.")] = False,
) -> None:
    """Regenerate schemas/json/*.json from the Pydantic models."""
    from schemas.export import stale_files, write_all

    if check:
        stale = stale_files()
        if stale:
            fail("stale schema files: " + ", ".join(stale) + " (run: vitrine schemas export)")
        return
    for path in write_all():
        out.print(f"wrote {path}")


@app.command()
def prompt(
    show: Annotated[bool, typer.Option("--show", help="Print the whole prompt too.")] = False,
) -> None:
    """Print the prompt version the current settings produce (taxonomy, language, limits)."""
    from schemas.card import card_model
    from services.inference.prompt import build_prompt
    from services.inference.settings import EngineSettings

    settings = EngineSettings()
    colours = settings.profile.colours if settings.colour_vocabulary == "enforce" else None
    schema = card_model(settings.categories(), colours).model_json_schema()
    rendered = build_prompt(schema, settings.profile, settings.min_description_words)
    out.print(rendered.version, highlight=False)
    if show:
        out.print(
            f"\n[bold]system[/]\n{rendered.system}\n\n[bold]user[/]\n{rendered.user}",
            highlight=False,
        )


# -- reprocess / backfill ---------------------------------------------------------------------


def _requeue(
    refs: list[Any], settings: Any, *, with_queued_row: bool, dry_run: bool, what: str
) -> None:
    from rich.progress import Progress

    from vitrine.requeue import run_enqueue

    if dry_run or not refs:
        for ref in refs:
            out.print(f"{ref.bucket}/{ref.key}", highlight=False)
        err.print(f"{len(refs)} object(s) would be {what}" if dry_run else f"nothing to {what}")
        return
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(what, total=len(refs))
        sent = run_enqueue(
            settings, refs, with_queued_row=with_queued_row, progress=lambda: progress.advance(task)
        )
    err.print(f"{what}: {sent} job(s) enqueued on {settings.topic_jobs}")


@app.command()
def reprocess(
    everything: Annotated[bool, typer.Option("--all", help="Every object with a row.")] = False,
    status: Annotated[
        list[str] | None, typer.Option(help="Only rows with this status (repeat).")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only keys starting with this.")] = None,
    not_model: Annotated[
        str | None, typer.Option("--not-model", help="Only rows made by another model id.")
    ] = None,
    not_prompt: Annotated[
        str | None, typer.Option("--not-prompt", help="Only rows made with another prompt version.")
    ] = None,
    bucket: Annotated[str | None, typer.Option(help="Only this bucket.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, do not enqueue.")] = False,
) -> None:
    """Re-generate cards: re-enqueue objects selected from product_cards.

    Examples: `vitrine reprocess --status failed`, `vitrine reprocess --not-prompt card-v2+1a2b3c4d`
    (after changing the prompt), `vitrine reprocess --all --prefix shop-42/`.
    """
    from vitrine.requeue import RequeueSettings, Selection, select_objects

    selection = Selection(everything, tuple(status or ()), prefix, not_model, not_prompt, bucket)
    if selection.empty:
        fail("say what to reprocess: --all, --status, --prefix, --not-model or --not-prompt", 2)
    allowed = {"queued", "done", "rejected", "failed"}
    if set(selection.statuses) - allowed:
        fail(f"--status must be one of {', '.join(sorted(allowed))}", 2)
    settings = RequeueSettings()
    try:
        refs = select_objects(settings, selection)
    except Exception as exc:  # connection problems are the user's to fix
        fail(f"cannot read product_cards: {exc}")
    _requeue(refs, settings, with_queued_row=False, dry_run=dry_run, what="reprocess")


@app.command()
def backfill(
    bucket: Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only keys starting with this.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, do not enqueue.")] = False,
) -> None:
    """Enqueue objects already in the bucket that have no row (e.g. uploaded before the bucket
    notification was configured)."""
    from vitrine.requeue import RequeueSettings, missing_objects

    settings = RequeueSettings()
    try:
        refs = missing_objects(settings, bucket or settings.bucket, prefix)
    except Exception as exc:
        fail(f"cannot list the bucket or read product_cards: {exc}")
    _requeue(refs, settings, with_queued_row=True, dry_run=dry_run, what="backfill")


# -- card -------------------------------------------------------------------------------------


@app.command()
def card(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    preset: Annotated[str | None, typer.Option(help="Model preset (default: registry's).")] = None,
    quant: Annotated[str | None, typer.Option(help="Quantisation of the preset.")] = None,
    model: Annotated[Path | None, typer.Option(help="Text model GGUF (with --mmproj).")] = None,
    mmproj: Annotated[Path | None, typer.Option(help="Vision projector GGUF.")] = None,
    handler: Annotated[
        str | None, typer.Option(help="Chat handler for --model: llava15|llava16|qwen25vl|mtmd.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Generate a product card for each image; the model loads once for all of them."""
    from pydantic import ValidationError

    from services.inference.engine import CardEngine
    from services.inference.errors import CardError
    from services.inference.model_files import ModelFilesError, resolve
    from services.inference.settings import EngineSettings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "preset": preset,
            "quant": quant,
            "model_path": model,
            "mmproj_path": mmproj,
            "handler": handler,
            "seed": seed,
        }.items()
        if v is not None
    }
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        fail("no such file: " + ", ".join(missing), 2)
    try:
        settings = EngineSettings(**overrides)
        files = resolve(settings)
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(e["msg"] for e in exc.errors()), 2)
    except (ModelFilesError, KeyError) as exc:
        fail(str(exc).strip("'\""), 2)

    with err.status(f"loading {files.model_id} …"):
        try:
            engine = CardEngine(files, settings)
        except CardError as exc:
            fail(str(exc))
    err.print(f"loaded {files.model_id} in {engine.load_ms / 1000:.1f}s", highlight=False)

    failures = 0
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=len(images) < 2) as progress:
        task = progress.add_task("cards", total=len(images))
        for path in images:
            try:
                outcome = engine.card_for_bytes(path.read_bytes())
            except CardError as exc:
                failures += 1
                _print_failure(path, exc, as_json)
            else:
                _print_card(path, outcome, as_json)
            progress.advance(task)
    engine.close()
    if failures:
        raise typer.Exit(1)


def _print_card(path: Path, outcome: Any, as_json: bool) -> None:
    record = {
        "image": str(path),
        "status": "done",
        "card": outcome.card.model_dump(),
        "model": outcome.model_id,
        "prompt_version": outcome.prompt_version,
        "timings": outcome.timings_dict(),
    }
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    c = outcome.card
    t = outcome.timings_dict()
    out.rule(f"[bold]{path}")
    out.print(f"[bold]{c.product_name}[/]  ·  {c.category_standard}  ·  {c.color_primary}")
    out.print(c.description_long, highlight=False)
    for feature in c.features_list:
        out.print(f"  • {feature}", highlight=False)
    out.print(
        f"[dim]{outcome.model_id} · {outcome.prompt_version} · attempts {t['attempts']} · "
        f"{t['completion_tokens']} tokens at {t['tokens_per_s']} tok/s[/]"
    )


def _print_failure(path: Path, exc: Exception, as_json: bool) -> None:
    reason = getattr(exc, "reason", "error")
    if as_json:
        record = {"image": str(path), "status": "failed", "reason": reason, "error": str(exc)}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    err.print(f"[bold red]{path}[/]: {reason}: {exc}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
