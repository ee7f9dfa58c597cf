"""One job: ``ImageJob`` → ``CardResult``, every outcome a final status with a stable reason.

The object is fetched *by key* (bytes never travel through Kafka), the engine runs in a thread,
and whatever happens — the object gone or replaced, the image unusable, the model failing, a bug
— becomes a result the sink can write.  Nothing here knows about Kafka: the delivery mechanics
(``delivery.py``) call :meth:`JobHandler.__call__` and publish what it returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from schemas.facts import ProductFacts
from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef
from schemas.reasons import Reason
from services.inference import metrics
from services.inference.card.errors import CardError, EngineClosed, ImageError
from services.inference.card.outcome import CardOutcome
from services.inference.settings import InferenceSettings
from services.inference.worker.engines import Engine
from services.inference.worker.results import done, from_error, not_done
from services.runtime.retry import transient
from services.runtime.s3 import (
    ObjectChanged,
    ObjectForbidden,
    ObjectMissing,
    ObjectTooLarge,
    read_object,
)

log = logging.getLogger("vitrine.inference")

FETCH_OUTCOMES: dict[type[Exception], tuple[CardStatus, Reason]] = {
    ObjectMissing: (CardStatus.failed, Reason.object_missing),
    ObjectChanged: (CardStatus.failed, Reason.superseded),
    ObjectTooLarge: (CardStatus.rejected, Reason.image_too_large),
    ObjectForbidden: (CardStatus.failed, Reason.access_denied),
}
"""What each permanent fetch failure means for the object's row (transient ones are retried)."""

Fetch = Callable[[ObjectRef], Awaitable[bytes]]


def minio_fetch(minio: Minio, max_bytes: int) -> Fetch:
    """Read the object as the job names it, retrying transient S3 faults (5xx, refused, reset)
    until it works; a permanent one (see :data:`FETCH_OUTCOMES`) is raised."""

    async def fetch(ref: ObjectRef) -> bytes:
        async for attempt in transient(
            "s3.get",
            (S3Error, HTTPError, OSError),
            on_retry=metrics.RETRIES.labels("s3.get").inc,
        ):
            with attempt:
                return await asyncio.to_thread(read_object, minio, ref, max_bytes)
        raise AssertionError("unreachable")

    return fetch


class JobHandler:
    """Turns a job into its result; the one place a job's outcome is decided.

    It may be awaited for ``engine.parallel`` jobs at once: each engine call gets a thread of
    its own (asyncio's default pool has as few as 5), so a batched engine sees every job the
    worker has in flight.  :meth:`close` shuts that pool: the process ends only once its threads
    have, so the service closes it, closes the engine (which ends their calls) and waits for
    them (:meth:`wait_idle`)."""

    def __init__(self, settings: InferenceSettings, engine: Engine, fetch: Fetch) -> None:
        self.settings = settings
        self.engine = engine
        self.fetch = fetch
        self._threads = ThreadPoolExecutor(
            max_workers=max(engine.parallel, 1), thread_name_prefix="vitrine-engine"
        )
        self._calls = 0
        self._idle = threading.Condition()

    def close(self) -> None:
        """No engine call starts any more; those queued are dropped (the ones running end with
        the engine's close)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the engine calls in their threads to end; how many
        are still running."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._calls and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            return self._calls

    def _card(self, photos: list[bytes], facts: ProductFacts | None, main: int = 0) -> CardOutcome:
        """The engine call, in its thread, counted while it runs."""
        with self._idle:
            self._calls += 1
        try:
            if len(photos) > 1:
                return self.engine.card_for_photos(photos, facts=facts, main=main)
            if facts is None:  # an engine that predates facts (a stand-in) takes none
                return self.engine.card_for_bytes(photos[0])
            return self.engine.card_for_bytes(photos[0], facts=facts)
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    async def __call__(self, job: ImageJob) -> CardResult:
        result = await self.result_for(job)
        report(job, result)
        return result

    async def result_for(self, job: ImageJob) -> CardResult:
        started = time.perf_counter()
        if job.object.bucket != self.settings.bucket:  # forged or misrouted: not ours to read
            return not_done(
                job,
                status=CardStatus.failed,
                reason=Reason.foreign_bucket,
                detail=f"this worker serves bucket {self.settings.bucket!r}",
            )
        try:
            photos = await self._photos(job)
        except ProductIncomplete as exc:
            return not_done(
                job,
                status=CardStatus.failed,
                reason=Reason.product_incomplete,
                detail=str(exc),
                total_ms=_ms_since(started),
            )
        except tuple(FETCH_OUTCOMES) as exc:
            status, reason = FETCH_OUTCOMES[type(exc)]
            return not_done(
                job, status=status, reason=reason, detail=str(exc), total_ms=_ms_since(started)
            )
        fetch_ms = _ms_since(started)
        metrics.STAGE_SECONDS.labels("fetch").observe(fetch_ms / 1000)
        try:
            facts = job.facts.facts if job.facts and not job.facts.facts.empty else None
            main = job.product.main if job.product else 0
            outcome = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._card, photos, facts, main
            )
        except EngineClosed:
            raise  # the worker is stopping: no result for this job, which is redelivered
        except CardError as exc:
            result = from_error(
                job,
                exc,
                model_id=self.engine.model_id,
                prompt_version=self.engine.prompt.version,
                fetch_ms=fetch_ms,
                total_ms=_ms_since(started),
            )
            bad = bad_photo(job, exc)
            if bad is None:
                return result
            return result.model_copy(update={"detail": f"{bad}: {result.detail}"[:2000]})
        except Exception as exc:  # a bug must fail this job, not the service
            log.exception("job.crashed", extra={"key": job.object.key, "trace_id": job.trace_id})
            return not_done(
                job,
                status=CardStatus.failed,
                reason=Reason.internal_error,
                detail=f"{type(exc).__name__}: {exc}",
                total_ms=_ms_since(started),
            )
        record_outcome(outcome)
        return done(job, outcome, fetch_ms, _ms_since(started))

    async def _photos(self, job: ImageJob) -> list[bytes]:
        """The job's photo, or a product's photos in order: each fetched by key (the latest
        version; a manifest names photos, not versions), a missing one waited for up to
        ``VITRINE_PRODUCT_PHOTO_WAIT_S`` (its upload may still be on its way), then the
        product fails ``product_incomplete`` naming it: never stuck ``queued``."""
        if job.product is None:
            return [await self.fetch(job.object)]
        limit = self.settings.product_max_photos
        if len(job.product.photos) > limit:
            raise ProductIncomplete(
                f"{len(job.product.photos)} photos; this worker reads at most {limit} "
                "(VITRINE_PRODUCT_MAX_PHOTOS)"
            )
        deadline = time.monotonic() + self.settings.product_photo_wait_s
        photos = []
        for key in job.product.photos:
            ref = ObjectRef(
                bucket=job.object.bucket,
                key=key,
                sequencer=job.object.sequencer,
                event_time=job.object.event_time,
            )
            while True:
                try:
                    photos.append(await self.fetch(ref))
                    break
                except ObjectMissing:
                    if time.monotonic() >= deadline:
                        raise ProductIncomplete(
                            f"{key} is missing (waited {self.settings.product_photo_wait_s:g} s)"
                        ) from None
                    await asyncio.sleep(min(2.0, max(deadline - time.monotonic(), 0.0)))
                except tuple(FETCH_OUTCOMES) as exc:  # the row names the photo, not only why
                    if key in str(exc):
                        raise
                    raise type(exc)(f"{key}: {exc}") from exc
        return photos


class ProductIncomplete(Exception):
    """A product's photo did not arrive in time (or there are too many)."""


