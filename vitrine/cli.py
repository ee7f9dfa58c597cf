"""``vitrine``: the command line for people who run the pipeline.

User errors (a missing file, an offline hub, an unreachable server, an unknown key) print one
``vitrine: error: ...`` line on stderr, like git or kubectl; tracebacks are kept for bugs.
Exit codes: 0 success, 1 runtime error, 2 usage error, 3 ``vitrine status`` found the pipeline
unhealthy.  The commands only parse options and print; the work is in the modules beside this one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.messages import CardStatus

app = typer.Typer(
    help="vitrine: product photos in, validated product cards out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List and download model presets.", no_args_is_help=True)
schemas_app = typer.Typer(help="Export the JSON Schemas of the contracts.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Inspect the dead-letter topic and put fixed messages back.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
taxonomy_app = typer.Typer(
    help="The category tree the settings configure: check it, see it, export its schemas.",
    no_args_is_help=True,
)
app.add_typer(taxonomy_app, name="taxonomy")
users_app = typer.Typer(
    help="Accounts and API tokens of the review desk (run as the database owner).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")

out = Console()
err = Console(stderr=True)


def error_line(message: str) -> None:
    """``vitrine: error: MESSAGE`` on one stderr line (the message is never read as markup)."""
    line = Text("vitrine: error: ", style="bold red")
    line.append(" ".join(message.split()))
    err.print(line, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error_line(message)
    raise typer.Exit(code)


# -- models -----------------------------------------------------------------------------------


@models_app.command("list")
def models_list() -> None:
    """Show the presets, their files and whether they are downloaded."""
    from services.inference.engine.model_files import ModelFilesError, resolve
    from services.inference.engine.presets import load_registry
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
    from services.inference.engine.model_files import ModelFilesError, pull
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


def _tree(file: Path | None) -> Any:
    from schemas.taxonomy import Taxonomy, TaxonomyError
    from services.inference.settings import EngineSettings

    try:
        return Taxonomy.load(file) if file is not None else EngineSettings().tree()
    except (TaxonomyError, ValueError) as exc:
        fail(str(exc), 2)


TreeFile = Annotated[
    Path | None,
    typer.Option("--file", help="A tree file (default: what VITRINE_TAXONOMY(_FILE) configure)."),
]


@taxonomy_app.command("show")
def taxonomy_show(
    file: TreeFile = None,
    chars: Annotated[
        int | None, typer.Option(help="Outline budget (default VITRINE_TAXONOMY_PROMPT_CHARS).")
    ] = None,
    leaves: Annotated[bool, typer.Option("--leaves", help="List every leaf: id, path.")] = False,
) -> None:
    """Load the tree (errors say where), print its size and the outline the prompt shows."""
    from services.inference.settings import EngineSettings

    tree = _tree(file)
    depth = max(len(n.path) for n in tree.nodes)
    declared = sum(len(tree.own_attributes(n)) for n in tree.nodes)
    out.print(
        f"[bold]{tree.name}[/]: {len(tree.nodes)} nodes, {len(tree.leaves)} leaves, depth "
        f"{depth}, {declared} attributes declared, {len(tree.attribute_groups())} attribute "
        "groups",
        highlight=False,
    )
    budget = chars if chars is not None else EngineSettings().taxonomy_prompt_chars * 5 // 8
    out.print(f"\n[bold]outline[/] (as the prompt shows it, {budget} characters at most)")
    out.print(tree.outline(budget), highlight=False, markup=False)
    if leaves:
        out.print("\n[bold]leaves[/]")
        for leaf in tree.leaves:
            out.print(f"{leaf.id}\t{leaf.path_text}", highlight=False, markup=False)


@taxonomy_app.command("export")
def taxonomy_export(
    directory: Annotated[Path, typer.Argument(help="Writes DIR/categories/<id>.schema.json.")],
    file: TreeFile = None,
) -> None:
    """Write every leaf's attributes JSON Schema (what a consumer validates ``attributes`` by)."""
    from schemas.export import write_tree

    written = write_tree(_tree(file), directory)
    out.print(f"wrote {len(written)} category schemas under {directory / 'categories'}")


