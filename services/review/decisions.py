"""Writing a person's edits and decisions: the review columns of the row and ``card_reviews``.

Each call is one transaction that locks the row (``SELECT … FOR UPDATE``), so two reviewers on
the same card are serialised; ``expected_rev`` (the ``review_rev`` the person's page showed)
refuses a change made on a card that moved since — another reviewer's edit or a regenerated
card — instead of silently overwriting it.  An approval's ``card_reviews`` row is the outbox of
``vitrine.cards.approved`` (services/review/publisher.py).  Approvals and rejections are counted
in the review quality metrics (services/review/quality.py) once their transaction commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.card import ProductCard
from services.review import listing, quality
from services.review.accounts import User
from services.review.edits import apply_edit, changed_fields


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    """The card cannot take this change now (it moved, or it has no card)."""


LOCK = """
SELECT bucket, object_key, status, card, edited_card, review_state, review_rev, model_id,
       prompt_version, extract(epoch FROM now() - updated_at)::float8 AS decision_s
FROM product_cards WHERE bucket = %s AND object_key = %s FOR UPDATE
"""


async def _locked_row(conn: AsyncConnection[Any], bucket: str, key: str) -> dict[str, Any] | None:
    """The row, locked; None when there is none, or when the bucket or key holds what no row
    can (a NUL byte: PostgreSQL would refuse the query, not find nothing)."""
    if not listing.storable(bucket, key):
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LOCK, (bucket, key))
        return await cur.fetchone()


def effective(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card as it stands: the person's edit, else the model's."""
    card = row.get("edited_card") or row.get("card")
    return dict(card) if card else None


def _count(row: Mapping[str, Any], decision: str) -> None:
    """Count a committed decision on the locked ``row`` (as it stood when decided: an
    approval's edits applied) in the review quality metrics."""
    fields = changed_fields(row["card"], effective(row))
    quality.record(decision, row["model_id"], row["prompt_version"], fields, row.get("decision_s"))


async def _lock(
    conn: AsyncConnection[Any], bucket: str, key: str, expected_rev: int | None
) -> dict[str, Any]:
    row = await _locked_row(conn, bucket, key)
    if row is None:
        raise NotFound(f"no card for {bucket}/{key}")
    if expected_rev is not None and expected_rev != row["review_rev"]:
        raise Conflict(
            "the card changed since this page was loaded (another review, or a regenerated "
            "card): reload it and decide on what it is now"
        )
    if row["status"] != "done" or not row["card"]:
        raise Conflict(f"the object's status is {row['status']}: there is no card to review")
    return row


async def _log(
    conn: AsyncConnection[Any],
    row: Mapping[str, Any],
    user: User,
    decision: str,
    *,
    fields: Sequence[str] = (),
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    note: str | None = None,
    edited: bool = False,
) -> int:
    cur = await conn.execute(
        "INSERT INTO card_reviews (bucket, object_key, reviewer, decision, fields, before, "
        "after, note, edited) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            row["bucket"],
            row["object_key"],
            user.username,
            decision,
            list(fields),
            Jsonb(before) if before is not None else None,
            Jsonb(after) if after is not None else None,
            note,
            edited,
        ),
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def _edit_locked(
    conn: AsyncConnection[Any],
    row: dict[str, Any],
    card_type: type[ProductCard],
    user: User,
    changes: Mapping[str, Any],
) -> list[str]:
    before = effective(row) or {}
    card = apply_edit(card_type, before, changes).model_dump(mode="json")
    fields = changed_fields(before, card)
    if not fields:
        return []
    edited = None if changed_fields(row["card"], card) == [] else card
    await conn.execute(
        "UPDATE product_cards SET edited_card = %s, review_rev = review_rev + 1, "
        "review_state = 'pending', reviewed_by = NULL, reviewed_at = NULL, review_note = NULL "
        "WHERE bucket = %s AND object_key = %s",
        (Jsonb(edited) if edited else None, row["bucket"], row["object_key"]),
    )
    await _log(conn, row, user, "edit", fields=fields, before=before, after=card)
    row.update(edited_card=edited, review_rev=row["review_rev"] + 1, review_state="pending")
    return fields