def bad_photo(job: ImageJob, exc: CardError) -> str | None:
    """The key of the product's photo that ``exc`` is about, or None (not a product, or not
    one photo's fault).

    A product's row is the manifest's, so "corrupt JPEG" alone would not say which of its
    photos to fix: an engine that finds photo ``i`` unusable raises its :class:`ImageError`
    with ``photo_index = i`` (``CardEngine.card_for_photos``), and a product of one photo is
    made by ``card_for_bytes``, whose image error can only be that photo's."""
    if job.product is None or not isinstance(exc, ImageError):
        return None
    photos = job.product.photos
    index = exc.photo_index
    if index is None and len(photos) == 1:
        index = 0
    if isinstance(index, int) and 0 <= index < len(photos):
        return photos[index]
    return None


def report(job: ImageJob, result: CardResult) -> None:
    """The job's log line and counters, for every outcome."""
    metrics.JOBS.labels(result.status.value, result.reason or "").inc()
    if result.timings is not None:  # every outcome, not only cards
        metrics.STAGE_SECONDS.labels("total").observe(result.timings.total_ms / 1000)
    log.info(
        f"card.{result.status.value}",
        extra={
            "key": f"{job.object.bucket}/{job.object.key}",
            "trace_id": job.trace_id,
            "job_id": str(job.job_id),
            "reason": result.reason,
            "attempts": result.attempts,
            "timings": result.timings.model_dump() if result.timings else None,
            "checks": result.checks.model_dump(exclude_none=True) if result.checks else None,
        },
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def record_outcome(outcome: CardOutcome) -> None:
    """A card's stage times, speed, attempts and colour verdict, into the worker's metrics."""
    t = outcome.timings
    for stage, ms in (
        ("preprocess", t.preprocess_ms),
        ("encode", t.image_encode_ms),
        ("prompt_eval", t.prompt_eval_ms),
        ("generate", t.generate_ms),
    ):
        metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000)
    metrics.TOKENS_PER_SECOND.observe(t.tokens_per_s)
    metrics.ATTEMPTS.observe(outcome.attempts)
    colour = outcome.checks.colour if outcome.checks else None
    if colour is not None:
        verdict = (
            "uncheckable" if not colour.checkable else ("agrees" if colour.agrees else "disagrees")
        )
        metrics.COLOUR_CHECKS.labels(verdict, colour.action).inc()