@app.command()
def prompt(
    show: Annotated[bool, typer.Option("--show", help="Print the whole prompt too.")] = False,
) -> None:
    """Print the prompt version the current settings produce (taxonomy, language, limits)."""
    from schemas.card import generation_schema
    from services.inference.settings import EngineSettings

    settings = EngineSettings()
    rendered = settings.prompt(generation_schema(settings.card_type()))
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

    Examples: `vitrine reprocess --status failed`, `vitrine reprocess --not-prompt card-v3+1a2b3c4d`
    (after changing the prompt), `vitrine reprocess --all --prefix shop-42/`.
    """
    from vitrine.requeue import RequeueSettings, Selection, select_objects

    selection = Selection(everything, tuple(status or ()), prefix, not_model, not_prompt, bucket)
    if selection.empty:
        fail("say what to reprocess: --all, --status, --prefix, --not-model or --not-prompt", 2)
    allowed = set(STATUSES) - {CardStatus.deleted.value}  # a deleted object has no photo
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


# -- the stack ------------------------------------------------------------------------------


def _stack_call(command: str, env: dict[str, str] | None = None) -> None:
    from vitrine.stack import StackMissing, run_stack

    try:
        code = run_stack(command, env)
    except StackMissing as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


@app.command()
def up(
    inference: Annotated[
        int | None,
        typer.Option(
            "--inference", min=0, help="Inference workers to run (VITRINE_INFERENCE_PROCESSES)."
        ),
    ] = None,
    services: Annotated[
        bool, typer.Option(help="Start ingest, sink and the workers after the servers.")
    ] = True,
) -> None:
    """Start the native stack (Kafka, MinIO, PostgreSQL) and the services: `infra/stack up`.

    Idempotent: what runs is left running. A model is chosen by the usual variables
    (VITRINE_PRESET, or VITRINE_MODEL_PATH + VITRINE_MMPROJ_PATH + VITRINE_HANDLER).
    """
    from vitrine.stack import up_env

    _stack_call("up", up_env(inference, services))


@app.command()
def down() -> None:
    """Stop the services (workers finish their job), then the servers: `infra/stack down`."""
    _stack_call("down")


@app.command()
def logs(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="kafka, minio, postgres, ingest, sink, review, inference-N (default: all)."
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines of history.")] = 50,
) -> None:
    """Print (or follow) the logs of servers and services from $VITRINE_STATE_DIR/logs."""
    from vitrine.config import OpsSettings
    from vitrine.stack import log_files, show_logs

    try:
        files = log_files(OpsSettings(), names or [])
        code = show_logs(files, follow, lines)
    except FileNotFoundError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


# -- status -----------------------------------------------------------------------------------


@app.command()
def status(
    bucket: Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")] = None,
    minutes: Annotated[
        int, typer.Option(min=1, max=1440, help="Throughput window in minutes.")
    ] = 10,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(min=0.5, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="The same data as JSON.")] = False,
) -> None:
    """One screen: servers, services, consumer lag, cards by status, throughput, slow and
    failed objects.

    Exit code 0 when every server and service is up, 3 when something is down (the screen says
    what), 1 when the settings are invalid.
    """
    import time

    from rich.console import Group, RenderableType
    from rich.live import Live

    from vitrine.config import OpsSettings
    from vitrine.screen import render
    from vitrine.status import Status, colour_flags, gather

    settings = _settings(OpsSettings)
    target = bucket or settings.bucket
    if as_json and watch:
        fail("--json and --watch do not go together", 2)

    def screen(snapshot: Status) -> RenderableType:
        """The status screen, and below it how many done cards carry a colour flag."""
        flags = colour_flags(snapshot.cards)
        return render(snapshot) if flags is None else Group(render(snapshot), Text(flags))

    snapshot = gather(settings, target, minutes)
    if as_json:
        sys.stdout.write(json.dumps(snapshot.to_dict(), ensure_ascii=False, indent=2) + "\n")
    elif not watch:
        out.print(screen(snapshot))
    else:
        try:
            with Live(screen(snapshot), console=out, screen=False, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    snapshot = gather(settings, target, minutes)
                    live.update(screen(snapshot), refresh=True)
        except KeyboardInterrupt:
            pass
    raise typer.Exit(0 if snapshot.healthy else 3)


def _settings(cls: Any) -> Any:
    """Settings from the environment; an invalid one is the user's error, said in one line."""
    return _validated(cls)


