"""``vitrine dlq``: what the dead-letter topic holds, and putting a (fixed) message back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vitrine.console import fail, out, validated

dlq_app = typer.Typer(
    help="Inspect the dead-letter topic and put fixed messages back.", no_args_is_help=True
)

Position = Annotated[str, typer.Argument(help="PARTITION:OFFSET, as `vitrine dlq list` shows.")]


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="Show the newest N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per message.")] = False,
) -> None:
    """What is parked: position, when, which service, from where, why."""
    from services.runtime import dead_letters as h
    from services.runtime.settings import KafkaSettings
    from vitrine.dlq import DeadLetterError, read_parked

    settings = validated(KafkaSettings)
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
def dlq_show(position: Position) -> None:
    """One parked message: all its headers and its value (JSON when it is JSON)."""
    from services.runtime.settings import KafkaSettings
    from vitrine.dlq import DeadLetterError, find

    try:
        parked = find(validated(KafkaSettings), position)
    except DeadLetterError as exc:
        fail(str(exc))
    sys.stdout.write(json.dumps(parked.to_dict(), ensure_ascii=False, indent=2) + "\n")


@dlq_app.command("replay")
def dlq_replay(
    position: Position,
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

    settings = validated(KafkaSettings)
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
