"""Review quality: what people make of each model and prompt version's cards.

Two views of the same decisions, on purpose:

* **Prometheus metrics**, counted by the desk as each decision commits (one approval of a bulk
  approval counts as one): for dashboards and alerts, as rates over a window.  Counters start
  at zero with the process and count *decisions* — a card approved, edited (back to pending)
  and approved again counts twice — so they are no record of what was decided overall.
* **The summary** (:func:`summary`), read from ``product_cards``: every decided card counted
  once by its current decision, whatever restarted meanwhile.  ``vitrine status``, the desk's
  Quality page and ``GET /v1/quality`` show that one.

Both share the definitions: a decision's *edited fields* are the editable fields in which the
card decided on (the person's, else the model's) differs from the model's card; its *time to
decision* runs from the card's arrival in ``product_cards`` (``updated_at``, which only the sink
moves: a regenerated card starts again) to the decision (``reviewed_at``), both on the
database's clock.

Labels stay bounded: the model is named by its file name (no directory), at most
:data:`LABEL_MAX` characters, and after :data:`MAX_PAIRS` distinct model and prompt pairs in one
process any further pair is counted as ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Histogram
from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row

from schemas.api import EDITABLE_FIELDS, QualityReport, ReviewQuality

LABEL_MAX = 64
MAX_PAIRS = 50
OTHER = ("other", "other")

DECISIONS = Counter(
    "vitrine_review_decisions_total",
    "People's decisions on cards, by the card's model and prompt version, the decision "
    "(approve, reject) and whether the card decided on carried a person's edits.",
    ["model_id", "prompt_version", "decision", "edited"],
)
EDITED_FIELDS = Counter(
    "vitrine_review_edited_fields_total",
    "Decided cards by each field a person changed from the model's card.",
    ["model_id", "prompt_version", "field"],
)
DECISION_SECONDS = Histogram(
    "vitrine_review_decision_seconds",
    "Time from the card's arrival in the table to a person's decision on it.",
    ["model_id", "prompt_version"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)

_pairs: set[tuple[str, str]] = set()


def _label(value: str | None) -> str:
    """A model id or prompt version as a label value: its last path segment, bounded."""
    text = (value or "").rsplit("/", 1)[-1].strip()
    return text[:LABEL_MAX] or "none"


def labels(model_id: str | None, prompt_version: str | None) -> tuple[str, str]:
    """The (model_id, prompt_version) label values of a card's metrics."""
    pair = (_label(model_id), _label(prompt_version))
    if pair not in _pairs:
        if len(_pairs) >= MAX_PAIRS:
            return OTHER
        _pairs.add(pair)
    return pair


def record(
    decision: str,
    model_id: str | None,
    prompt_version: str | None,
    fields: Sequence[str],
    seconds: float | None,
) -> None:
    """Count one committed decision (``approve`` or ``reject``) on a card."""
    model, prompt = labels(model_id, prompt_version)
    edited = "true" if fields else "false"
    DECISIONS.labels(model, prompt, decision, edited).inc()
    for name in fields:
        EDITED_FIELDS.labels(model, prompt, name).inc()
    if seconds is not None:
        DECISION_SECONDS.labels(model, prompt).observe(max(seconds, 0.0))


# --- the summary, from the table ---------------------------------------------------------------

