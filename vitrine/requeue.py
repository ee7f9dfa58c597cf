"""Putting objects back through the pipeline: re-generate cards, or backfill old objects.

*Reprocess* re-enqueues rows of ``product_cards`` — all, by status, by key prefix, or by model /
prompt version after a model or prompt change.  The new result carries the row's own sequencer
and a newer ``produced_at``, so it replaces the old card, and never a newer version's.

*Backfill* enqueues objects that are in the bucket but have no row, typically uploaded before the
bucket notification was configured.  Their event time and sequencer come from the object's
last-modified time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from schemas.facts import GivenFacts, facts_from_metadata
from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef
from services.runtime.kafka import encode, make_producer, with_retry
from services.runtime.s3 import make_minio
from services.runtime.settings import KafkaSettings, PostgresSettings, S3Settings


class RequeueSettings(KafkaSettings, S3Settings, PostgresSettings):
    """What `vitrine reprocess` and `vitrine backfill` read: Kafka to enqueue, S3 to list,
    PostgreSQL to select."""


@dataclass(frozen=True)
class Selection:
    everything: bool = False
    statuses: Sequence[str] = ()
    prefix: str | None = None
    model_id: str | None = None
    prompt_version: str | None = None
    bucket: str | None = None

    def where(self) -> tuple[sql.Composed, list[Any]]:
        """A parameterised WHERE clause; deleted objects are never re-enqueued."""
        clauses: list[sql.Composable] = [sql.SQL("status <> 'deleted'")]
        params: list[Any] = []
        if self.bucket:
            clauses.append(sql.SQL("bucket = %s"))
            params.append(self.bucket)
        if self.statuses:
            clauses.append(sql.SQL("status = ANY(%s)"))
            params.append(list(self.statuses))
        if self.prefix:
            clauses.append(sql.SQL("starts_with(object_key, %s)"))
            params.append(self.prefix)
        if self.model_id:
            clauses.append(sql.SQL("model_id IS DISTINCT FROM %s"))
            params.append(self.model_id)
        if self.prompt_version:
            clauses.append(sql.SQL("prompt_version IS DISTINCT FROM %s"))
            params.append(self.prompt_version)
        return sql.SQL(" AND ").join(clauses), params

    @property
    def empty(self) -> bool:
        return not (
            self.everything or self.statuses or self.prefix or self.model_id or self.prompt_version
        )


@dataclass(frozen=True)
class Target:
    """One object to send through again, with the shop's facts its upload carried (the new
    card is bound to them as the first was)."""

    ref: ObjectRef
    facts: GivenFacts | None = None

    @property
    def bucket(self) -> str:
        return self.ref.bucket

    @property
    def key(self) -> str:
        return self.ref.key


def select_objects(settings: RequeueSettings, selection: Selection) -> list[Target]:
    where, params = selection.where()
    query = sql.SQL(
        "SELECT bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, "
        "event_time, facts FROM product_cards WHERE {} ORDER BY bucket, object_key"
    ).format(where)
    with psycopg.connect(settings.pg_dsn.get_secret_value(), row_factory=dict_row) as conn:
        found = conn.execute(query, params).fetchall()
    return [
        Target(
            ObjectRef.from_row(row),
            GivenFacts.model_validate(row["facts"]) if row.get("facts") else None,
        )
        for row in found
    ]


def missing_objects(settings: RequeueSettings, bucket: str, prefix: str | None) -> list[Target]:
    """Objects in the bucket that have no row at all, with the facts of their user metadata
    (MinIO lists it with the objects: no request per object)."""
    client = make_minio(settings)
    with psycopg.connect(settings.pg_dsn.get_secret_value()) as conn:
        known = {
            k
            for (k,) in conn.execute(
                "SELECT object_key FROM product_cards WHERE bucket = %s", (bucket,)
            )
        }
    refs = []
    listing = client.list_objects(
        bucket, prefix=prefix or None, recursive=True, include_user_meta=True
    )
    for obj in listing:
        if obj.is_dir or obj.object_name in known or obj.object_name is None:
            continue
        modified: datetime = obj.last_modified
        given = facts_from_metadata(obj.metadata or {})
        ref = ObjectRef(
            bucket=bucket,
            key=obj.object_name,
            version_id=obj.version_id,
            etag=(obj.etag or "").strip('"') or None,
            size=obj.size,
            content_type=obj.content_type,
            event_time=modified,
            sequencer=format(int(modified.timestamp() * 1_000_000_000), "X"),
        )
        refs.append(Target(ref, None if given.facts.empty and not given.problems else given))
    return refs


async def enqueue(
    settings: RequeueSettings,
    refs: Iterable[ObjectRef | Target],
    *,
    with_queued_row: bool,
    progress: Callable[[], None] = lambda: None,
) -> int:
    """Publish one job per object (and a ``queued`` result for objects that have no row)."""
    producer = make_producer(settings)
    await with_retry("producer.start", producer.start)
    sent = 0
    try:
        for target in refs:
            ref, facts = (
                (target.ref, target.facts) if isinstance(target, Target) else (target, None)
            )
            job = ImageJob.reprocess(ref, facts)
            if with_queued_row:
                queued = CardResult(
                    job_id=job.job_id,
                    trace_id=job.trace_id,
                    object=ref,
                    status=CardStatus.queued,
                    facts=facts,
                    producer="reprocess",
                )
                await producer.send(
                    settings.topic_results, key=ref.message_key, value=encode(queued)
                )
            await producer.send(settings.topic_jobs, key=ref.message_key, value=encode(job))
            sent += 1
            progress()
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def run_enqueue(
    settings: RequeueSettings,
    refs: Sequence[ObjectRef | Target],
    *,
    with_queued_row: bool,
    progress: Callable[[], None] = lambda: None,
) -> int:
    return asyncio.run(enqueue(settings, refs, with_queued_row=with_queued_row, progress=progress))
