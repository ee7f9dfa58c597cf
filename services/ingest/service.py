"""The ingest service loop: ``minio.events`` → ``vitrine.jobs`` + ``vitrine.results``.

    python -m services.ingest

A stage on the shared runtime (``services/runtime/stage.py``): batches of notifications become
messages, every message is acknowledged by the broker, and only then are the batch's offsets
committed.  A crash replays the batch, and replays are harmless (job ids are deterministic, the
sink's upsert ignores what it has already applied).  A notification that does not parse is
parked on the dead-letter topic with the reason in its headers; it never stops the loop.

An upload only its bytes can classify (rules.py: a generic content type under a name without an
image extension) costs one ranged GET (``head.py``); a batch's are read together.  While MinIO
is unreachable such a batch waits, retried and logged, and is committed only once decided.
A removed manifest costs one listing of its folder: its photos follow the removal in the batch,
each decided as its upload would be (rules.py ``decide_released``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aiokafka.structs import ConsumerRecord
from minio import Minio
from prometheus_client import Counter
from pydantic import ValidationError

from schemas.messages import CardStatus, MinioEvent, ObjectRef, S3Record
from schemas.products import MANIFEST_MAX_BYTES, MANIFEST_NAME, manifest_folder, read_manifest
from schemas.reasons import Reason
from services.ingest.dedup import RecentEvents, event_identity
from services.ingest.head import (
    TRANSIENT,
    fetch_folder,
    fetch_folder_manifest,
    fetch_head,
    head_client,
)
from services.ingest.recall import try_recall_handled
from services.ingest.rules import (
    RELEASED_MOST,
    Decision,
    Sniff,
    decide,
    decide_from_head,
    decide_manifest,
    decide_released,
    decide_unread,
    photo_folder,
    regroup,
)
from services.ingest.settings import IngestSettings
from services.runtime.dead_letters import InvalidMessage
from services.runtime.kafka import encode, make_consumer, make_producer
from services.runtime.s3 import ObjectChanged, ObjectForbidden, ObjectMissing
from services.runtime.service import run_service
from services.runtime.sniff import HEAD_BYTES
from services.runtime.stage import Item, Output, Stage, StageRunner

log = logging.getLogger("vitrine.ingest")

# First-bytes reads in flight at once (the client's connection pool holds as many).
SNIFF_CONCURRENCY = 16

EVENTS = Counter(
    "vitrine_ingest_events_total", "Notification records seen, by outcome.", ["outcome", "reason"]
)
MALFORMED = Counter("vitrine_ingest_malformed_total", "Notifications that did not parse.")
PUBLISHED = Counter(
    "vitrine_ingest_published_total",
    "Messages published, by kind: job, result (queued/rejected/deleted rows); parked "
    "notifications are counted by vitrine_dead_letters_total.",
    ["kind"],
)
SNIFFS = Counter(
    "vitrine_ingest_sniffs_total",
    "Uploads whose type and name were silent, judged by their first bytes, by outcome: image "
    "(a job), unsupported_image (bad_image), not_an_image, unknown (no image signature; "
    "not_an_image), object_missing, superseded, access_denied; error (a bug: parked).",
    ["outcome"],
)

PRODUCTS = Counter(
    "vitrine_ingest_products_total",
    "Product manifests read, by outcome: product (a job for its photos), rejected "
    "(bad_manifest); photo events in a committed product's folder: regenerated (the product "
    "made again), grouped (the photo's own job dropped); manifests removed: released (the "
    "folder listed, its photos decided as uploads again), unlisted (the listing was refused: "
    "its photos stay grouped).",
    ["outcome"],
)

UNREAD_OUTCOMES: dict[type[Exception], tuple[CardStatus, Reason]] = {
    ObjectMissing: (CardStatus.failed, Reason.object_missing),
    ObjectChanged: (CardStatus.failed, Reason.superseded),
    ObjectForbidden: (CardStatus.failed, Reason.access_denied),
}
"""A first-bytes read that failed for good: the row the worker gives the same failure."""


class Ingest(Stage[MinioEvent]):
    """A notification → the job and/or result messages the rules decide for each of its
    records; parked when it does not parse, or when a record is not a valid object."""

    service = "ingest"

    def __init__(
        self,
        settings: IngestSettings,
        stop: asyncio.Event | None = None,
        minio: Minio | None = None,
    ) -> None:
        self.settings = settings
        self.dlq_topic = settings.topic_dlq
        self.recent = RecentEvents(settings.dedup_capacity)
        self.stop = stop
        self.minio = minio if minio is not None else head_client(settings)
        self._sniffing = asyncio.Semaphore(SNIFF_CONCURRENCY)

    def decode(self, record: ConsumerRecord[Any, Any]) -> MinioEvent:
        try:
            return MinioEvent.model_validate_json(record.value or b"")
        except ValidationError as exc:
            MALFORMED.inc()
            raise InvalidMessage(Reason.malformed_event, str(exc)) from None

    async def handle(self, items: Sequence[Item[MinioEvent]]) -> list[Output]:
        planned = [entry for item in items for entry in self._plan(item)]
        # a removed manifest's photos, each right after it (listed together)
        expanded = await asyncio.gather(*(self._with_released(entry) for entry in planned))
        planned = [entry for group in expanded for entry in group]
        # The first bytes of every silent upload in the batch are read at once; the outputs
        # keep the records' order (a key's events stay in sequence on its partition).
        silent = [i for i, entry in enumerate(planned) if entry.sniff is not None]
        sniffed = await asyncio.gather(*(self._sniffed(planned[i]) for i in silent))
        for i, entry in zip(silent, sniffed, strict=True):
            planned[i] = entry
        products = [i for i, entry in enumerate(planned) if entry.manifest is not None]
        read = await asyncio.gather(*(self._manifest_read(planned[i]) for i in products))
        for i, entry in zip(products, read, strict=True):
            planned[i] = entry
        # a photo in a committed product's folder: the product, not a card of its own
        folders: dict[str, asyncio.Task[tuple[bytes, datetime] | None]] = {}
        photos = [i for i, entry in enumerate(planned) if _photo_event(entry) is not None]
        regrouped = await asyncio.gather(*(self._regrouped(planned[i], folders) for i in photos))
        for i, entry in zip(photos, regrouped, strict=True):
            planned[i] = entry
        outputs: list[Output] = []
        for entry in planned:
            if entry.parked is not None:
                outputs.append(entry.parked)
            else:
                outputs.extend(self._outputs(entry))
        return outputs

    def committed(self, items: Sequence[Item[MinioEvent]]) -> None:
        self.recent.commit()

    def aborted(self) -> None:
        self.recent.abort()

    def _plan(self, item: Item[MinioEvent]) -> list[_Planned]:
        """Each record's decision from its notification alone."""
        s = self.settings
        planned: list[_Planned] = []
        for s3_record in item.value.records:
            if s3_record.s3.bucket.name != s.bucket:  # another pipeline's bucket
                EVENTS.labels("ignored", "other_bucket").inc()
                continue
            if s.dedup_capacity and not self.recent.first_time(event_identity(s3_record)):
                EVENTS.labels("duplicate", "").inc()  # the durable target's copy
                continue
            try:
                decision = decide(s3_record, s.image_max_bytes)
            except ValidationError as exc:  # parses as an event, but not a valid object
                MALFORMED.inc()
                parked = self.park(item.record, Reason.invalid_object, str(exc))
                planned.append(_Planned(item, s3_record, None, parked))
                continue
            planned.append(_Planned(item, s3_record, decision))
        return planned

    async def _with_released(self, entry: _Planned) -> list[_Planned]:
        """``entry``, and when it removed a manifest, the photos in its folder decided as their
        uploads would be (``decide_released``); a refused listing leaves them ``grouped``
        (logged and counted), a fault no rule covers parks the removal."""
        removed = entry.released
        if removed is None:
            return [entry]
        folder = manifest_folder(removed.key) or ""
        key = f"{removed.bucket}/{removed.key}"
        try:
            async with self._sniffing:
                listed, more = await fetch_folder(
                    self.minio, removed.bucket, folder, RELEASED_MOST, stop=self.stop
                )
        except ObjectForbidden as exc:
            PRODUCTS.labels("unlisted").inc()
            log.warning("event.release_unlisted", extra={"key": key, "error": str(exc)})
            return [entry]
        except TRANSIENT:
            raise  # only when asked to stop: the batch stays uncommitted, read again later
        except Exception as exc:
            log.exception("event.release_error", extra={"key": key})
            detail = f"listing the folder of {removed.key}: {type(exc).__name__}: {exc}"
            parked = self.park(entry.item.record, Reason.internal_error, detail)
            return [replace(entry, decision=None, parked=parked)]
        if more:
            log.warning("event.release_truncated", extra={"key": key, "most": RELEASED_MOST})
        decisions = decide_released(removed, listed, self.settings.image_max_bytes)
        PRODUCTS.labels("released").inc()
        log.info(
            "event.released",
            extra={"key": key, "listed": len(listed), "photos": len(decisions)},
        )
        photos = [replace(entry, decision=d, photo=_decided_object(d)) for d in decisions]
        return [entry, *photos]

    async def _sniffed(self, entry: _Planned) -> _Planned:
        """``entry`` decided by its upload's first bytes; parked on a fault no rule covers
        (a bug must not stop the stage, nor be retried forever)."""
        assert entry.decision is not None and entry.decision.sniff is not None
        sniff = entry.decision.sniff
        ref = sniff.ref
        started = time.perf_counter()
        head: bytes | None = None
        try:
            async with self._sniffing:
                head = await fetch_head(self.minio, ref, HEAD_BYTES, stop=self.stop)
        except tuple(UNREAD_OUTCOMES) as exc:
            status, reason = UNREAD_OUTCOMES[type(exc)]
            decision = decide_unread(sniff, status, reason, f"reading its first bytes: {exc}")
            outcome, what = reason.value, str(exc)
        except TRANSIENT:
            raise  # only when asked to stop: the batch stays uncommitted, read again later
        except Exception as exc:
            SNIFFS.labels("error").inc()
            log.exception("event.sniff_error", extra={"key": f"{ref.bucket}/{ref.key}"})
            detail = f"reading the first bytes of {ref.key}: {type(exc).__name__}: {exc}"
            parked = self.park(entry.item.record, Reason.internal_error, detail)
            return replace(entry, decision=None, parked=parked)
        else:
            found, decision = decide_from_head(sniff, head)
            outcome, what = found.kind, found.what
        SNIFFS.labels(outcome).inc()
        result = decision.result
        log.info(
            "event.sniffed",
            extra={
                "key": f"{ref.bucket}/{ref.key}",
                "declared": sniff.declared,
                "version_id": ref.version_id,
                "head_bytes": None if head is None else len(head),
                "outcome": outcome,
                "what": what,
                "status": result.status.value if result else None,
                "reason": result.reason if result else None,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "trace_id": sniff.trace_id,
            },
        )
        return replace(entry, decision=decision)

    async def _manifest_read(self, entry: _Planned) -> _Planned:
        """A product's manifest read whole (``schemas/products.py``) and decided; the same
        outcomes as a sniff for an object gone or forbidden, parked on a fault no rule covers."""
        assert entry.decision is not None and entry.decision.manifest is not None
        manifest = entry.decision.manifest
        ref = manifest.ref
        try:
            async with self._sniffing:
                data = await fetch_head(self.minio, ref, MANIFEST_MAX_BYTES + 1, stop=self.stop)
        except tuple(UNREAD_OUTCOMES) as exc:
            status, reason = UNREAD_OUTCOMES[type(exc)]
            decision = decide_unread(manifest, status, reason, f"reading the manifest: {exc}")
            return _Planned(entry.item, entry.record, decision)
        except TRANSIENT:
            raise  # only when asked to stop: the batch stays uncommitted, read again later
        except Exception as exc:
            log.exception("event.manifest_error", extra={"key": f"{ref.bucket}/{ref.key}"})
            detail = f"reading the manifest {ref.key}: {type(exc).__name__}: {exc}"
            parked = self.park(entry.item.record, Reason.internal_error, detail)
            return _Planned(entry.item, entry.record, None, parked)
        try:
            decision = decide_manifest(manifest, data, self.settings.product_max_photos)
        except Exception as exc:  # a bug must not stop the stage, nor be retried forever
            log.exception("event.manifest_error", extra={"key": f"{ref.bucket}/{ref.key}"})
            detail = f"deciding the manifest {ref.key}: {type(exc).__name__}: {exc}"
            parked = self.park(entry.item.record, Reason.internal_error, detail)
            return _Planned(entry.item, entry.record, None, parked)
        PRODUCTS.labels("product" if decision.job else "rejected").inc()
        return _Planned(entry.item, entry.record, decision)

    async def _regrouped(
        self, entry: _Planned, folders: dict[str, asyncio.Task[tuple[bytes, datetime] | None]]
    ) -> _Planned:
        """``entry`` (a photo's upload or removal) as its folder's manifest decides, if the
        folder has one that names it: read once per folder and batch."""
        folder = _photo_event(entry)
        assert folder is not None and entry.decision is not None
        ref = entry.ref
        if folder not in folders:
            folders[folder] = asyncio.create_task(self._folder_manifest(ref.bucket, folder))
        found = await folders[folder]
        if found is None:
            return entry
        data, modified = found
        try:
            manifest, _problem = read_manifest(data)
            if manifest is None or ref.key.rsplit("/", 1)[1] not in manifest.photos:
                return entry
            decision = regroup(entry.decision, ref, folder + MANIFEST_NAME, manifest, modified)
        except Exception:  # a bug must not stop the stage: the photo keeps its own decision
            log.exception("event.regroup_error", extra={"key": f"{ref.bucket}/{ref.key}"})
            return entry
        PRODUCTS.labels("regenerated" if decision.job else "grouped").inc()
        return replace(entry, decision=decision)

    async def _folder_manifest(self, bucket: str, folder: str) -> tuple[bytes, datetime] | None:
        async with self._sniffing:
            return await fetch_folder_manifest(
                self.minio, bucket, folder + MANIFEST_NAME, MANIFEST_MAX_BYTES + 1, stop=self.stop
            )

    def _outputs(self, entry: _Planned) -> list[Output]:
        s = self.settings
        decision = entry.decision
        assert decision is not None
        ref = entry.ref
        outputs = []
        key = f"{ref.bucket}/{ref.key}"
        # each on its own object's partition: a photo's event may queue its product's job
        if decision.result is not None:
            PUBLISHED.labels("result").inc()
            key_of = decision.result.object.message_key
            outputs.append(Output(s.topic_results, key_of, encode(decision.result)))
        if decision.job is not None:
            PUBLISHED.labels("job").inc()
            key_of = decision.job.object.message_key
            outputs.append(Output(s.topic_jobs, key_of, encode(decision.job)))
        for other in decision.others:  # a product's photos, each on its own key's partition
            PUBLISHED.labels("result").inc()
            outputs.append(Output(s.topic_results, other.object.message_key, encode(other)))
        outcome = (
            "job"
            if decision.job
            else decision.result.status.value
            if decision.result
            else "ignored"
        )
        reason = decision.result.reason if decision.result else None
        if entry.photo is None:  # a notification's record (a released photo is not one)
            EVENTS.labels(outcome, reason or "").inc()
        log.info(
            f"event.{outcome}",
            extra={
                "key": key,
                "event_name": entry.record.event_name,
                "released_by": entry.record.object_ref().key if entry.photo else None,
                "reason": reason,
                "trace_id": decision.result.trace_id if decision.result else None,
                "sequencer": ref.sequencer,
            },
        )
        return outputs


