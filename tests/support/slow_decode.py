"""The inference worker with every llama.cpp decode slowed down, for the shutdown test only.

    python -m tests.support.slow_decode

On the tiny model a card takes about a second, too short for a SIGTERM to land in the middle of
a generation on purpose.  With ``VITRINE_TEST_DECODE_DELAY_S`` set, each ``llama_decode`` made
after the engine has loaded (its self-test runs at full speed) waits that long first, so a card
takes minutes.  The first slowed decode logs ``slow_decode.generating`` (a generation is running
now); a decode once the engine's model was freed would log ``slow_decode.after_close``, which
must never happen.  Like ``fault_services.py``, this is the one place that reads the variable:
the product reads none whose only purpose is to slow it down.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from services.inference.settings import InferenceSettings
from services.inference.worker import service as worker
from services.inference.worker.engines import Engine
from services.inference.worker.job import Fetch, JobHandler

log = logging.getLogger("vitrine.fault_injection")


class SlowDecodeHandler(JobHandler):
    """Built once the engine has loaded: the moment to slow its decodes down."""

    def __init__(self, settings: InferenceSettings, engine: Engine, fetch: Fetch) -> None:
        super().__init__(settings, engine, fetch)
        delay = float(os.environ.get("VITRINE_TEST_DECODE_DELAY_S", "0"))
        if delay > 0:
            slow_decodes(engine, delay)


def slow_decodes(engine: Engine, delay: float) -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as module

    real = module.llama_decode
    said = False

    def slow_decode(ctx: Any, batch: Any) -> int:
        nonlocal said
        if getattr(engine, "_closed", False):
            log.error("slow_decode.after_close")
        if not said:
            said = True
            log.warning("slow_decode.generating", extra={"delay_s": delay})
        time.sleep(delay)
        return int(real(ctx, batch))

    # the one-at-a-time path decodes through llama_cpp._internals, the slots through the package
    module.llama_decode = slow_decode
    llama_cpp.llama_decode = slow_decode


if __name__ == "__main__":
    worker.main(SlowDecodeHandler)
