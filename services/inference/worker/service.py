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
from services.inference.worker.engines import UnknownEngine, load_engine
from services.inference.worker.job import JobHandler, minio_fetch
from services.runtime.s3 import make_minio
from services.runtime.service import run_service

__all__ = ["InferenceSettings", "JobHandler", "main", "serve"]

log = logging.getLogger("vitrine.inference")


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
    try:
        fetch = minio_fetch(make_minio(settings), settings.image_max_bytes)
        handler = handler_type(settings, engine, fetch)
        # the engine's slots: up to this many cards generated at once (1 for an engine without)
        parallel = getattr(engine, "parallel", 1)
        await InferenceWorker(settings, handler, parallel=parallel).run(stop)
    finally:
        engine.close()


def main(handler_type: type[JobHandler] = JobHandler) -> None:
    """Start the service; the fault tests start it with a job handler that misbehaves."""
    settings = InferenceSettings()
    try:
        run_service("inference", settings, lambda stop: serve(settings, stop, handler_type))
    except (ModelFilesError, CardError, UnknownEngine) as exc:
        log.error("worker.cannot_start", extra={"error": str(exc)})
        sys.exit(2)
