"""The sink service loop: ``vitrine.results`` → ``product_cards``, one transaction per batch.

    python -m services.sink

A stage on the shared runtime (``services/runtime/stage.py``).  Offsets are committed only after
the batch's transaction has committed.  A crash in between replays the batch, and the store's
newest-wins guard makes the replay change nothing.  When PostgreSQL goes away the batch is
retried on a fresh connection with backoff; nothing is skipped.  A result that breaks the
contract is parked on the dead-letter topic, and recorded as a failed row if it names its object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from schemas.messages import CardResult, CardStatus
from schemas.reasons import Reason
from services.runtime.dead_letters import InvalidMessage
from services.runtime.kafka import make_consumer, make_producer
from services.runtime.pg import Reconnecting
from services.runtime.service import run_service
from services.runtime.stage import Item, Output, Stage, StageRunner
from services.sink.settings import SinkSettings
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
END_TO_END_SECONDS = Histogram(
    "vitrine_sink_end_to_end_seconds",
    "From the object's upload (event time) to its final row committed, by status.",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)


def parse(record: ConsumerRecord[Any, Any]) -> CardResult:
    """The result under the contract; one that breaks it is parked, and recorded as a failed
    row when it still names its object (see :func:`salvage`)."""
    raw = record.value or b""
    try:
        return CardResult.model_validate_json(raw)
    except ValidationError as exc:
        MALFORMED.inc()
        raise InvalidMessage(Reason.invalid_result, str(exc), fallback=salvage(raw, exc)) from None


def salvage(raw: bytes, exc: ValidationError) -> CardResult | None:
    """A result that breaks the contract but still names its object becomes a failed result.

    Without this the object's row would stay ``queued`` for ever (a producer on another
    version of the card contract, say); failed with the validation error it reaches a final
    status a person can see and reprocess, while the original waits on the dead-letter topic.
    The failure is dated a microsecond before the original, so a fixed copy of the original
    (``vitrine dlq replay --value-file``) is newer and replaces it.  A message that cannot be
    tied to an object is only parked."""
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
        reason=Reason.invalid_result,
        detail=f"the result broke the card contract: {errors}"[:2000],
    )
    try:
        failed = CardResult.model_validate(data)
    except ValidationError:
        return None
    return failed.model_copy(update={"produced_at": failed.produced_at - timedelta(microseconds=1)})


def without_nul(result: CardResult) -> CardResult:
    """``result`` with every NUL in its texts (keys of mappings too) replaced by U+FFFD:
    JSON and Python carry NUL, PostgreSQL's text and jsonb refuse it."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return CardResult.model_validate(clean(result.model_dump(mode="json")))


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


class Sink(Stage[CardResult]):
    """Results → rows: one transaction per batch, retried through database outages."""

    service = "sink"

    def __init__(self, settings: SinkSettings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.dlq_topic = settings.topic_dlq
        self.stop = stop
        self.db = Reconnecting(settings.pg_dsn.get_secret_value(), "vitrine-sink")

    def decode(self, record: ConsumerRecord[Any, Any]) -> CardResult:
        return parse(record)

    async def handle(self, items: Sequence[Item[CardResult]]) -> list[Output]:
        results = [item.value for item in items]
        for result in results:
            RESULTS.labels(result.status.value, result.reason or "").inc()
        outputs: list[Output] = []
        if results:
            try:
                ROWS_CHANGED.inc(await self.write(results))
            except psycopg.DataError:
                # a value PostgreSQL cannot store (a NUL in a text) fails the whole batch: a
                # crash would read the same batch again, so find the result and store it clean
                results, outputs = await self._one_by_one(items)
        observe_end_to_end(results)
        return outputs

    async def _one_by_one(
        self, items: Sequence[Item[CardResult]]
    ) -> tuple[list[CardResult], list[Output]]:
        """The batch row by row: a result PostgreSQL refuses is parked as it came (the
        dead-letter topic shows it) and stored with its NULs replaced (U+FFFD), so its object
        still gets its row and status."""
        stored: list[CardResult] = []
        parked: list[Output] = []
        for item in items:
            result = item.value
            try:
                ROWS_CHANGED.inc(await self.write([result]))
            except psycopg.DataError as exc:
                key = f"{result.object.bucket}/{result.object.key}"
                log.warning("row.unstorable", extra={"key": key, "error": str(exc)})
                MALFORMED.inc()
                detail = f"PostgreSQL cannot store this result: {exc}"
                parked.append(self.park(item.record, Reason.invalid_result, detail))
                try:
                    result = without_nul(result)
                    ROWS_CHANGED.inc(await self.write([result]))
                except (ValidationError, psycopg.DataError):
                    log.exception("row.unstorable_clean", extra={"key": key})
                    continue  # parked: the dead-letter topic has it
            stored.append(result)
        return stored, parked

    def committed(self, items: Sequence[Item[CardResult]]) -> None:
        for item in items:
            result = item.value
            log.info(
                f"row.{result.status.value}",
                extra={
                    "key": f"{result.object.bucket}/{result.object.key}",
                    "trace_id": result.trace_id,
                    "reason": result.reason,
                },
            )

    async def write(self, results: list[CardResult]) -> int:
        """Upsert until it works: a DB outage delays the batch, it never drops it."""

        async def upsert(conn: psycopg.AsyncConnection[Any]) -> int:
            started = time.perf_counter()
            changed = await upsert_batch(conn, results)
            BATCH_SECONDS.observe(time.perf_counter() - started)
            return changed

        return await self.db.run("db.upsert", upsert, stop=self.stop, on_retry=DB_RETRIES.inc)

    async def close(self) -> None:
        await self.db.close()


async def serve(settings: SinkSettings, stop: asyncio.Event, sink_type: type[Sink] = Sink) -> None:
    sink = sink_type(settings, stop)
    consumer = make_consumer(settings, settings.topic_results, group_id=settings.sink_group)
    producer = make_producer(settings)  # for the dead-letter topic
    runner = StageRunner(
        sink,
        consumer,
        producer,
        group=settings.sink_group,
        batch_max=settings.sink_batch_max,
        poll_ms=settings.batch_wait_ms,
    )
    try:
        await runner.serve(stop)
    finally:
        await sink.close()


def main() -> None:
    settings = SinkSettings()
    run_service("sink", settings, lambda stop: serve(settings, stop))
