"""The sink service loop: ``vitrine.results`` → ``product_cards``, one transaction per batch.

    python -m services.sink

Offsets are committed only after the batch's transaction has committed.  A crash in between
replays the batch, and the store's newest-wins guard makes the replay change nothing.  When
PostgreSQL goes away the batch is retried on a fresh connection with backoff; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from schemas.messages import CardResult, CardStatus
from services.runtime.kafka import make_consumer, rewind_after_failure, with_retry
from services.runtime.metrics import record_lag
from services.runtime.retry import transient
from services.runtime.service import run_service
from services.runtime.settings import KafkaSettings, PostgresSettings
from services.sink.store import upsert_batch

log = logging.getLogger("vitrine.sink")

RESULTS = Counter(
    "vitrine_sink_results_total", "Results read, by status and reason.", ["status", "reason"]
)
MALFORMED = Counter("vitrine_sink_malformed_total", "Result messages that did not parse.")
ROWS_CHANGED = Counter("vitrine_sink_rows_changed_total", "Upserts that changed a row.")
BATCH_SECONDS = Histogram(
    "vitrine_sink_batch_seconds",
    "Transaction time per batch.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
DB_RETRIES = Counter("vitrine_sink_db_retries_total", "Batches retried after a DB error.")
COMMIT_RETRIES = Counter(
    "vitrine_sink_commit_retries_total",
    "Batches re-read because the offset commit failed (rows already written; replay is a no-op).",
)
END_TO_END_SECONDS = Histogram(
    "vitrine_sink_end_to_end_seconds",
    "From the object's upload (event time) to its final row committed, by status.",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)


class SinkSettings(KafkaSettings, PostgresSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    sink_group: str = "vitrine-sink"
    batch_max: int = Field(500, ge=1)
    batch_wait_ms: int = Field(50, ge=0, description="How long a batch may wait to fill.")
    fault_crash_before_commit_once: Path | None = Field(
        None,
        description="Fault injection for tests only: after the first batch's transaction, "
        "create this file and SIGKILL the process before the offsets are committed.",
    )


def parse(record: ConsumerRecord[Any, Any]) -> CardResult | None:
    raw = record.value or b""
    try:
        return CardResult.model_validate_json(raw)
    except ValidationError as exc:
        MALFORMED.inc()
        salvaged = salvage(raw, exc)
        log.error(
            "result.malformed",
            extra={
                "partition": record.partition,
                "offset": record.offset,
                "error": str(exc)[:500],
                "recorded_as": None if salvaged is None else "failed",
            },
        )
        return salvaged


def salvage(raw: bytes, exc: ValidationError) -> CardResult | None:
    """A result that breaks the contract but still names its object becomes a failed result.

    Without this the object's row would stay ``queued`` for ever (a producer on another
    version of the card contract, say); failed with the validation error it reaches a final
    status a person can see and reprocess.  A message that cannot be tied to an object stays
    only in the log and the metric."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    errors = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )
    data.update(
        status=CardStatus.failed.value,
        card=None,
        reason="result_invalid",
        detail=f"the result broke the card contract: {errors}"[:2000],
    )
    try:
        return CardResult.model_validate(data)
    except ValidationError:
        return None


def observe_end_to_end(results: list[CardResult]) -> None:
    """Upload-to-row latency of final results: the pipeline's whole delay as a user sees it.
    A replay or a reprocess observes again, from the same upload time: that is what it cost."""
    now = datetime.now(UTC)
    for result in results:
        if result.status.final and result.status is not CardStatus.deleted:
            uploaded = result.object.event_time
            if uploaded.tzinfo is None:  # a naive time from a hand-made message: take it as UTC
                uploaded = uploaded.replace(tzinfo=UTC)
            seconds = (now - uploaded).total_seconds()
            END_TO_END_SECONDS.labels(result.status.value).observe(max(seconds, 0.0))


class Sink:
    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.consumer = make_consumer(
            settings, settings.topic_results, group_id=settings.sink_group
        )
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = await psycopg.AsyncConnection.connect(
                self.settings.pg_dsn.get_secret_value(),
                connect_timeout=5,
                application_name="vitrine-sink",
            )
        return self.conn

    async def write(self, results: list[CardResult], stop: asyncio.Event) -> int:
        """Upsert until it works: a DB outage delays the batch, it never drops it."""
        async for attempt in transient(
            "db.upsert",
            psycopg.OperationalError,
            max_wait=10,
            stop_event=stop,
            on_retry=DB_RETRIES.inc,
        ):
            with attempt:
                try:
                    started = time.perf_counter()
                    changed = await upsert_batch(await self._connection(), results)
                except psycopg.OperationalError:
                    if self.conn is not None:
                        await self.conn.close()
                    self.conn = None
                    raise
                BATCH_SECONDS.observe(time.perf_counter() - started)
                return changed
        raise AssertionError("unreachable")

    def _maybe_crash(self) -> None:
        marker = self.settings.fault_crash_before_commit_once
        if marker is not None and not marker.exists():
            marker.touch()
            log.warning("fault_injection.crash_before_commit")
            os.kill(os.getpid(), signal.SIGKILL)

    async def run(self, stop: asyncio.Event) -> None:
        await with_retry("consumer.start", self.consumer.start)
        log.info("sink.started", extra={"topic": self.settings.topic_results})
        try:
            failures = 0
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.batch_wait_ms or 1, max_records=self.settings.batch_max
                )
                if not batch:
                    continue
                results = [
                    r
                    for records in batch.values()
                    for rec in records
                    if (r := parse(rec)) is not None
                ]
                for result in results:
                    RESULTS.labels(result.status.value, result.reason or "").inc()
                changed = await self.write(results, stop) if results else 0
                ROWS_CHANGED.inc(changed)
                observe_end_to_end(results)
                self._maybe_crash()
                try:
                    await self.consumer.commit(
                        {tp: records[-1].offset + 1 for tp, records in batch.items()}
                    )
                    failures = 0
                except KafkaError as exc:  # rows are written: the replay will change nothing
                    failures += 1
                    COMMIT_RETRIES.inc()
                    await rewind_after_failure(self.consumer, batch, exc, failures)
                    continue
                for result in results:
                    log.info(
                        f"row.{result.status.value}",
                        extra={
                            "key": f"{result.object.bucket}/{result.object.key}",
                            "trace_id": result.trace_id,
                            "reason": result.reason,
                        },
                    )
                await record_lag(self.consumer, self.settings.sink_group)
        finally:
            await self.consumer.stop()
            if self.conn is not None:
                await self.conn.close()


def main() -> None:
    settings = SinkSettings()
    run_service("sink", settings, lambda stop: Sink(settings).run(stop))