async def edit(
    conn: AsyncConnection[Any],
    card_type: type[ProductCard],
    user: User,
    bucket: str,
    key: str,
    changes: Mapping[str, Any],
    expected_rev: int | None = None,
) -> list[str]:
    """Apply a person's edit; returns the fields it changed (none: nothing written).  An edit
    sends an approved or rejected card back to pending: what was decided on is not this."""
    async with conn.transaction():
        row = await _lock(conn, bucket, key, expected_rev)
        return await _edit_locked(conn, row, card_type, user, changes)


async def _approve_locked(
    conn: AsyncConnection[Any], row: dict[str, Any], user: User, note: str | None
) -> int:
    card = effective(row)
    assert card is not None
    edited_fields = changed_fields(row["card"], card)
    await conn.execute(
        "UPDATE product_cards SET review_state = 'approved', reviewed_by = %s, "
        "reviewed_at = now(), review_note = %s, approved_card = %s, review_rev = review_rev + 1 "
        "WHERE bucket = %s AND object_key = %s",
        (user.username, note, Jsonb(card), row["bucket"], row["object_key"]),
    )
    return await _log(
        conn,
        row,
        user,
        "approve",
        fields=edited_fields,
        after=card,
        note=note,
        edited=bool(edited_fields),
    )


async def approve(
    conn: AsyncConnection[Any],
    card_type: type[ProductCard],
    user: User,
    bucket: str,
    key: str,
    *,
    note: str | None = None,
    expected_rev: int | None = None,
    changes: Mapping[str, Any] | None = None,
) -> int:
    """Approve the card (after ``changes``, in the same transaction); returns the approval's
    review id, which the publisher sends."""
    async with conn.transaction():
        row = await _lock(conn, bucket, key, expected_rev)
        if changes:
            await _edit_locked(conn, row, card_type, user, changes)
        review_id = await _approve_locked(conn, row, user, note)
    _count(row, "approve")
    return review_id


async def reject(
    conn: AsyncConnection[Any],
    user: User,
    bucket: str,
    key: str,
    *,
    note: str,
    expected_rev: int | None = None,
) -> int:
    if not note.strip():
        raise ValueError("a rejection needs a note saying why")
    async with conn.transaction():
        row = await _lock(conn, bucket, key, expected_rev)
        await conn.execute(
            "UPDATE product_cards SET review_state = 'rejected', reviewed_by = %s, "
            "reviewed_at = now(), review_note = %s, review_rev = review_rev + 1 "
            "WHERE bucket = %s AND object_key = %s",
            (user.username, note.strip(), bucket, key),
        )
        review_id = await _log(conn, row, user, "reject", before=effective(row), note=note.strip())
    _count(row, "reject")
    return review_id


async def regenerate(
    conn: AsyncConnection[Any], user: User, bucket: str, key: str, *, note: str | None
) -> int:
    """Log that a person sent the card back to the workers (the caller enqueues the job).
    Any status may be regenerated, a failed one too; a deleted object may not."""
    async with conn.transaction():
        row = await _locked_row(conn, bucket, key)
        if row is None:
            raise NotFound(f"no row for {bucket}/{key}")
        if row["status"] == "deleted":
            raise Conflict("the object was deleted from the bucket")
        return await _log(conn, row, user, "regenerate", before=effective(row), note=note)


async def bulk_approve(
    conn: AsyncConnection[Any], user: User, keys: Sequence[tuple[str, str]], note: str | None
) -> list[int]:
    """Approve every listed card that is still done and pending, in one transaction; a card
    that moved meanwhile is skipped, not approved blind."""
    ids: list[int] = []
    approved: list[dict[str, Any]] = []
    async with conn.transaction():
        for bucket, key in keys:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(LOCK, (bucket, key))
                row = await cur.fetchone()
            if row is None or row["status"] != "done" or row["review_state"] != "pending":
                continue
            ids.append(await _approve_locked(conn, row, user, note))
            approved.append(row)
    for row in approved:
        _count(row, "approve")
    return ids
