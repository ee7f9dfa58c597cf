"""The status screen: a ``Status`` drawn as one terminal page with rich.

Rendering only; what is measured and how lives in vitrine.status.  Laid out to fit 100 columns
and about 45 lines, the most urgent things (what is down, where work piles up) first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vitrine.listing import duration
from vitrine.status import Status

SPARK = " ▁▂▃▄▅▆▇█"
# Columns that must stay readable when a long detail or note competes for the width.
MIN_WIDTH = {"name": 11, "state": 12, "group": 12, "status": 8, "reason": 14, "when": 8, "key": 20}
STATUSES = ("queued", "done", "rejected", "failed", "deleted")


def _state(up: bool, label: str | None = None) -> Text:
    label = label or ("up" if up else "down")
    return Text(f"{'●' if up else '✕'} {label}", style="green" if up else "bold red")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _ago(when: datetime, now: datetime) -> str:
    return _age((now - when).total_seconds()) + " ago"


def _table(title: str, *columns: str, **options: Any) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        **options,
    )
    for column in columns:
        right = column in {"pid", "handled", "lag", "committed", "members"}
        flexible = column in {"detail", "note", "partitions"}
        table.add_column(
            column,
            justify="right" if right else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=44 if flexible else None,
            min_width=MIN_WIDTH.get(column),
        )
    return table


def header(status: Status) -> Text:
    text = Text("vitrine status", style="bold")
    text.append(f"  ·  bucket {status.bucket}  ·  {status.taken_at:%Y-%m-%d %H:%M:%S} UTC  ·  ")
    if status.healthy:
        text.append("● healthy", style="bold green")
    else:
        problems = status.problems
        text.append(f"✕ {len(problems)} problem(s)", style="bold red")
        text.append("\n" + "; ".join(problems), style="red")
    return text


def processes(status: Status) -> Table:
    table = _table("processes", "name", "state", "pid", "address", "handled", "note")
    for server in status.servers:
        note = (server.error or server.notice or "")[:110]
        table.add_row(server.name, _state(server.up), "", server.address, "", note)
    for service in status.services:
        note = ""
        if service.busy is not None:
            of = f" of {service.slots}" if service.slots else ""
            note = f"{service.busy}{of} jobs in flight" if service.busy else "idle"
        if service.running is False:
            note = "not running"
        elif not service.metrics_up:
            note = service.error or "metrics endpoint silent"
        # A process on this machine: its local metrics port; one elsewhere: its endpoint.
        where = service.endpoint if service.running is None else f"metrics {service.endpoint}"
        table.add_row(
            service.name,
            _state(service.up, service.state),
            str(service.pid or "-"),
            where,
            "-" if service.handled is None else f"{service.handled:.0f}",
            note,
        )
    return table


def lag(status: Status) -> RenderableType:
    if not status.lag:
        return Text("consumer lag: unknown (Kafka unreachable)", style="red")
    table = _table("consumer lag", "group", "topic", "members", "lag", "committed", "partitions")
    table.columns[-1].header = "behind (partition:lag)"
    for group in status.lag:
        if group.error:
            table.add_row(group.group, group.topic, "", "?", "", Text(group.error, style="red"))
            continue
        busy = [f"{p}:{n}" for p, n in sorted(group.partitions.items()) if n]
        table.add_row(
            group.group,
            group.topic,
            str(group.members if group.members is not None else "?"),
            Text(str(group.total), style="bold yellow" if group.total else ""),
            str(group.committed),
            " ".join(busy) or "none behind",
        )
    return table


def counts(status: Status) -> RenderableType:
    cards = status.cards
    if cards is None:
        return Text(f"cards: unknown ({status.cards_error})", style="red")
    line = Text("cards  ", style="bold")
    for name in STATUSES:
        style = {"done": "green", "failed": "red", "rejected": "yellow"}.get(name, "")
        line.append(f"{name} ", style="dim")
        line.append(str(cards.counts.get(name, 0)), style=style)
        line.append("   ")
    line.append("oldest queued ", style="dim")
    line.append(_age(cards.oldest_queued_s))
    parts: list[RenderableType] = [line]
    if cards.reasons:
        reasons = Text("why    ", style="bold")
        for row in cards.reasons:
            reasons.append(f"{row['status']}/{row['reason'] or '?'} ", style="dim")
            reasons.append(f"{row['n']}   ")
        parts.append(reasons)
    return Group(*parts)


def throughput(status: Status) -> RenderableType:
    cards = status.cards
    if cards is None or not cards.throughput:
        return Text("")
    per_minute = [int(r["done"]) + int(r["not_done"]) for r in cards.throughput]
    peak = max(per_minute) or 1
    spark = "".join(SPARK[round(n / peak * (len(SPARK) - 1))] for n in per_minute)
    done = sum(int(r["done"]) for r in cards.throughput)
    other = sum(int(r["not_done"]) for r in cards.throughput)
    minutes = len(per_minute)
    text = Text("rate   ", style="bold")
    text.append(f"{(done + other) / minutes:.1f}/min over the last {minutes} min ")
    text.append(f"({done} done, {other} rejected/failed)   ", style="dim")
    text.append(spark or "", style="cyan")
    text.append(f"  last minute {per_minute[-1]}", style="dim")
    return text


def slowest(status: Status) -> RenderableType:
    cards = status.cards
    if cards is None or not cards.slowest:
        return Text("slowest done (last hour): none", style="dim")
    table = _table(
        "slowest done (last hour)",
        "key",
        "total",
        "fetch",
        "preproc",
        "encode",
        "generate",
        "tok/s",
        "finished",
    )
    for row in cards.slowest:
        tps = row["tokens_per_s"]
        table.add_row(
            _short(row["object_key"], 34),
            duration(row["total_ms"]),
            duration(row["fetch_ms"]),
            duration(row["preprocess_ms"]),
            duration(row["encode_ms"]),
            duration(row["generate_ms"]),
            "-" if tps is None else f"{tps:.1f}",
            _ago(row["updated_at"], status.taken_at),
        )
    return table


def failures(status: Status) -> RenderableType:
    cards = status.cards
    if cards is None or not cards.recent_failures:
        return Text("recent rejected/failed: none", style="dim")
    table = _table("recent rejected/failed", "key", "status", "reason", "when", "detail")
    for row in cards.recent_failures:
        table.add_row(
            _short(row["object_key"], 30),
            Text(row["status"], style="red" if row["status"] == "failed" else "yellow"),
            row["reason"] or "",
            _ago(row["updated_at"], status.taken_at),
            _clip((row["detail"] or "").replace("\n", " "), 44),
        )
    return table


def _short(text: str, width: int) -> str:
    """Keys keep their end (the file name), details their beginning."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(status: Status) -> RenderableType:
    return Group(
        header(status),
        processes(status),
        lag(status),
        counts(status),
        throughput(status),
        Text(""),
        slowest(status),
        failures(status),
    )
