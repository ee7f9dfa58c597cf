"""The inference service: a Kafka consumer-group member that turns jobs into card results.

    python -m services.inference

One model per process, loaded once before joining the group (``engines.py``); the delivery
mechanics are in ``delivery.py``, what one job becomes in ``job.py``.  This module starts them.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from services.inference import metrics
from services.inference.card.errors import CardError
from services.inference.engine.model_files import ModelFilesError
from services.inference.settings import InferenceSettings
from services.inference.worker.delivery import InferenceWorker
from services.inference.worker.engines import Engine, UnknownEngine, load_engine
from services.inference.worker.job import JobHandler, minio_fetch
from services.runtime.s3 import make_minio
from services.runtime.service import run_service

__all__ = ["InferenceSettings", "JobHandler", "main", "serve"]

log = logging.getLogger("vitrine.inference")

ENGINE_STOP_S = 30.0
"""How long a shutdown waits, once the engine is closed, for the engine calls still in their
threads.  Closing stops every generation at its next decode step; what is left is bounded work
(an image being decoded and resized, one being encoded by the projector), seconds at most.  So
a SIGTERM ends the process within ``VITRINE_SHUTDOWN_GRACE_S`` plus the hand-back (a commit,
leaving the group) plus that: measured, a second or two (tests/stack/test_worker_shutdown.py)."""


async def serve(
    settings: InferenceSettings,
    stop: asyncio.Event,
    handler_type: type[JobHandler] = JobHandler,
) -> None:
    engine = await asyncio.to_thread(load_engine, settings.engine, settings)
    metrics.MODEL_LOAD_SECONDS.set(engine.load_ms / 1000)
    metrics.MODEL_INFO.labels(engine.model_id, engine.prompt.version, settings.engine).set(1)
    log.info(
        "model.loaded",
        extra={
            "model": engine.model_id,
            "engine": settings.engine,
            "load_ms": round(engine.load_ms),
            "prompt_version": engine.prompt.version,
            **engine.describe(),
        },
    )
    handler: JobHandler | None = None
    try:
        fetch = minio_fetch(make_minio(settings), settings.image_max_bytes)
        handler = handler_type(settings, engine, fetch)
        # the engine's slots: up to this many cards generated at once (1 for an engine without)
        parallel = getattr(engine, "parallel", 1)
        await InferenceWorker(settings, handler, parallel=parallel).run(stop)
    finally:
        _close(engine, handler)


def _close(engine: Engine, handler: JobHandler | None) -> None:
    """After the worker handed its jobs back: no engine call starts, the engine stops those
    running (each then refuses: no call reaches a freed model), and their threads end."""
    if handler is not None:
        handler.close()
    engine.close()
    left = handler.wait_idle(ENGINE_STOP_S) if handler is not None else 0
    log.info("engine.closed", extra={"engine_calls_left": left})
    if left:
        log.warning(
            "worker.engine_calls_left",
            extra={"calls": left, "waited_s": ENGINE_STOP_S, "note": "the exit waits for them"},
        )


def main(handler_type: type[JobHandler] = JobHandler) -> None:
    """Start the service; the fault tests start it with a job handler that misbehaves."""
    settings = InferenceSettings()
    try:
        run_service("inference", settings, lambda stop: serve(settings, stop, handler_type))
    except (ModelFilesError, CardError, UnknownEngine) as exc:
        log.error("worker.cannot_start", extra={"error": str(exc)})
        sys.exit(2)