def _validated(make: Any) -> Any:
    """``make()``, with an invalid setting said in one line."""
    from pydantic import ValidationError

    from services.runtime.settings import SecretSettingsError

    try:
        return make()
    except ValidationError as exc:
        fail(
            "invalid settings: "
            + "; ".join(
                f"VITRINE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
            ),
        )
    except SecretSettingsError as exc:
        fail(str(exc))


# -- config -----------------------------------------------------------------------------------


@app.command()
def config(
    service: Annotated[
        str, typer.Option(help="ingest, inference, sink, review, or vitrine (these commands).")
    ] = "vitrine",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per variable.")] = False,
) -> None:
    """Every variable a service reads: its value (secrets masked) and where it came from
    (environment, file, dev.env, default)."""
    from vitrine.config import INFRA_DIR
    from vitrine.settings_report import SERVICES, report

    if service not in SERVICES:
        fail(f"--service must be one of {', '.join(SERVICES)}", 2)
    lines = _validated(lambda: report(service, INFRA_DIR / "dev.env"))
    if as_json:
        for line in lines:
            sys.stdout.write(json.dumps(line.to_dict(), ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{service}: {len(lines)} settings", title_justify="left")
    for column in ("variable", "value", "source", "meaning"):
        table.add_column(column, overflow="fold")
    for line in lines:
        table.add_row(line.variable, line.value, line.source, line.description)
    out.print(table)
    if service in ("sink", "inference", "review"):
        err.print(
            "note: infra/services.sh gives this service its own credentials "
            "(VITRINE_SINK_PG_* / VITRINE_INFERENCE_S3_* / VITRINE_REVIEW_*) in place of the "
            "ones shown",
            highlight=False,
        )


# -- dlq --------------------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show the newest N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per message.")] = False,
) -> None:
    """What is parked: position, when, which service, from where, why."""
    from services.runtime import dead_letters as h
    from services.runtime.settings import KafkaSettings
    from vitrine.dlq import DeadLetterError, read_parked

    settings = _settings(KafkaSettings)
    try:
        found = read_parked(settings, limit)
    except DeadLetterError as exc:
        fail(str(exc))
    if as_json:
        for parked in found:
            sys.stdout.write(json.dumps(parked.to_dict(), ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{settings.topic_dlq}: {len(found)} parked", title_justify="left")
    for column in ("position", "parked at", "service", "from", "reason", "key", "detail"):
        table.add_column(column, overflow="fold")
    for parked in found:
        hd = parked.headers
        source = f"{hd.get(h.SOURCE_TOPIC, '?')}/{hd.get(h.SOURCE_PARTITION, '?')}:" + hd.get(
            h.SOURCE_OFFSET, "?"
        )
        table.add_row(
            parked.position,
            hd.get(h.PARKED_AT, "-"),
            hd.get(h.SERVICE, "-"),
            source if h.SOURCE_TOPIC in hd else "-",
            hd.get(h.REASON, "-"),
            (parked.key or b"").decode(errors="replace"),
            hd.get(h.DETAIL, "")[:120],
        )
    out.print(table)


@dlq_app.command("show")
def dlq_show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `vitrine dlq list` shows.")],
) -> None:
    """One parked message: all its headers and its value (JSON when it is JSON)."""
    from services.runtime.settings import KafkaSettings
    from vitrine.dlq import DeadLetterError, find

    try:
        parked = find(_settings(KafkaSettings), position)
    except DeadLetterError as exc:
        fail(str(exc))
    sys.stdout.write(json.dumps(parked.to_dict(), ensure_ascii=False, indent=2) + "\n")


@dlq_app.command("replay")
def dlq_replay(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `vitrine dlq list` shows.")],
    value_file: Annotated[
        Path | None,
        typer.Option(
            "--value-file",
            help="The fixed message body to send instead of the parked one ('-' = stdin).",
        ),
    ] = None,
) -> None:
    """Put a parked message (or its fixed version) back on the topic it came from."""
    from services.runtime.settings import KafkaSettings
    from vitrine.dlq import DeadLetterError, find, replay

    settings = _settings(KafkaSettings)
    value = None
    if value_file is not None:
        try:
            value = sys.stdin.buffer.read() if str(value_file) == "-" else value_file.read_bytes()
        except OSError as exc:
            fail(f"cannot read {value_file}: {exc.strerror}")
    try:
        parked = find(settings, position)
        topic, partition, offset = replay(settings, parked, value)
    except DeadLetterError as exc:
        fail(str(exc))
    out.print(
        f"replayed {settings.topic_dlq} {parked.position} -> {topic} {partition}:{offset}"
        + (" (fixed value)" if value is not None else ""),
        highlight=False,
    )


# -- put --------------------------------------------------------------------------------------


@app.command()
def put(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and directories (recursive).", show_default=False)
    ],
    prefix: Annotated[str, typer.Option(help="Key prefix, e.g. shop-42/.")] = "",
    bucket: Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")] = None,
) -> None:
    """Upload photos to the bucket; each becomes a card. Content types come from the bytes.

    Keys are the paths below each directory given (files given by name keep their name), after
    --prefix: `vitrine put shots/ --prefix shop-42/` uploads shots/a/b.jpg as shop-42/a/b.jpg.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from vitrine.config import OpsSettings
    from vitrine.objects import S3Unreachable, check_bucket, ops_minio
    from vitrine.upload import Upload, plan, upload

    try:
        todo = plan(paths, prefix)
    except FileNotFoundError as exc:
        fail(f"no such file or directory: {exc}", 2)
    for skipped in todo.skipped:
        err.print(f"skipping {skipped} (not a regular file)", highlight=False)
    if not todo.uploads:
        fail("nothing to upload: no regular files in " + ", ".join(map(str, paths)))
    settings = _settings(OpsSettings)
    target = bucket or settings.bucket
    try:
        client = ops_minio(settings)
        check_bucket(client, target, settings.s3_endpoint)
    except S3Unreachable as exc:
        fail(str(exc))

    import time

    started = time.monotonic()
    done: list[Upload] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"s3://{target}/{prefix}", total=todo.total_bytes)

        def advance(item: Upload) -> None:
            done.append(item)
            progress.advance(task, item.size)

        try:
            upload(client, target, todo.uploads, advance)
        except Exception as exc:
            progress.stop()
            failed = todo.uploads[len(done)]
            fail(
                f"upload of {failed.path} failed after {len(done)} of {len(todo.uploads)} "
                f"file(s): {_s3_message(exc)}"
            )
    seconds = time.monotonic() - started
    by_type: dict[str, int] = {}
    for item in done:
        by_type[item.content_type] = by_type.get(item.content_type, 0) + 1
    types = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
    err.print(
        f"uploaded {len(done)} file(s), {todo.total_bytes / 1e6:.1f} MB, to s3://{target}/"
        f"{prefix} in {seconds:.1f}s ({types})"
        + (f"; skipped {len(todo.skipped)}" if todo.skipped else ""),
        highlight=False,
        soft_wrap=True,
    )


def _s3_message(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"


# -- cards / show -----------------------------------------------------------------------------

STATUSES = tuple(s.value for s in CardStatus)


@app.command()
def cards(
    status: Annotated[
        list[str] | None, typer.Option(help="Only this status (repeat): " + ", ".join(STATUSES))
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="Only this top-level category (category_standard).")
    ] = None,
    subtree: Annotated[
        str | None,
        typer.Option(
            help="Only this category and those below it, by path: 'Calçados > Tênis' "
            "(names as `vitrine show` prints them)."
        ),
    ] = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            help="Only cards with this attribute value, name=value (repeat: all must match), "
            "e.g. material=couro, sem_fio=true, capacidade=2.5 L."
        ),
    ] = None,
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Only cards whose colour the pixels contradict.")
    ] = False,
    search: Annotated[
        str | None,
        typer.Option(help="Portuguese full-text search over name + description (web syntax)."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only keys starting with this.")] = None,
    bucket: Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line.")] = False,
) -> None:
    """List cards from product_cards: newest first, or best match first with --search."""
    from vitrine.cards import (
        CardQuery,
        DatabaseUnreachable,
        attribute_filter,
        list_cards,
        subtree_path,
    )
    from vitrine.config import OpsSettings
    from vitrine.listing import card_table, write_csv, write_json_lines

    if as_json and as_csv:
        fail("choose one of --json and --csv", 2)
    unknown = set(status or ()) - set(STATUSES)
    if unknown:
        fail(f"--status must be one of {', '.join(STATUSES)} (not {', '.join(sorted(unknown))})", 2)
    try:
        wanted = attribute_filter(attribute or ())
        path = subtree_path(subtree) if subtree is not None else None
    except ValueError as exc:
        fail(str(exc), 2)
    settings = _settings(OpsSettings)
    query = CardQuery(
        bucket=bucket or settings.bucket,
        statuses=tuple(status or ()),
        category=category,
        subtree=path,
        attributes=None if wanted.empty else wanted,
        flagged=flagged,
        prefix=prefix,
        search=search,
        limit=limit,
    )
    try:
        found = list_cards(settings.pg_dsn.get_secret_value(), query)
    except DatabaseUnreachable as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot read product_cards: {_first_line(exc)}")
    if as_json:
        write_json_lines(found, sys.stdout)
    elif as_csv:
        write_csv(found, sys.stdout)
    else:
        out.print(card_table(found, query.bucket, out.width))
        if len(found) == limit:
            err.print(f"(first {limit}; --limit for more)", highlight=False)


@app.command()
def show(
    key: Annotated[str, typer.Argument(help="Object key, e.g. shop-42/mug.jpg.")],
    bucket: Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The row as JSON.")] = False,
) -> None:
    """One card with its status and reason, timings, model, prompt version and attempts."""
    from vitrine.cards import DatabaseUnreachable, jsonable, show_card
    from vitrine.config import OpsSettings
    from vitrine.listing import card_panel

    settings = _settings(OpsSettings)
    target = bucket or settings.bucket
    try:
        row = show_card(settings.pg_dsn.get_secret_value(), target, key)
    except DatabaseUnreachable as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot read product_cards: {_first_line(exc)}")
    if row is None:
        fail(f"no card for s3://{target}/{key} (see `vitrine cards --prefix ...`)")
    if as_json:
        sys.stdout.write(json.dumps(jsonable(row), ensure_ascii=False, indent=2) + "\n")
    else:
        out.print(card_panel(row))


# -- users ------------------------------------------------------------------------------------


def _users_dsn() -> str:
    from services.runtime.settings import PostgresSettings

    settings: Any = _settings(PostgresSettings)
    return str(settings.pg_dsn.get_secret_value())


def _password(stdin: bool, generate: bool, confirm: bool = True) -> tuple[str, bool]:
    """The password to set, and whether it was generated (then it is printed once)."""
    from vitrine.users import generate_password

    if generate:
        return generate_password(), True
    if stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt("Password", hide_input=True, confirmation_prompt=confirm), False


def _users_call(call: Any) -> Any:
    import psycopg

    from vitrine.users import UserError

    try:
        return call()
    except (UserError, ValueError) as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"cannot reach PostgreSQL: {_first_line(exc)}")
    except psycopg.errors.UndefinedTable:
        fail("the desk's tables are missing: run infra/migrate.sh (infra/stack up does)")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Lowercase letters, digits, . _ @ -.")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin.")] = "reviewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a password and print it once.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="An existing user gets this role and password.")
    ] = False,
) -> None:
    """Create an account of the review desk."""
    from vitrine import users

    password, generated = _password(password_stdin, generate)
    _users_call(lambda: users.add(_users_dsn(), username, role, password, replace=replace))
    out.print(f"user {username} ({role}) {'updated' if replace else 'added'}", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("remove")
def users_remove(username: Annotated[str, typer.Argument()]) -> None:
    """Delete an account, its sessions and its API tokens."""
    from vitrine import users

    _users_call(lambda: users.remove(_users_dsn(), username))
    out.print(f"user {username} removed", highlight=False)


@users_app.command("passwd")
def users_passwd(
    username: Annotated[str, typer.Argument()],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    generate: Annotated[bool, typer.Option("--generate")] = False,
) -> None:
    """Set a new password (the user's sessions end)."""
    from vitrine import users

    password, generated = _password(password_stdin, generate)
    _users_call(lambda: users.passwd(_users_dsn(), username, password))
    out.print(f"password of {username} changed", highlight=False)
    if generated:
        out.print(f"password: {password}", highlight=False)


@users_app.command("role")
def users_role(
    username: Annotated[str, typer.Argument()], role: Annotated[str, typer.Argument()]
) -> None:
    """Change an account's role."""
    from vitrine import users

    _users_call(lambda: users.set_role(_users_dsn(), username, role))
    out.print(f"{username} is now {role}", highlight=False)


@users_app.command("list")
def users_list() -> None:
    """Accounts, their roles, live sessions and API tokens."""
    from vitrine import users

    accounts = _users_call(lambda: users.listing(_users_dsn()))
    table = Table("user", "role", "created", "sessions", "tokens")
    for a in accounts:
        table.add_row(
            a.username, a.role, f"{a.created_at:%Y-%m-%d}", str(a.sessions), str(a.tokens)
        )
    out.print(table)


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument()],
    name: Annotated[
        str, typer.Option(help="What the token is for, e.g. the client's name.")
    ] = "api",
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Delete the token of that name.")
    ] = False,
) -> None:
    """Create an API token for /v1 (printed once; stored hashed), or revoke one."""
    from vitrine import users

    if revoke:
        _users_call(lambda: users.revoke_token(_users_dsn(), username, name))
        out.print(f"token {name} of {username} revoked", highlight=False)
        return
    token = _users_call(lambda: users.create_token(_users_dsn(), username, name))
    sys.stdout.write(token + "\n")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- card -------------------------------------------------------------------------------------


