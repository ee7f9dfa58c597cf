"""Reading cards for the desk: the filtered, keyset-paginated list and one card with its history.

Newest first on ``(updated_at, bucket, object_key)``: the sink moves ``updated_at``, the desk
never does, so approving a page does not reorder it under the reviewer.  The cursor is the last
row's sort key, opaque to clients (URL-safe base64 of JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from schemas.messages import CardStatus, ReviewState
from schemas.storable import text_problem

CURSOR_MAX = 8192
"""Longest cursor the list reads: its own hold a bucket (63) and a key (1,024 bytes of UTF-8,
six times that as JSON escapes at worst) as base64."""


class BadQuery(ValueError):
    """A filter or cursor the list cannot use; ``field`` names the query parameter, and the
    message is the desk's own (never a parser's)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class BadCursor(BadQuery):
    def __init__(self) -> None:
        super().__init__("cursor", "not a cursor of this list: start again from the first page")


def storable(*texts: str) -> bool:
    """Whether PostgreSQL can compare these texts at all (no NUL, no lone surrogate): a bucket
    or key that cannot be stored names no row, and is answered as such, not by an error."""
    return all(text_problem(t) is None for t in texts)


@dataclass(frozen=True)
class Filters:
    """What a list shows; every field optional, all given ones must hold."""

    status: str | None = None
    review: str | None = None
    category: str | None = None  # a path: the category and its subtree
    prefix: str | None = None  # object key prefix
    model: str | None = None
    prompt: str | None = None
    q: str | None = None  # websearch syntax over name + description (Portuguese)
    flagged: bool = False  # the pixels disagree with the model's colour
    bucket: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> Filters:
        """From query parameters; unknown statuses are refused, empty values ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = (params.get(f.name) or "").strip()
            if not raw:
                continue
            problem = text_problem(raw)
            if problem:
                raise BadQuery(f.name, f"{f.name} {problem}")
            values[f.name] = (
                raw.lower() in ("1", "true", "on", "yes") if f.name == "flagged" else raw
            )
        for name, allowed in (("status", CardStatus), ("review", ReviewState)):
            if name in values and values[name] not in allowed.__members__:
                raise BadQuery(name, f"{name} must be one of {list(allowed.__members__)}")
        return cls(**values)

    def query_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value:
                out[f.name] = "1" if value is True else str(value)
        return out

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = [sql.SQL("status <> 'deleted'")]
        params: list[Any] = []
        if self.status:
            clauses.append(sql.SQL("status = %s"))
            params.append(self.status)
        if self.review:
            clauses.append(sql.SQL("review_state = %s"))
            params.append(self.review)
        if self.category:
            clauses.append(sql.SQL("(category_path = %s OR category_path LIKE %s)"))
            escaped = self.category.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [self.category, escaped + " > %"]
        if self.prefix:
            clauses.append(sql.SQL("starts_with(object_key, %s)"))
            params.append(self.prefix)
        if self.model:
            clauses.append(sql.SQL("model_id = %s"))
            params.append(self.model)
        if self.prompt:
            clauses.append(sql.SQL("prompt_version = %s"))
            params.append(self.prompt)
        if self.q:
            clauses.append(sql.SQL("search @@ websearch_to_tsquery('portuguese', %s)"))
            params.append(self.q)
        if self.flagged:
            clauses.append(sql.SQL("checks -> 'colour' ->> 'agrees' = 'false'"))
        if self.bucket:
            clauses.append(sql.SQL("bucket = %s"))
            params.append(self.bucket)
        return sql.SQL(" AND ").join(clauses), params


def encode_cursor(updated_at: datetime, bucket: str, key: str) -> str:
    raw = json.dumps([updated_at.isoformat(), bucket, key], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """The sort key a cursor holds; :class:`BadCursor` for anything that is not one of this
    list's cursors: not base64 or JSON, nested (3,000 deep is a RecursionError to ``json``),
    the wrong shape, a time that does not parse, or texts PostgreSQL cannot compare."""
    if len(cursor) > CURSOR_MAX:
        raise BadCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise BadCursor() from None
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) for v in value)):
        raise BadCursor()
    at, bucket, key = value
    if not storable(bucket, key):
        raise BadCursor()
    try:
        return datetime.fromisoformat(at), bucket, key
    except ValueError:
        raise BadCursor() from None


LIST_COLUMNS = sql.SQL(
    "bucket, object_key, etag, status, reason, review_state, reviewed_by, model_id, "
    "prompt_version, updated_at, edited_card IS NOT NULL AS edited, "
    "coalesce(edited_card ->> 'product_name', product_name) AS product_name, "
    "coalesce(edited_card ->> 'category_path', category_path) AS category_path, "
    "coalesce(edited_card ->> 'color_primary', color_primary) AS color_primary, "
    "checks -> 'colour' AS colour_check, main_photo"
)


FULL_COLUMNS = sql.SQL(
    "bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time, "
    "status, reason, detail, card, edited_card, approved_card, review_state, reviewed_by, "
    "reviewed_at, review_note, review_rev, checks, model_id, prompt_version, updated_at, facts, "
    "photo_keys, main_photo"
)


async def list_cards(
    conn: AsyncConnection[Any],
    filters: Filters,
    *,
    limit: int,
    cursor: str | None = None,
    full: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page and the cursor of the next (None on the last page); ``full``: whole rows
    (the API's), else the list page's columns."""
    where, params = filters.where()
    if cursor:
        at, bucket, key = decode_cursor(cursor)
        where = sql.SQL("{} AND (updated_at, bucket, object_key) < (%s, %s, %s)").format(where)
        params = [*params, at, bucket, key]
    query = sql.SQL(
        "SELECT {} FROM product_cards WHERE {} "
        "ORDER BY updated_at DESC, bucket DESC, object_key DESC LIMIT %s"
    ).format(FULL_COLUMNS if full else LIST_COLUMNS, where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [*params, limit + 1])
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return rows, (
        encode_cursor(last["updated_at"], last["bucket"], last["object_key"]) if last else None
    )


