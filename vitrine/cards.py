"""Reading ``product_cards`` for operators: card listings, one card, and the status figures.

Every statement is a string literal with bound parameters (tests/stack/test_security.py proves it
from the AST): optional filters are written ``(%(x)s IS NULL OR ...)`` rather than spliced in, so
the text never depends on input.  PostgreSQL folds the NULL tests away when it plans with the
values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.taxonomy import ATTRIBUTE_NAME, SEPARATOR

CONNECT_TIMEOUT_S = 3

# A subtree is its root path and everything below it: starts_with() takes the path as it is, so
# a name holding LIKE's metacharacters (_ %) cannot widen the match, and the planner still turns
# it into a range on product_cards_category_path_idx (text_pattern_ops).  Attributes: one JSONB
# containment of the values that can only be text (product_cards_attributes_idx serves it), and,
# for a value that could also be a number or a boolean, any of its readings (see attribute_filter).
LIST_CARDS = """
SELECT object_key, status, reason, product_name, category_standard, color_primary,
       description_long, features_list, model_id, prompt_version, attempts,
       (timings->>'total_ms')::float8 AS total_ms, updated_at,
       CASE WHEN %(search)s::text IS NULL THEN NULL
            ELSE ts_rank(search, websearch_to_tsquery('portuguese', %(search)s)) END AS rank,
       coalesce(category_path, category_standard) AS category_path, category_id, attributes,
       color_estimate, color_distance, checks,
       coalesce(checks->'colour'->>'agrees' = 'false', false) AS colour_flag
FROM product_cards
WHERE bucket = %(bucket)s
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(category)s::text IS NULL OR lower(category_standard) = lower(%(category)s))
  AND (%(subtree)s::text IS NULL OR category_path = %(subtree)s
       OR starts_with(category_path, %(subtree)s::text || ' > '))
  AND (%(attributes)s::jsonb IS NULL OR attributes @> %(attributes)s::jsonb)
  AND (%(either)s::jsonb IS NULL OR NOT EXISTS (
         SELECT 1 FROM jsonb_each(%(either)s::jsonb) AS wanted(name, readings)
         WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(wanted.readings) AS r(doc)
                           WHERE product_cards.attributes @> r.doc)))
  AND (NOT %(flagged)s OR (checks IS NOT NULL AND checks->'colour'->>'agrees' = 'false'))
  AND (%(prefix)s::text IS NULL OR starts_with(object_key, %(prefix)s))
  AND (%(search)s::text IS NULL
       OR search @@ websearch_to_tsquery('portuguese', %(search)s))
ORDER BY rank DESC NULLS LAST, updated_at DESC, object_key
LIMIT %(limit)s
"""

SHOW_CARD = """
SELECT bucket, object_key, status, reason, detail, product_name, category_standard,
       color_primary, description_long, features_list, model_id, prompt_version, attempts,
       results_applied, timings, content_type, size_bytes, etag, version_id, event_time,
       produced_at, created_at, updated_at, job_id, trace_id,
       coalesce(category_path, category_standard) AS category_path, category_id, attributes,
       color_estimate, color_distance, checks,
       review_state, reviewed_by, reviewed_at, review_note, edited_card IS NOT NULL AS edited,
       (SELECT coalesce(jsonb_agg(e ORDER BY e.id DESC), '[]'::jsonb)
        FROM (SELECT id, reviewer, at, decision, fields, note FROM card_reviews r
              WHERE r.bucket = p.bucket AND r.object_key = p.object_key
              ORDER BY id DESC LIMIT 5) e) AS reviews
FROM product_cards p
WHERE bucket = %s AND object_key = %s
"""

COUNT_BY_STATUS = """
SELECT status, count(*) AS n FROM product_cards WHERE bucket = %s GROUP BY status ORDER BY status
"""

COUNT_BY_REASON = """
SELECT status, coalesce(reason, '') AS reason, count(*) AS n
FROM product_cards
WHERE bucket = %s AND status IN ('rejected', 'failed')
GROUP BY status, reason
ORDER BY n DESC, status, reason
"""

# Rows that reached a final status (done, rejected, failed) per minute, from updated_at: a row
# counts in the minute of its latest change, so a reprocessed card moves to its new minute.
THROUGHPUT = """
SELECT m.minute,
       count(p.object_key) FILTER (WHERE p.status = 'done') AS done,
       count(p.object_key) FILTER (WHERE p.status IN ('rejected', 'failed')) AS not_done
