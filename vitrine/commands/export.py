"""``vitrine export``: a channel's feed of the approved cards, on demand.

The same channel modules (``services/export/channels``) and the same query
(``services/export/source.py``) as the export stage that keeps the feeds in the exports bucket,
so what this prints is what the stage writes: the feed of every approved card the channel
takes, and on stderr each card it leaves out with the rule it breaks.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from vitrine.commands.eval_export import parse_since
from vitrine.commands.options import Bucket
from vitrine.console import err, fail, first_line, validated

if TYPE_CHECKING:
    from services.export.channels import Feed
    from services.export.listing import Listing
    from services.export.settings import ExportSettings

ChannelName = Literal["gmc", "shopify", "jsonld"]
SHOWN_LEFT_OUT = 50


def export(
    channel: Annotated[
        ChannelName,
        typer.Option(
            "--channel",
            "-c",
            help="gmc (Google Merchant Center TSV), shopify (product CSV) or jsonld "
            "(schema.org Product).",
            show_default=False,
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(help="Only cards approved at or after this (ISO 8601; naive = UTC)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the feed here (replaced whole); default stdout."),
    ] = None,
    merchant_api: Annotated[
        bool,
        typer.Option(
            "--merchant-api",
            help="gmc only: the Merchant API's products (a JSON array of ProductInput) "
            "instead of the TSV feed.",
        ),
    ] = False,
    bucket: Bucket = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when the channel leaves any card out.")
    ] = False,
) -> None:
    """Write a channel's feed of the approved cards; cards it would refuse are left out and
    listed on stderr with the rule they break."""
    import asyncio

    from services.export.channels import CHANNELS, build_feed
    from services.export.settings import ExportSettings

    if merchant_api and channel != "gmc":
        fail("--merchant-api is for --channel gmc", 2)
    when = parse_since(since) if since is not None else None
    settings = validated(ExportSettings)
    try:
        listings, skipped = asyncio.run(_load(settings, bucket or settings.bucket, when))
    except Exception as exc:
        fail(f"cannot read the approved cards from PostgreSQL: {first_line(exc)}")
    feed = build_feed(CHANNELS[channel], listings, settings)
    body = feed.extra.get("products.json", b"[]\n") if merchant_api else feed.body
    _write(body, out)
    _report(feed, skipped)
    if strict and (feed.left_out or skipped):
        raise typer.Exit(1)


async def _load(
    settings: ExportSettings, bucket: str, since: datetime | None
) -> tuple[list[Listing], list[tuple[str, str]]]:
    import psycopg

    from services.export.source import load_listings

    async with await psycopg.AsyncConnection.connect(
        settings.pg_dsn.get_secret_value(), connect_timeout=5, application_name="vitrine-export-cli"
    ) as conn:
        return await load_listings(
            conn,
            settings.card_contract().tree(),
            bucket=bucket,
            since=since,
        )


def _write(body: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    out = out.expanduser()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent or Path("."))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        fail(f"cannot write {out}: {exc.strerror or exc}")


def _report(feed: Feed, skipped: list[tuple[str, str]]) -> None:
    name = feed.channel.name
    err.print(
        f"{name}: {len(feed.listed)} card(s) in the feed, {len(feed.left_out)} left out",
        highlight=False,
        soft_wrap=True,
    )
    for entry in feed.left_out[:SHOWN_LEFT_OUT]:
        listing = entry.listing
        who = f"s3://{listing.bucket}/{listing.key}"
        if listing.sku:
            who += f" (SKU {listing.sku})"
        err.print(f"  left out {who}:", highlight=False, soft_wrap=True, markup=False)
        for problem in entry.problems:
            err.print(f"    {problem}", highlight=False, soft_wrap=True, markup=False)
    if len(feed.left_out) > SHOWN_LEFT_OUT:
        err.print(f"  … and {len(feed.left_out) - SHOWN_LEFT_OUT} more", highlight=False)
    for where, why in skipped:
        err.print(f"  unreadable approved card {where}: {why}", highlight=False, markup=False)
