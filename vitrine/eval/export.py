"""``vitrine eval export-reviewed``: a labelled set (``labels.py``) from the review desk's
decisions.

Every card a person decided on (``review_state`` approved or rejected, the row still ``done``)
becomes one item:

- approved: ``card`` is the card as approved (``approved_card``: the person's edits included),
  the truth every field is held to; ``model_card`` what the model wrote; ``verdict`` ``edited``
  when the approval carried a person's edit (``card_reviews.edited``), else ``approved``; the
  plain labels (category, colour, attributes, description) are copied from the approved card;
- rejected (unless left out): a negative, ``verdict`` ``rejected``, ``card`` null and
  ``rejected_card`` the card the person refused (their edit, else the model's).

A single photo is ``photos: ["s3://bucket/key"]`` with the shop's facts the row kept; a product
(a folder committed by ``product.json``) is its ``folder``, whose manifest names the photos and
the facts.  ``source`` says where each item came from (bucket, key, model, prompt, reviewer,
time).  Items are in decision order (reviewed_at, bucket, key), so two exports of the same
decisions are the same file; the file is written whole or not at all (a temporary file renamed
over it).  A row that does not make a valid item is skipped and counted with its reason.

The statement is a string literal with bound parameters (the filters are ``%(x)s IS NULL OR``),
as ``vitrine/cards.py``'s are.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.products import manifest_folder
from services.runtime.settings import PostgresSettings
from vitrine.cards import connect
from vitrine.eval.labels import MAX_ITEMS, LabelledItem, write_set

# The latest approval of a row says whether the approved card was a person's edit (the desk
# writes it: services/review/decisions.py); a row without one (approved before the log existed)
# is compared instead.
DECIDED_CARDS = """
SELECT p.bucket, p.object_key, p.review_state, p.reviewed_by, p.reviewed_at, p.review_note,
       p.card, p.edited_card, p.approved_card, p.model_id, p.prompt_version,
       p.sku, p.brand, p.gtin, p.facts, p.photo_keys, p.main_photo,
       coalesce(a.edited, p.approved_card IS DISTINCT FROM p.card) AS edited,
       coalesce(a.fields, '{}'::text[]) AS edited_fields
FROM product_cards p
LEFT JOIN LATERAL (
    SELECT r.edited, r.fields FROM card_reviews r
    WHERE r.bucket = p.bucket AND r.object_key = p.object_key AND r.decision = 'approve'
    ORDER BY r.id DESC LIMIT 1
) a ON p.review_state = 'approved'
WHERE p.status = 'done'
  AND p.review_state = ANY(%(states)s::text[])
  AND (%(since)s::timestamptz IS NULL OR p.reviewed_at >= %(since)s::timestamptz)
  AND (%(model)s::text IS NULL OR p.model_id = %(model)s)
  AND (%(bucket)s::text IS NULL OR p.bucket = %(bucket)s)
ORDER BY p.reviewed_at NULLS FIRST, p.bucket, p.object_key
LIMIT %(limit)s
"""

FACT_NAMES = ("sku", "brand", "gtin", "title", "color")
"""The shop's core facts, as a set's ``facts`` (and S3 metadata) name them."""


class NothingToExport(LookupError):
    """No decided card matched: no file is written (an empty set cannot be read back)."""


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str


@dataclass
class ExportSummary:
    """What an export wrote, and what it left out and why."""

    path: Path
    approved: int = 0
    """Approved as the model wrote them."""
    edited: int = 0
    """Approved after a person's edit."""
    rejected: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    truncated: bool = False
    """More rows matched than a set may hold (labels.MAX_ITEMS): the first ones were written."""

    @property
    def written(self) -> int:
        return self.approved + self.edited + self.rejected

    @property
    def skipped_reasons(self) -> dict[str, int]:
        """How many rows were skipped for each reason, most common first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())


def export_reviewed(
    settings: PostgresSettings,
    out: Path,
    *,
    since: datetime | None = None,
    model: str | None = None,
    include_rejected: bool = True,
    limit: int | None = None,
    bucket: str | None = None,
) -> ExportSummary:
    """Write the desk's decisions to ``out`` as a JSONL labelled set.

    ``since``: decided at or after (a naive time is UTC); ``model``: only cards of this
    ``model_id``; ``bucket``: only this bucket (None: every bucket); ``limit``: at most this many
    rows read.  Raises :class:`vitrine.cards.DatabaseUnreachable` when PostgreSQL does not
    answer, :class:`NothingToExport` when no row matched (``out`` is left as it was), and
    ``OSError`` when ``out`` cannot be written (no temporary file is left behind)."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    params = {
        "states": ["approved", "rejected"] if include_rejected else ["approved"],
        "since": since,
        "model": model,
        "bucket": bucket,
        "limit": limit,
    }
    summary = ExportSummary(path=out)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    temporary = Path(name)
    try:
        # a server-side cursor: rows stream in batches, however many decisions there are
        with (
            connect(settings.pg_dsn.get_secret_value()) as conn,
            conn.cursor(name="vitrine_eval_export") as cursor,
        ):
            cursor.itersize = 200
            cursor.execute(DECIDED_CARDS, params)
            write_set(_items(cursor, summary), temporary)
        if not summary.written:
            raise NothingToExport("no decided card matches")
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        # mkstemp's file is the owner's only; the set keeps the mode of the one it replaces
        temporary.chmod(out.stat().st_mode & 0o777 if out.exists() else 0o644)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return summary