FROM generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN product_cards p
       ON p.bucket = %(bucket)s
      AND p.status IN ('done', 'rejected', 'failed')
      AND p.updated_at >= m.minute AND p.updated_at < m.minute + interval '1 minute'
GROUP BY m.minute
ORDER BY m.minute
"""

SLOWEST_DONE = """
SELECT object_key, updated_at, model_id,
       (timings->>'total_ms')::float8 AS total_ms,
       (timings->>'fetch_ms')::float8 AS fetch_ms,
       (timings->>'preprocess_ms')::float8 AS preprocess_ms,
       (timings->>'image_encode_ms')::float8 AS encode_ms,
       (timings->>'generate_ms')::float8 AS generate_ms,
       (timings->>'tokens_per_s')::float8 AS tokens_per_s
FROM product_cards
WHERE bucket = %(bucket)s AND status = 'done'
  AND updated_at > now() - make_interval(mins => %(window)s)
ORDER BY total_ms DESC NULLS LAST
LIMIT %(limit)s
"""

RECENT_FAILURES = """
SELECT object_key, status, reason, detail, updated_at
FROM product_cards
WHERE bucket = %(bucket)s AND status IN ('rejected', 'failed')
ORDER BY updated_at DESC, object_key
LIMIT %(limit)s
"""

# Done cards whose colour the pixels contradict (checks.colour.agrees false, whatever the
# policy then did), of the done cards that carry a colour check, of all done cards.
COLOUR_FLAGS = """
SELECT count(*) FILTER (WHERE checks->'colour'->>'agrees' = 'false') AS flagged,
       count(*) FILTER (WHERE checks->'colour' IS NOT NULL) AS checked,
       count(*) AS done
FROM product_cards
WHERE bucket = %s AND status = 'done'
"""

OLDEST_QUEUED = """
SELECT extract(epoch FROM now() - min(updated_at))::float8 AS age_s
FROM product_cards
WHERE bucket = %s AND status = 'queued'
"""


class DatabaseUnreachable(ConnectionError):
    """PostgreSQL refused the connection or did not answer (the message says which)."""


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    try:
        return psycopg.connect(
            dsn,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="vitrine-cli",
        )
    except psycopg.OperationalError as exc:
        # The first line names host, port and cause; later lines repeat it per address.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL: {first}") from None
    except psycopg.ProgrammingError:  # its message may quote the DSN, password included
        raise DatabaseUnreachable(
            "cannot connect to PostgreSQL: VITRINE_PG_DSN is not a valid connection string"
        ) from None


def subtree_path(text: str) -> str:
    """A category path as the rows hold it: ``Calçados>Tênis `` → ``Calçados > Tênis``."""
    names = [" ".join(part.split()) for part in text.split(">")]
    if not all(names):
        raise ValueError(f"not a category path: {text!r} (names joined by ' > ')")
    return SEPARATOR.join(names)


NUMBER = re.compile(r"^([+-]?\d+(?:[.,]\d+)?)\s*([^\s\d]\S*)?$")


@dataclass(frozen=True)
class AttributeFilter:
    """``--attribute name=value`` filters as the listing's two parameters.

    A value is text, unless it also reads as a boolean (``true``/``false``) or a number with an
    optional unit (``2.5``, ``2,5 L``: a number attribute is ``{"value": 2.5, "unit": "L"}``, and
    without a unit any unit matches).  Text-only values go into one containment document
    (``certain``: the GIN index serves it); a value with several readings matches any of them
    (``either``), so ``idade=2 anos`` finds the enum value as well as a number in years."""

    certain: dict[str, Any]
    either: dict[str, list[dict[str, Any]]]

    @property
    def empty(self) -> bool:
        return not self.certain and not self.either


def attribute_filter(specs: Iterable[str]) -> AttributeFilter:
    """``name=value`` strings → an :class:`AttributeFilter`; ``ValueError`` says what is wrong."""
    certain: dict[str, Any] = {}
    either: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name, value = name.strip(), " ".join(value.split())
        if not sep or not value:
            raise ValueError(f"--attribute takes name=value, not {spec!r}")
        if not ATTRIBUTE_NAME.match(name):
            raise ValueError(
                f"--attribute: {name!r} is not an attribute name (lowercase snake_case, "
                "as `vitrine show` prints them)"
            )
        if name in certain or name in either:
            raise ValueError(f"--attribute {name} is given twice (a card has one value)")
        readings = _readings(value)
        if len(readings) == 1:
            certain[name] = value
        else:
            either[name] = [{name: reading} for reading in readings]
    return AttributeFilter(certain, either)


def _readings(value: str) -> list[Any]:
    """What ``value`` may stand for in a card's attributes, text first."""
    readings: list[Any] = [value]
    if value.lower() in ("true", "false"):
        readings.append(value.lower() == "true")
    number = NUMBER.match(value)
    if number:
        digits = number.group(1).replace(",", ".")
        amount: int | float = float(digits) if "." in digits else int(digits)
        reading: dict[str, Any] = {"value": amount}
        if number.group(2):
            reading["unit"] = number.group(2)
        readings.append(reading)
    return readings


