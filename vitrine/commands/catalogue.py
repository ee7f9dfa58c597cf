"""``vitrine put``, ``cards`` and ``show``: photos into the bucket, cards out of product_cards."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from vitrine.commands.options import STATUSES, Bucket, Prefix
from vitrine.console import err, fail, first_line, out, validated

if TYPE_CHECKING:
    from minio import Minio

    from vitrine.cards import AttributeFilter
    from vitrine.upload import Plan, Upload

T = TypeVar("T")

# -- put ------------------------------------------------------------------------------------------


def put(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and directories (recursive).", show_default=False)
    ],
    prefix: Annotated[str, typer.Option(help="Key prefix, e.g. shop-42/.")] = "",
    bucket: Bucket = None,
) -> None:
    """Upload photos to the bucket; each becomes a card. Content types come from the bytes.

    Keys are the paths below each directory given (files given by name keep their name), after
    --prefix: `vitrine put shots/ --prefix shop-42/` uploads shots/a/b.jpg as shop-42/a/b.jpg.
    """
    from vitrine.upload import plan

    try:
        todo = plan(paths, prefix)
    except FileNotFoundError as exc:
        fail(f"no such file or directory: {exc}", 2)
    refused = key_problems(prefix, todo)
    if refused:
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        fail("; ".join(refused[:3]) + more + ": nothing was uploaded", 2)
    for skipped in todo.skipped:
        err.print(f"skipping {skipped} (not a regular file)", highlight=False)
    if not todo.uploads:
        fail("nothing to upload: no regular files in " + ", ".join(map(str, paths)))
    client, target = _bucket_client(bucket)
    started = time.monotonic()
    done = _upload_all(client, target, prefix, todo)
    seconds = time.monotonic() - started
    by_type = Counter(item.content_type for item in done)
    types = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
    err.print(
        f"uploaded {len(done)} file(s), {todo.total_bytes / 1e6:.1f} MB, to s3://{target}/"
        f"{prefix} in {seconds:.1f}s ({types})"
        + (f"; skipped {len(todo.skipped)}" if todo.skipped else ""),
        highlight=False,
        soft_wrap=True,
    )


def key_problems(prefix: str, todo: Plan) -> list[str]:
    """What breaks the key rule ingest applies (services/runtime/object_keys.py): the prefix,
    else each file whose key does (a name with a newline, ...).  Checked before the first
    upload, so a refused key never leaves half a directory in the bucket."""
    from services.runtime.object_keys import key_problem, prefix_problem

    problem = prefix_problem(prefix)
    if problem:
        return [f"--prefix: {problem}"]
    found = ((item.path, key_problem(item.key)) for item in todo.uploads)
    return [f"{str(path)!r}: {why}" for path, why in found if why]


def _bucket_client(bucket: str | None) -> tuple[Minio, str]:
    """A MinIO client and the bucket to upload to, checked before the first byte is sent."""
    from vitrine.config import OpsSettings
    from vitrine.objects import S3Unreachable, check_bucket, ops_minio

    settings = validated(OpsSettings)
    target = bucket or settings.bucket
    try:
        client = ops_minio(settings)
        check_bucket(client, target, settings.s3_endpoint)
    except S3Unreachable as exc:
        fail(str(exc))
    return client, target


def _upload_all(client: Minio, target: str, prefix: str, todo: Plan) -> list[Upload]:
    """Upload with a progress bar on stderr; a failure says which file, after how many."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from vitrine.upload import upload

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
    return done