@app.command()
def card(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    preset: Annotated[str | None, typer.Option(help="Model preset (default: registry's).")] = None,
    quant: Annotated[str | None, typer.Option(help="Quantisation of the preset.")] = None,
    model: Annotated[Path | None, typer.Option(help="Text model GGUF (with --mmproj).")] = None,
    mmproj: Annotated[Path | None, typer.Option(help="Vision projector GGUF.")] = None,
    handler: Annotated[
        str | None,
        typer.Option(
            help="Chat handler for --model: llava15|llava16|qwen25vl|mtmd "
            "(default: chosen from the GGUF files)."
        ),
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option(
            help="Chat template for a model without one (or to replace its own): gemma, chatml "
            "or a Jinja file; implies the mtmd handler unless --handler is given."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Generate a product card for each image; the model loads once for all of them."""
    from pydantic import ValidationError

    from services.inference.card.errors import CardError
    from services.inference.engine.card_engine import CardEngine
    from services.inference.engine.model_files import ModelFilesError, resolve
    from services.inference.settings import EngineSettings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "preset": preset,
            "quant": quant,
            "model_path": model,
            "mmproj_path": mmproj,
            "handler": handler,
            "chat_template": chat_template,
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
    err.print(f"handler: {files.handler} ({files.handler_reason})", highlight=False, markup=False)

    with err.status(f"loading {files.model_id} …"):
        try:
            engine = CardEngine(files, settings)
        except CardError as exc:  # the model, the build or a setting: as the worker, exit 2
            fail(str(exc), 2)
    err.print(f"loaded {files.model_id} in {engine.load_ms / 1000:.1f}s", highlight=False)

    failures = 0
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import Progress

    def card(path: Path) -> Any:
        try:
            return engine.card_for_bytes(path.read_bytes())
        except CardError as exc:
            return exc

    # a batched engine makes engine.parallel cards at once; they are printed in the given order
    with (
        Progress(console=err, transient=True, disable=len(images) < 2) as progress,
        ThreadPoolExecutor(max_workers=engine.parallel) as threads,
    ):
        task = progress.add_task("cards", total=len(images))
        for path, outcome in zip(images, threads.map(card, images), strict=True):
            if isinstance(outcome, CardError):
                failures += 1
                _print_failure(path, outcome, as_json)
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
        "attempts": outcome.attempts,
        "timings": outcome.timings.model_dump(),
        "checks": outcome.checks.model_dump(exclude_none=True) if outcome.checks else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    from vitrine.listing import attributes_text, colour_text

    c = outcome.card
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


def main() -> None:
    """Run the app with our own error reporting: usage errors as one ``vitrine: error:`` line
    plus a hint (exit 2), instead of click's boxed messages."""
    from typer._click import exceptions as click  # typer's own copy of click raises these

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            out.print(exc.ctx.get_help(), highlight=False)
        sys.exit(2)
    except click.UsageError as exc:
        error_line(exc.format_message())
        command = exc.ctx.command_path if exc.ctx else "vitrine"
        err.print(f"See '{command} --help'.", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.ClickException as exc:
        error_line(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