@dataclass(frozen=True)
class CardQuery:
    bucket: str
    statuses: Sequence[str] = ()
    category: str | None = None
    subtree: str | None = None
    attributes: AttributeFilter | None = None
    flagged: bool = False
    prefix: str | None = None
    search: str | None = None
    limit: int = 50

    def params(self) -> dict[str, Any]:
        attributes = self.attributes or AttributeFilter({}, {})
        return {
            "bucket": self.bucket,
            "statuses": list(self.statuses) or None,
            "category": self.category,
            "subtree": subtree_path(self.subtree) if self.subtree else None,
            "attributes": Jsonb(attributes.certain) if attributes.certain else None,
            "either": Jsonb(attributes.either) if attributes.either else None,
            "flagged": self.flagged,
            "prefix": self.prefix,
            "search": self.search or None,
            "limit": self.limit,
        }


def list_cards(dsn: str, query: CardQuery) -> list[dict[str, Any]]:
    """Cards matching the filters: best full-text rank first when searching, else newest."""
    with connect(dsn) as conn:
        return conn.execute(LIST_CARDS, query.params()).fetchall()


def show_card(dsn: str, bucket: str, key: str) -> dict[str, Any] | None:
    with connect(dsn) as conn:
        return conn.execute(SHOW_CARD, (bucket, key)).fetchone()


@dataclass
class CardStats:
    counts: dict[str, int]
    reasons: list[dict[str, Any]]
    throughput: list[dict[str, Any]]
    slowest: list[dict[str, Any]]
    recent_failures: list[dict[str, Any]]
    oldest_queued_s: float | None
    colour_flagged: int = 0
    """Done cards whose colour the pixels contradict."""
    colour_checked: int = 0
    """Done cards that carry a colour check (the others predate it, or it is off)."""


def card_stats(
    dsn: str, bucket: str, *, minutes: int = 10, window: int = 60, limit: int = 5
) -> CardStats:
    """The figures of the status screen, read in one connection."""
    with connect(dsn) as conn:
        counts = {r["status"]: r["n"] for r in conn.execute(COUNT_BY_STATUS, (bucket,))}
        reasons = conn.execute(COUNT_BY_REASON, (bucket,)).fetchall()
        throughput = conn.execute(THROUGHPUT, {"bucket": bucket, "minutes": minutes}).fetchall()
        slowest = conn.execute(
            SLOWEST_DONE, {"bucket": bucket, "window": window, "limit": limit}
        ).fetchall()
        failures = conn.execute(RECENT_FAILURES, {"bucket": bucket, "limit": limit}).fetchall()
        oldest = conn.execute(OLDEST_QUEUED, (bucket,)).fetchone()
        colour = conn.execute(COLOUR_FLAGS, (bucket,)).fetchone()
    return CardStats(
        counts=counts,
        reasons=reasons,
        throughput=throughput,
        slowest=slowest,
        recent_failures=failures,
        oldest_queued_s=oldest["age_s"] if oldest else None,
        colour_flagged=colour["flagged"] if colour else 0,
        colour_checked=colour["checked"] if colour else 0,
    )


def jsonable(value: Any) -> Any:
    """Rows as JSON: timestamps in ISO 8601, numerics as numbers, uuids as text."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, UUID):
        return str(value)
    return value