async def matching_keys(
    conn: AsyncConnection[Any], filters: Filters, *, limit: int
) -> list[tuple[str, str]]:
    """The (bucket, key) of every card a bulk approval of ``filters`` would approve: done and
    pending ones only, at most ``limit``."""
    where, params = filters.where()
    query = sql.SQL(
        "SELECT bucket, object_key FROM product_cards WHERE {} AND status = 'done' "
        "AND review_state = 'pending' ORDER BY updated_at DESC, bucket DESC, object_key DESC "
        "LIMIT %s"
    ).format(where)
    rows = await (await conn.execute(query, [*params, limit])).fetchall()
    return [(b, k) for b, k in rows]


CARD_QUERY = """
SELECT bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time,
       status, reason, detail, card, edited_card, approved_card, review_state, reviewed_by,
       reviewed_at, review_note, review_rev, checks, model_id, prompt_version, updated_at,
       facts, photo_keys, main_photo
FROM product_cards WHERE bucket = %s AND object_key = %s
"""

OBJECT_QUERY = """
SELECT bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time,
       facts
FROM product_cards WHERE bucket = %s AND object_key = %s
"""

HISTORY_QUERY = """
SELECT id, reviewer, at, decision, fields, note
FROM card_reviews WHERE bucket = %s AND object_key = %s ORDER BY id DESC LIMIT %s
"""


async def card_row(conn: AsyncConnection[Any], bucket: str, key: str) -> dict[str, Any] | None:
    if not storable(bucket, key):
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CARD_QUERY, (bucket, key))
        return await cur.fetchone()


async def object_row(conn: AsyncConnection[Any], bucket: str, key: str) -> dict[str, Any] | None:
    """The object's identity only (a thumbnail, a regeneration job): no card documents."""
    if not storable(bucket, key):
        return None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(OBJECT_QUERY, (bucket, key))
        return await cur.fetchone()


async def history(
    conn: AsyncConnection[Any], bucket: str, key: str, limit: int = 100
) -> list[dict[str, Any]]:
    if not storable(bucket, key):
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(HISTORY_QUERY, (bucket, key, limit))
        return await cur.fetchall()


async def facets(conn: AsyncConnection[Any]) -> dict[str, list[str]]:
    """The values the list's filter menus offer (models and prompt versions in use)."""
    rows = await (
        await conn.execute(
            "SELECT DISTINCT model_id, prompt_version FROM product_cards "
            "WHERE model_id IS NOT NULL LIMIT 200"
        )
    ).fetchall()
    return {
        "models": sorted({m for m, _ in rows if m}),
        "prompts": sorted({p for _, p in rows if p}),
    }


async def neighbours(
    conn: AsyncConnection[Any], filters: Filters, row: dict[str, Any]
) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """The cards before and after ``row`` in the list ``filters`` make (j/k on a card page)."""
    where, params = filters.where()
    here = [row["updated_at"], row["bucket"], row["object_key"]]
    newer_query = sql.SQL(
        "SELECT bucket, object_key FROM product_cards WHERE {} AND "
        "(updated_at, bucket, object_key) > (%s, %s, %s) "
        "ORDER BY updated_at ASC, bucket ASC, object_key ASC LIMIT 1"
    ).format(where)
    older_query = sql.SQL(
        "SELECT bucket, object_key FROM product_cards WHERE {} AND "
        "(updated_at, bucket, object_key) < (%s, %s, %s) "
        "ORDER BY updated_at DESC, bucket DESC, object_key DESC LIMIT 1"
    ).format(where)
    newer = await (await conn.execute(newer_query, [*params, *here])).fetchone()
    older = await (await conn.execute(older_query, [*params, *here])).fetchone()
    return (newer[0], newer[1]) if newer else None, (older[0], older[1]) if older else None