# Each decided card once, by its current state: the fields in which the card decided on differs
# from the model's (a JSON null and a missing field are the same, as in edits.changed_fields),
# and its time to decision.  Read by vitrine_review (the desk) and vitrine_reader (status).
SUMMARY = """
WITH decided AS (
    SELECT model_id, prompt_version, review_state,
           extract(epoch FROM reviewed_at - updated_at)::float8 AS decision_s,
           ARRAY(SELECT f.name FROM unnest(%(fields)s::text[]) AS f(name)
                 WHERE edited_card IS NOT NULL
                   AND coalesce(edited_card -> f.name, 'null'::jsonb)
                       IS DISTINCT FROM coalesce(card -> f.name, 'null'::jsonb)) AS changed
    FROM product_cards
    WHERE review_state IN ('approved', 'rejected')
      AND (%(bucket)s::text IS NULL OR bucket = %(bucket)s)
), edits AS (
    SELECT model_id, prompt_version, jsonb_object_agg(name, n) AS fields
    FROM (SELECT model_id, prompt_version, c.name, count(*) AS n
          FROM decided CROSS JOIN unnest(changed) AS c(name)
          GROUP BY model_id, prompt_version, c.name) per_field
    GROUP BY model_id, prompt_version
)
SELECT d.model_id, d.prompt_version, d.decided, d.approved, d.approved_unchanged, d.rejected,
       d.median_decision_s, d.p90_decision_s, coalesce(e.fields, '{}'::jsonb) AS edited_fields
FROM (SELECT model_id, prompt_version, count(*) AS decided,
             count(*) FILTER (WHERE review_state = 'approved') AS approved,
             count(*) FILTER (WHERE review_state = 'approved' AND cardinality(changed) = 0)
                 AS approved_unchanged,
             count(*) FILTER (WHERE review_state = 'rejected') AS rejected,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY decision_s) AS median_decision_s,
             percentile_cont(0.9) WITHIN GROUP (ORDER BY decision_s) AS p90_decision_s
      FROM decided GROUP BY model_id, prompt_version) d
LEFT JOIN edits e ON e.model_id IS NOT DISTINCT FROM d.model_id
                 AND e.prompt_version IS NOT DISTINCT FROM d.prompt_version
ORDER BY d.decided DESC, d.model_id NULLS LAST, d.prompt_version NULLS LAST
LIMIT %(limit)s
"""

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""An S3 bucket's name (3 to 63 lowercase letters, digits, dots and hyphens)."""


def bucket_filter(value: str | None) -> str | None:
    """A summary's bucket from a query parameter: empty means every bucket; anything that is no
    bucket name is a ValueError (no query is made of it)."""
    if not value:
        return None
    if not BUCKET_NAME.fullmatch(value):
        raise ValueError("bucket: not a bucket name (3 to 63 of a-z, 0-9, '.' and '-')")
    return value


GROUPS_MAX = 100
"""The most model and prompt pairs a summary lists (the most decided first)."""


def _params(bucket: str | None, limit: int) -> dict[str, Any]:
    return {"fields": list(EDITABLE_FIELDS), "bucket": bucket, "limit": limit}


def group(row: Mapping[str, Any]) -> ReviewQuality:
    """One row of :data:`SUMMARY` as the API's model."""
    decided = int(row["decided"])
    edited = {name: int((row["edited_fields"] or {}).get(name, 0)) for name in EDITABLE_FIELDS}
    median, p90 = row["median_decision_s"], row["p90_decision_s"]
    return ReviewQuality(
        model_id=row["model_id"],
        prompt_version=row["prompt_version"],
        decided=decided,
        approved=int(row["approved"]),
        approved_unchanged=int(row["approved_unchanged"]),
        rejected=int(row["rejected"]),
        approval_rate=int(row["approved"]) / decided,
        unchanged_approval_rate=int(row["approved_unchanged"]) / decided,
        edited_fields=edited,
        edit_rate={name: n / decided for name, n in edited.items()},
        median_decision_s=None if median is None else float(median),
        p90_decision_s=None if p90 is None else float(p90),
    )


async def summary(
    conn: AsyncConnection[Any], bucket: str | None = None, limit: int = GROUPS_MAX
) -> QualityReport:
    """Review quality by model and prompt version, of one bucket or (None) of all."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SUMMARY, _params(bucket, limit))
        rows = await cur.fetchall()
    return QualityReport(bucket=bucket, groups=[group(r) for r in rows])


def summary_sync(
    conn: Connection[Any], bucket: str | None = None, limit: int = GROUPS_MAX
) -> QualityReport:
    """:func:`summary` on a blocking connection (``vitrine status``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SUMMARY, _params(bucket, limit))
        rows = cur.fetchall()
    return QualityReport(bucket=bucket, groups=[group(r) for r in rows])


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.1 d``: a time to decision as people read it."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