def _items(rows: Iterable[dict[str, Any]], summary: ExportSummary) -> Iterator[LabelledItem]:
    """Each row as an item, counted in ``summary``; a row that makes no valid item is skipped
    with its reason.  Stops at :data:`MAX_ITEMS` (what ``read_set`` reads back)."""
    for row in rows:
        if summary.written >= MAX_ITEMS:
            summary.truncated = True
            return
        item_id = f"{row['bucket']}/{row['object_key']}"
        try:
            item = item_of(row)
        except ValidationError as exc:
            summary.skipped.append(Skipped(item_id, _problems(exc)))
            continue
        except ValueError as exc:
            summary.skipped.append(Skipped(item_id, str(exc)))
            continue
        if item.verdict == "rejected":
            summary.rejected += 1
        elif item.verdict == "edited":
            summary.edited += 1
        else:
            summary.approved += 1
        yield item


def item_of(row: Mapping[str, Any]) -> LabelledItem:
    """One decided row of ``product_cards`` as a labelled item; ``ValueError`` (a pydantic
    ``ValidationError`` among them) says why it makes none."""
    bucket, key = str(row["bucket"]), str(row["object_key"])
    values: dict[str, Any] = {"id": f"{bucket}/{key}", **_where(row)}
    model_card = _card(row["card"], "the model's card")
    if row["review_state"] == "rejected":
        rejected = _card(row["edited_card"] or row["card"], "the rejected card")
        if rejected is None:
            raise ValueError("a rejected row without a card")
        values.update(verdict="rejected", card=None, rejected_card=rejected, model_card=model_card)
    else:
        truth = _card(row["approved_card"], "the approved card")
        if truth is None:
            raise ValueError("an approved row without approved_card")
        values.update(
            verdict="edited" if row["edited"] else "approved",
            card=truth,
            model_card=model_card,
            category=truth.get("category_path"),
            category_id=truth.get("category_id"),
            color=truth.get("color_primary"),
            attributes=truth.get("attributes"),
            description=truth.get("description_long"),
        )
    source: dict[str, Any] = {
        "bucket": bucket,
        "key": key,
        "model_id": row["model_id"],
        "prompt_version": row["prompt_version"],
        "reviewed_by": row["reviewed_by"],
        "reviewed_at": _iso(row["reviewed_at"]),
    }
    if values["verdict"] == "edited" and row.get("edited_fields"):
        source["edited_fields"] = list(row["edited_fields"])
    if row.get("review_note"):
        source["note"] = row["review_note"]
    values["source"] = source
    return LabelledItem.model_validate(values)


def _where(row: Mapping[str, Any]) -> dict[str, Any]:
    """The item's photos: a product's folder (its manifest names the photos and facts), else
    the photo itself with the facts the row kept."""
    bucket, key = row["bucket"], row["object_key"]
    photo_keys = row.get("photo_keys")
    if photo_keys is not None:
        folder = manifest_folder(key)
        if folder is not None:
            return {"folder": f"s3://{bucket}/{folder}"}
        # a product row not keyed by its manifest (none is written so): its photos, in order
        photos = [f"s3://{bucket}/{k}" for k in photo_keys]
        main = photo_keys.index(row["main_photo"]) if row.get("main_photo") in photo_keys else 0
        return {"photos": photos, "main": main, "facts": facts_of(row)}
    return {"photos": [f"s3://{bucket}/{key}"], "facts": facts_of(row)}


def facts_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The shop's facts as a set names them (as S3 metadata would: ``sku``, ``brand``, ``gtin``,
    ``title``, ``color`` and attributes by name): the row's ``facts`` column, else its sku,
    brand and gtin columns."""
    facts: dict[str, str] = {}
    given = row.get("facts")
    kept = given.get("facts") if isinstance(given, dict) else None
    if isinstance(kept, dict):
        for name in FACT_NAMES:
            if isinstance(kept.get(name), str):
                facts[name] = kept[name]
        attributes = kept.get("attributes")
        if isinstance(attributes, dict):
            facts.update({k: v for k, v in sorted(attributes.items()) if isinstance(v, str)})
    for name in ("sku", "brand", "gtin"):
        if row.get(name) and name not in facts:
            facts[name] = str(row[name])
    return facts


def _card(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return None if value is None else str(value)


def _problems(exc: ValidationError) -> str:
    """A validation error in one short line, as ``labels.read_set`` says it."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
