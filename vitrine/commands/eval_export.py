"""``vitrine eval export-reviewed``: a labelled set from the review desk's decisions
(``vitrine/eval/export.py`` writes it; ``vitrine/eval/labels.py`` documents the format)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from vitrine.console import err, fail, first_line, validated

SHOWN_SKIPPED = 10
"""Skipped rows named on stderr, at most (the summary counts them all)."""


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 date or date and time (without an offset, UTC); a usage error
    (exit 2) otherwise."""
    from datetime import UTC

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(
            f"--since takes an ISO 8601 date or time (2026-12-01, 2026-12-01T14:30, "
            f"2026-12-01T14:30-03:00), not {text!r}",
            2,
        )
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def export_reviewed(
    out: Annotated[
        Path,
        typer.Argument(help="The set to write (JSONL), replaced whole.", show_default=False),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            help="Only decisions made at or after this ISO date or time (UTC unless it has an "
            "offset), e.g. 2026-12-01."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Only cards this model wrote (model_id, as `vitrine show`).")
    ] = None,
    no_rejected: Annotated[
        bool, typer.Option("--no-rejected", help="Leave the rejected cards (negatives) out.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many decisions, oldest first.")
    ] = None,
    bucket: Annotated[
        str | None, typer.Option(help="Only this bucket (default: every bucket).")
    ] = None,
) -> None:
    """Write a labelled set from the review desk's decisions: approved cards as the truth
    (people's edits included), rejected cards as negatives; `vitrine eval` scores on it.

    One line per approved or rejected card that is still done, in the order they were decided;
    single photos by s3:// key, products by their folder."""
    from vitrine.cards import DatabaseUnreachable
    from vitrine.config import OpsSettings
    from vitrine.eval.export import NothingToExport
    from vitrine.eval.export import export_reviewed as export
    from vitrine.eval.labels import MAX_ITEMS

    when = parse_since(since) if since is not None else None
    if out.is_dir():
        fail(f"{out} is a directory: name the file to write", 2)
    settings = validated(OpsSettings)
    try:
        summary = export(
            settings,
            out,
            since=when,
            model=model,
            include_rejected=not no_rejected,
            limit=limit,
            bucket=bucket,
        )
    except DatabaseUnreachable as exc:
        fail(str(exc))
    except NothingToExport:
        filters = [
            f"--{name} {value}"
            for name, value in (("since", since), ("model", model), ("bucket", bucket))
            if value is not None
        ]
        fail(
            "no approved or rejected card to export"
            + (f" ({', '.join(filters)})" if filters else "")
            + f": {out} was not written"
        )
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or first_line(exc)}")
    except Exception as exc:
        fail(f"cannot read the decisions from product_cards: {first_line(exc)}")
    lines = [
        f"approved\t{summary.approved}",
        f"edited\t{summary.edited}",
    ]
    if not no_rejected:
        lines.append(f"rejected\t{summary.rejected}")
    lines.append(f"skipped\t{len(summary.skipped)}")
    lines += [f"  {reason}\t{n}" for reason, n in summary.skipped_reasons.items()]
    if summary.truncated:
        lines.append(
            f"truncated\tmore decisions match than a set holds ({MAX_ITEMS}): the first "
            f"{summary.written} were written; narrow with --since, --model or --bucket"
        )
    lines.append(f"wrote {summary.written} item(s) to {out}")
    sys.stdout.write("\n".join(line.replace("\n", " ") for line in lines) + "\n")
    for skipped in summary.skipped[:SHOWN_SKIPPED]:
        err.print(f"skipped {skipped.id}: {skipped.reason}", highlight=False, markup=False)
    if len(summary.skipped) > SHOWN_SKIPPED:
        err.print(f"(and {len(summary.skipped) - SHOWN_SKIPPED} more skipped)", highlight=False)