def _photo_event(entry: _Planned) -> str | None:
    """The folder of a photo's upload (a job of its own) or removal, else None."""
    decision = entry.decision
    if decision is None or entry.parked is not None:
        return None
    upload = decision.job is not None and decision.job.product is None
    removed = decision.result is not None and decision.result.status is CardStatus.deleted
    if not (upload or removed):
        return None
    return photo_folder(entry.ref.key)


def _decided_object(decision: Decision) -> ObjectRef:
    """The object an upload's decision is about (its bytes to read, or its row)."""
    if decision.sniff is not None:
        return decision.sniff.ref
    assert decision.result is not None
    return decision.result.object


@dataclass(frozen=True)
class _Planned:
    """One record of a batch on its way: decided (``decision``), or parked (``parked``)."""

    item: Item[MinioEvent]
    record: S3Record
    decision: Decision | None
    parked: Output | None = None
    photo: ObjectRef | None = None
    """A photo of a removed manifest's folder, decided with that removal's ``record``."""

    @property
    def ref(self) -> ObjectRef:
        """The object decided on: the record's, or the released photo."""
        return self.photo if self.photo is not None else self.record.object_ref()

    @property
    def released(self) -> ObjectRef | None:
        return self.decision.released if self.decision is not None else None

    @property
    def sniff(self) -> Sniff | None:
        return self.decision.sniff if self.decision is not None else None

    @property
    def manifest(self) -> Sniff | None:
        return self.decision.manifest if self.decision is not None else None


async def serve(settings: IngestSettings, stop: asyncio.Event) -> None:
    stage = Ingest(settings, stop)
    producer = make_producer(settings)
    consumer = make_consumer(settings, settings.topic_events, group_id=settings.ingest_group)
    runner = StageRunner(
        stage, consumer, producer, group=settings.ingest_group, batch_max=settings.ingest_batch_max
    )

    async def recall() -> None:  # before the consumer joins: nothing is read until it is done
        if settings.dedup_capacity:
            await try_recall_handled(
                settings,
                producer,
                settings.ingest_group,
                settings.bucket,
                settings.dedup_lookback_s,
                stage.recent,
            )

    await runner.serve(stop, before_consume=recall)


def main() -> None:
    settings = IngestSettings()
    run_service("ingest", settings, lambda stop: serve(settings, stop))