def _s3_message(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"


# -- cards / show ---------------------------------------------------------------------------------

Statuses = Annotated[
    list[str] | None, typer.Option(help="Only this status (repeat): " + ", ".join(STATUSES))
]
Category = Annotated[
    str | None, typer.Option(help="Only this top-level category (category_standard).")
]
Subtree = Annotated[
    str | None,
    typer.Option(
        help="Only this category and those below it, by path: 'Calçados > Tênis' "
        "(names as `vitrine show` prints them)."
    ),
]
Attributes = Annotated[
    list[str] | None,
    typer.Option(
        help="Only cards with this attribute value, name=value (repeat: all must match), "
        "e.g. material=couro, sem_fio=true, capacidade=2.5 L."
    ),
]
Flagged = Annotated[
    bool, typer.Option("--flagged", help="Only cards whose colour the pixels contradict.")
]
Search = Annotated[
    str | None,
    typer.Option(help="Portuguese full-text search over name + description (web syntax)."),
]
Limit = Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")]


def cards(
    status: Statuses = None,
    category: Category = None,
    subtree: Subtree = None,
    attribute: Attributes = None,
    flagged: Flagged = False,
    search: Search = None,
    prefix: Prefix = None,
    bucket: Bucket = None,
    limit: Limit = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line.")] = False,
) -> None:
    """List cards from product_cards: newest first, or best match first with --search."""
    from vitrine.cards import CardQuery, list_cards
    from vitrine.config import OpsSettings
    from vitrine.listing import card_table, write_csv, write_json_lines

    if as_json and as_csv:
        fail("choose one of --json and --csv", 2)
    wanted, path = _filters(status or [], attribute or [], subtree)
    settings = validated(OpsSettings)
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
    found = _read_cards(lambda: list_cards(settings.pg_dsn.get_secret_value(), query))
    if as_json:
        write_json_lines(found, sys.stdout)
    elif as_csv:
        write_csv(found, sys.stdout)
    else:
        out.print(card_table(found, query.bucket, out.width))
        if len(found) == limit:
            err.print(f"(first {limit}; --limit for more)", highlight=False)


def _filters(
    status: list[str], attribute: list[str], subtree: str | None
) -> tuple[AttributeFilter, str | None]:
    """The attribute filter and the subtree path, or a usage error (exit 2) saying what is
    wrong with ``--status``, ``--attribute`` or ``--subtree``."""
    from vitrine.cards import attribute_filter, subtree_path

    unknown = set(status) - set(STATUSES)
    if unknown:
        fail(f"--status must be one of {', '.join(STATUSES)} (not {', '.join(sorted(unknown))})", 2)
    try:
        return attribute_filter(attribute), subtree_path(subtree) if subtree is not None else None
    except ValueError as exc:
        fail(str(exc), 2)


def _read_cards(read: Callable[[], T]) -> T:
    """``read()`` against product_cards, with a database problem said in one line."""
    from vitrine.cards import DatabaseUnreachable

    try:
        return read()
    except DatabaseUnreachable as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot read product_cards: {first_line(exc)}")


def show(
    key: Annotated[str, typer.Argument(help="Object key, e.g. shop-42/mug.jpg.")],
    bucket: Bucket = None,
    as_json: Annotated[bool, typer.Option("--json", help="The row as JSON.")] = False,
) -> None:
    """One card with its status and reason, timings, model, prompt version and attempts."""
    from vitrine.cards import jsonable, show_card
    from vitrine.config import OpsSettings
    from vitrine.listing import card_panel

    settings = validated(OpsSettings)
    target = bucket or settings.bucket
    row = _read_cards(lambda: show_card(settings.pg_dsn.get_secret_value(), target, key))
    if row is None:
        fail(f"no card for s3://{target}/{key} (see `vitrine cards --prefix ...`)")
    if as_json:
        sys.stdout.write(json.dumps(jsonable(row), ensure_ascii=False, indent=2) + "\n")
    else:
        out.print(card_panel(row))


def import_products(
    csv_file: Annotated[
        Path, typer.Argument(help="The catalogue CSV (header line first).", show_default=False)
    ],
    prefix: Annotated[str, typer.Option(help="Folder of the products, e.g. shop-42/.")] = "",
    bucket: Bucket = None,
    wait: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for every row's final status (0: do not)."),
    ] = 0.0,
    max_photos: Annotated[
        int, typer.Option(min=1, max=20, help="Photos a row may list (VITRINE_PRODUCT_MAX_PHOTOS).")
    ] = 6,
) -> None:
    """Import products from a CSV: each row's photos and a manifest with its facts.

    Columns: title, description, short_description, metadata, images (as the AWS
    smart-product-onboarding batch CSV) plus sku, brand, gtin and, optional, main. `images`
    lists photo paths relative to the CSV (separated by | ; or ,); `metadata` is
    `name: value; name: value` (category attributes, cor). Prints one line per row: its
    manifest's key and, with --wait, its status.
    """
    from vitrine.importer import read_rows, upload_row

    try:
        rows = read_rows(csv_file, prefix, max_photos)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        fail(f"cannot read {csv_file}: {first_line(exc)}", 2)
    client, target = _bucket_client(bucket)
    sent = []
    for row in rows:
        if row.problems:
            _line(f"row {row.number}", "refused", "; ".join(row.problems))
            continue
        try:
            upload_row(client, target, row)
        except Exception as exc:  # one row's storage problem: said, and the others go on
            _line(f"row {row.number}", "not uploaded", first_line(exc))
            continue
        sent.append(row)
        if not wait:
            _line(f"row {row.number}", row.manifest_key, "uploaded")
    err.print(
        f"{len(sent)} of {len(rows)} row(s) uploaded to s3://{target}/ (description and "
        "short_description are not facts: the card writes its own)",
        highlight=False,
        soft_wrap=True,
    )
    if wait and sent:
        _report_rows(target, sent, wait)
    if len(sent) < len(rows):
        raise typer.Exit(1)


def _report_rows(bucket: str, rows: list[Any], wait: float) -> None:
    """Each uploaded row's status once final (or as it is after ``wait`` seconds)."""
    import psycopg
    from psycopg.rows import dict_row

    from vitrine.config import OpsSettings
    from vitrine.importer import wait_for_rows

    dsn = validated(OpsSettings).pg_dsn.get_secret_value()

    def read(keys: list[str]) -> dict[str, dict[str, Any]]:
        with psycopg.connect(dsn, row_factory=dict_row) as conn:
            found = conn.execute(
                "SELECT object_key, status, reason, detail, product_name FROM product_cards "
                "WHERE bucket = %s AND object_key = ANY(%s)",
                (bucket, keys),
            ).fetchall()
        return {r["object_key"]: r for r in found}

    found = _read_cards(lambda: wait_for_rows(read, [r.manifest_key for r in rows], wait))
    for row in rows:
        got = found.get(row.manifest_key) or {"status": "not seen yet"}
        what = got.get("product_name") or got.get("reason") or ""
        _line(f"row {row.number}", row.manifest_key, str(got["status"]), str(what))


def _line(*fields: str) -> None:
    """One tab-separated line on stdout, as it is (rich would expand the tabs)."""
    sys.stdout.write("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n")
