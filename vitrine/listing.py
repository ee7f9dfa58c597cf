"""How cards are printed: a table or a panel for people, JSON lines or CSV for scripts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vitrine.cards import jsonable

CSV_COLUMNS = (
    "object_key",
    "status",
    "reason",
    "product_name",
    "category_standard",
    "color_primary",
    "description_long",
    "features_list",
    "model_id",
    "prompt_version",
    "attempts",
    "total_ms",
    "updated_at",
    "rank",
)
STATUS_STYLE = {"done": "green", "failed": "red", "rejected": "yellow", "queued": "cyan"}


def duration(ms: Any) -> str:
    """Milliseconds for people: 12ms, 2.85s, 3.5m."""
    if ms is None:
        return "-"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.2f}s" if ms < 60_000 else f"{ms / 60_000:.1f}m"


def write_json_lines(rows: Sequence[dict[str, Any]], stream: TextIO) -> None:
    for row in rows:
        stream.write(json.dumps(jsonable(row), ensure_ascii=False) + "\n")


def write_csv(rows: Sequence[dict[str, Any]], stream: TextIO) -> None:
    """One line per card; the three features joined with `` | `` in one cell."""
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = jsonable(row)
        if isinstance(cells.get("features_list"), list):
            cells["features_list"] = " | ".join(map(str, cells["features_list"]))
        writer.writerow(cells)


def card_table(rows: Sequence[dict[str, Any]], bucket: str) -> RenderableType:
    if not rows:
        return Text(f"no cards in s3://{bucket}/ match", style="dim")
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, title=f"s3://{bucket}/", title_justify="left"
    )
    table.add_column("key", no_wrap=True, min_width=12)
    table.add_column("status", no_wrap=True, min_width=8)
    for column, width in (("product / reason", 30), ("category", 18), ("colour", 10)):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=width)
    table.add_column("updated", no_wrap=True, min_width=14)
    for row in rows:
        status = row["status"]
        what = row["product_name"] if status == "done" else (row["reason"] or "")
        table.add_row(
            row["object_key"],
            Text(status, style=STATUS_STYLE.get(status, "")),
            what or "",
            row["category_standard"] or "",
            row["color_primary"] or "",
            f"{row['updated_at']:%m-%d %H:%M:%S}",
        )
    return table


def card_panel(row: dict[str, Any]) -> RenderableType:
    status = row["status"]
    head = Text(f"s3://{row['bucket']}/{row['object_key']}  ", style="bold")
    head.append(status, style=f"bold {STATUS_STYLE.get(status, '')}")
    if row["reason"]:
        head.append(f"  {row['reason']}", style="bold")
    parts: list[RenderableType] = [head]
    if row["detail"]:
        parts.append(Text(row["detail"], style="dim"))
    if status == "done":
        parts.append(
            Text(
                f"\n{row['product_name']}  ·  {row['category_standard']}  ·  {row['color_primary']}"
            )
        )
        parts.append(Text(row["description_long"] or ""))
        parts.extend(Text(f"  • {f}") for f in row["features_list"] or [])
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    timings = row["timings"] or {}
    for label, value in (
        ("model", row["model_id"]),
        ("prompt", row["prompt_version"]),
        ("attempts", row["attempts"]),
        ("results applied", row["results_applied"]),
        (
            "object",
            f"{row['content_type'] or '?'}, {row['size_bytes'] or '?'} bytes, etag "
            f"{row['etag'] or '-'}",
        ),
        ("uploaded", row["event_time"]),
        ("updated", row["updated_at"]),
        ("timings", _timings(timings)),
        ("job / trace", f"{row['job_id'] or '-'} / {row['trace_id'] or '-'}"),
    ):
        facts.add_row(label, "-" if value is None or value == "" else str(value))
    parts.append(Text(""))
    parts.append(facts)
    return Group(*parts)


def _timings(t: dict[str, Any]) -> str:
    if not t:
        return ""
    stages = ("fetch_ms", "preprocess_ms", "image_encode_ms", "prompt_eval_ms", "generate_ms")
    text = " · ".join(f"{s[:-3]} {duration(t[s])}" for s in stages if t.get(s))
    total = t.get("total_ms")
    if total:
        text = f"total {duration(total)}: {text}"
    if t.get("completion_tokens"):
        text += f" · {t['completion_tokens']} tokens at {t.get('tokens_per_s', 0):.1f} tok/s"
    return text
