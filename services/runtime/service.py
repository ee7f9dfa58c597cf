"""Running one service process: JSON logs, /metrics, and SIGTERM/SIGINT as a stop event."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from services.runtime.logs import setup_logging
from services.runtime.metrics import serve_metrics
from services.runtime.settings import KafkaSettings


def run_service(
    name: str, settings: KafkaSettings, body: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run ``body(stop)`` until it returns; ``stop`` is set on SIGTERM or SIGINT so the body can
    finish its current unit of work, commit, and leave its consumer group cleanly."""
    setup_logging(name, settings.log_level)
    serve_metrics(settings.metrics_port, settings.metrics_host)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await body(stop)

    asyncio.run(main())
