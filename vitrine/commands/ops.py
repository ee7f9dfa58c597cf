"""``vitrine status`` and ``vitrine config``: how the running pipeline is, and what it reads."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from vitrine.commands.options import Bucket
from vitrine.console import err, fail, out, validated


def status(
    bucket: Bucket = None,
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
    failed objects, and review quality by model and prompt version (information only).

    Exit code 0 when every server and service is up, 3 when something is down (the screen says
    what), 1 when the settings are invalid.
    """
    import time

    from rich.console import Group, RenderableType
    from rich.live import Live

    from vitrine.config import OpsSettings
    from vitrine.screen import render
    from vitrine.status import Status, colour_flags, gather, quality_lines

    settings = validated(OpsSettings)
    target = bucket or settings.bucket
    if as_json and watch:
        fail("--json and --watch do not go together", 2)

    def screen(snapshot: Status) -> RenderableType:
        """The status screen, and below it how many done cards carry a colour flag and what
        reviewers made of the cards (information, not health)."""
        flags = colour_flags(snapshot.cards)
        below = ([flags] if flags is not None else []) + quality_lines(snapshot)
        if not below:
            return render(snapshot)
        return Group(render(snapshot), *(Text(line) for line in below))

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
    lines = validated(lambda: report(service, INFRA_DIR / "dev.env"))
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
    if service in ("ingest", "sink", "inference", "review"):
        err.print(
            "note: infra/services.sh gives this service its own credentials "
            "(VITRINE_INGEST_S3_* / VITRINE_SINK_PG_* / VITRINE_INFERENCE_S3_* / VITRINE_REVIEW_*) "
            "in place of the ones shown",
            highlight=False,
        )
