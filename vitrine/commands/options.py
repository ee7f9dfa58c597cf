"""Options that several commands take, written once so their names and help stay alike."""

from __future__ import annotations

from typing import Annotated

import typer

from schemas.messages import CardStatus

STATUSES = tuple(s.value for s in CardStatus)
"""Every status a row of product_cards can have (``--status`` of cards and reprocess)."""

Bucket = Annotated[str | None, typer.Option(help="Bucket (default: VITRINE_BUCKET).")]
Prefix = Annotated[str | None, typer.Option(help="Only keys starting with this.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="List, do not enqueue.")]
