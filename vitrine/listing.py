"""How cards are printed: a table or a panel for people, JSON lines or CSV for scripts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.taxonomy import SEPARATOR
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
    "category_path",
    "category_id",
    "attributes",
    "color_estimate",
    "color_distance",
    "colour_flag",
)
"""The columns scripts read, by name; those after ``rank`` came with category trees."""
CATEGORY_WIDTH = 40
"""The widest the table's category column gets (see column_widths)."""
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
        if cells.get("attributes") is not None:  # one JSON object in the cell, as stored
            cells["attributes"] = json.dumps(cells["attributes"], ensure_ascii=False)
        writer.writerow(cells)


def short_path(path: str, width: int) -> str:
    """A category path in ``width`` characters, the leaf kept whole where it can be:
    ``Casa e Cozinha > … > Garrafas Térmicas``, then ``… > Garrafas Térmicas``, then the leaf
    cut short."""
    if len(path) <= width:
        return path
    names = path.split(SEPARATOR)
    leaf = names[-1]
    for candidate in (SEPARATOR.join((names[0], "…", leaf)), SEPARATOR.join(("…", leaf))):
        if len(names) > 1 and len(candidate) <= width:
            return candidate
    return leaf if len(leaf) <= width else leaf[: width - 1] + "…"


def number_text(value: Any) -> str:
    """2.5 → ``2.5``, 2.0 → ``2``: a number as people write it."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, int):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def attribute_text(value: Any) -> str:
    """One attribute's value: a number with its unit (``2.5 L``), yes/no, or the text."""
    if isinstance(value, dict) and "value" in value:
        unit = value.get("unit")
        return number_text(value["value"]) + (f" {unit}" if unit else "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(attribute_text(v) for v in value)
    return number_text(value)


def colour_text(colour: str | None, checks: dict[str, Any] | None) -> Text:
    """The card's colour beside what the pixels say:
    ``cor: azul · pixels: azul-marinho (ΔE 8.1) ✓``, or a ⚠ flag with what the policy did."""
    check = (checks or {}).get("colour")
    text = Text(f"cor: {colour or '-'}")
    if not isinstance(check, dict):
        text.append("  (not checked against the pixels)", style="dim")
        return text
    if check.get("generated"):
        text.append(f" (the model wrote {check['generated']})", style="dim")
    text.append(f" · pixels: {check.get('estimate') or '?'}")
    if not check.get("checkable", True):
        text.append("  (a colour the pixels cannot check)", style="dim")
        return text
    distance = check.get("distance")
    if distance is not None:
        text.append(f" (ΔE {float(distance):.1f})")
    action, policy = check.get("action"), check.get("policy") or "flag"
    if check.get("agrees"):
        text.append(" ✓", style="bold green")
        if action == "retried":
            text.append("  (after a corrective attempt)", style="dim")
        return text
    done = {
        "flagged": "kept as written",
        "retried": "still, after a corrective attempt",
        "replaced": "replaced by the pixels' colour",
    }.get(action or "", "kept")
    text.append(f" ⚠ disagrees: {done} (policy {policy})", style="bold yellow")
    return text


def attributes_text(attributes: dict[str, Any] | None) -> Text:
    if not attributes:
        return Text("-", style="dim")
    return Text(
        "\n".join(f"{name}: {attribute_text(attributes[name])}" for name in sorted(attributes))
    )


def column_widths(rows: Sequence[dict[str, Any]], width: int) -> tuple[int, int, int, int]:
    """Widths of key, product, category and colour for a table ``width`` columns wide.

    The key is what ``vitrine show`` takes, so it is kept whole (up to 40); status and the
    update time are fixed; what is left is shared by product, category and colour, so that a
    category path is shortened by :func:`short_path` (its leaf kept) rather than cut off at the
    end by the terminal."""
    key = min(40, max(12, *(len(str(r["object_key"])) for r in rows)))
    flexible = max(40, width - key - 8 - 14 - 17)  # status, updated, edges and column gaps
    category = min(CATEGORY_WIDTH, max(16, round(flexible * 0.45)))
    colour = min(16, max(8, round(flexible * 0.18)))
    product = min(40, max(12, flexible - category - colour))
    return key, product, category, colour


def card_table(rows: Sequence[dict[str, Any]], bucket: str, width: int = 100) -> RenderableType:
    if not rows:
        return Text(f"no cards in s3://{bucket}/ match", style="dim")
    key_width, product_width, category_width, colour_width = column_widths(rows, width)
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, title=f"s3://{bucket}/", title_justify="left"
    )
    table.add_column("key", no_wrap=True, min_width=key_width)
    table.add_column("status", no_wrap=True, min_width=8)
    for column, most in (
        ("product / reason", product_width),
        ("category", category_width),
        ("colour", colour_width),
    ):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=most)
    table.add_column("updated", no_wrap=True, min_width=14)
    for row in rows:
        status = row["status"]
        what = row["product_name"] if status == "done" else (row["reason"] or "")
        path = row.get("category_path") or row["category_standard"] or ""
        colour = Text()
        if row.get("colour_flag"):  # first, so that a narrow column still shows it
            colour.append("⚠ ", style="bold yellow")
        colour.append(row["color_primary"] or "")
        table.add_row(
            row["object_key"],
            Text(status, style=STATUS_STYLE.get(status, "")),
            what or "",
            short_path(path, category_width),
            colour,
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
        parts.append(Text(f"\n{row['product_name']}", style="bold"))
        card = Table.grid(padding=(0, 2))
        card.add_column(style="dim")
        card.add_column()
        path = row.get("category_path") or row["category_standard"] or "-"
        card.add_row("category", path)
        if row.get("category_id"):
            card.add_row("category id", Text(row["category_id"], style="dim"))
        card.add_row("attributes", attributes_text(row.get("attributes")))
        card.add_row("colour", colour_text(row["color_primary"], row.get("checks")))
        parts.append(card)
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
        ("review", _review(row)),
    ):
        facts.add_row(label, "-" if value is None or value == "" else str(value))
    for event in row.get("reviews") or []:  # the desk's last decisions, newest first
        fields = f" ({', '.join(event['fields'])})" if event.get("fields") else ""
        note = f": {event['note']}" if event.get("note") else ""
        facts.add_row(
            "", f"{event['at'][:19]} {event['reviewer']} {event['decision']}{fields}{note}"
        )
    parts.append(Text(""))
    parts.append(facts)
    return Group(*parts)


def _review(row: dict[str, Any]) -> str:
    """Where the review desk stands on the card (services/review)."""
    state = row.get("review_state")
    if not state:
        return ""
    text = state
    if row.get("reviewed_by"):
        text += f" by {row['reviewed_by']} at {row['reviewed_at']}"
    if row.get("review_note"):
        text += f": {row['review_note']}"
    if row.get("edited"):
        text += " · edited by a person (the model's card is kept beside it)"
    return text


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
