"""The services with faults injected, for the fault tests only.

    python -m tests.support.fault_services inference|sink

The product reads no variable whose only purpose is to break it; this module does, and starts
the real service with a job handler or a sink that misbehaves where the variable says:

- ``VITRINE_FAULT_CRASH_ON_KEY`` (inference): SIGKILL the worker on a job whose key contains
  this text, after taking it and before its result, as a segfault or the OOM killer would;
- ``VITRINE_FAULT_SLOW_ON_KEY`` + ``VITRINE_FAULT_SLOW_S`` (inference): such jobs take that much
  longer, like a multi-minute CPU inference;
- ``VITRINE_FAULT_CRASH_BEFORE_COMMIT_ONCE`` = a file (sink): after the first batch's
  transaction, create the file and SIGKILL the sink before its offsets are committed.

The bench engine (``bench/bench_engine.py``) is registered too, for the tests that need a fast
stand-in for the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from schemas.messages import CardResult, ImageJob
from services.inference.worker import service as worker
from services.inference.worker.job import JobHandler
from services.runtime.service import run_service
from services.sink import service as sink_service

log = logging.getLogger("vitrine.fault_injection")


class FaultyHandler(JobHandler):
    async def result_for(self, job: ImageJob) -> CardResult:
        key = job.object.key
        slow_on = os.environ.get("VITRINE_FAULT_SLOW_ON_KEY")
        if slow_on and slow_on in key:
            seconds = float(os.environ.get("VITRINE_FAULT_SLOW_S", "0"))
            log.warning("fault_injection.slow", extra={"key": key, "seconds": seconds})
            await asyncio.to_thread(time.sleep, seconds)
        crash_on = os.environ.get("VITRINE_FAULT_CRASH_ON_KEY")
        if crash_on and crash_on in key:
            log.warning("fault_injection.crash", extra={"key": key})
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().result_for(job)


class FaultySink(sink_service.Sink):
    def before_commit(self) -> None:
        marker = os.environ.get("VITRINE_FAULT_CRASH_BEFORE_COMMIT_ONCE")
        if marker and not Path(marker).exists():
            Path(marker).touch()
            log.warning("fault_injection.crash_before_commit")
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "inference":
        from bench.bench_engine import register

        register()
        worker.main(FaultyHandler)
    elif which == "sink":
        settings = sink_service.SinkSettings()
        run_service("sink", settings, lambda stop: sink_service.serve(settings, stop, FaultySink))
    else:
        raise SystemExit("usage: python -m tests.support.fault_services inference|sink")


if __name__ == "__main__":
    main()
