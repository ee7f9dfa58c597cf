"""``vitrine reprocess`` and ``vitrine backfill``: put objects back on the jobs topic."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from schemas.messages import CardStatus
from vitrine.commands.options import STATUSES, Bucket, DryRun, Prefix
from vitrine.console import err, fail, out


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


def reprocess(
    everything: Annotated[bool, typer.Option("--all", help="Every object with a row.")] = False,
    status: Annotated[
        list[str] | None, typer.Option(help="Only rows with this status (repeat).")
    ] = None,
    prefix: Prefix = None,
    not_model: Annotated[
        str | None, typer.Option("--not-model", help="Only rows made by another model id.")
    ] = None,
    not_prompt: Annotated[
        str | None, typer.Option("--not-prompt", help="Only rows made with another prompt version.")
    ] = None,
    bucket: Annotated[str | None, typer.Option(help="Only this bucket.")] = None,
    dry_run: DryRun = False,
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


def backfill(bucket: Bucket = None, prefix: Prefix = None, dry_run: DryRun = False) -> None:
    """Enqueue objects already in the bucket that have no row (e.g. uploaded before the bucket
    notification was configured)."""
    from vitrine.requeue import RequeueSettings, missing_objects

    settings = RequeueSettings()
    try:
        refs = missing_objects(settings, bucket or settings.bucket, prefix)
    except Exception as exc:
        fail(f"cannot list the bucket or read product_cards: {exc}")
    _requeue(refs, settings, with_queued_row=True, dry_run=dry_run, what="backfill")
