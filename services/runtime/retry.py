"""Retrying transient faults (a server restarting) with exponential backoff, logged per attempt.

Permanent faults are not retried: only the exception types a caller names as transient are.
Services usually retry *without* a deadline — an outage delays work, it must not drop it — but
give up when they are asked to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

log = logging.getLogger("vitrine.retry")


def transient(
    what: str,
    exceptions: type[BaseException] | tuple[type[BaseException], ...],
    *,
    max_seconds: float | None = None,
    max_wait: float = 30.0,
    stop_event: asyncio.Event | None = None,
    on_retry: Callable[[], Any] | None = None,
    when: Callable[[BaseException], bool] | None = None,
) -> AsyncRetrying:
    """Retry ``exceptions`` (narrowed further by ``when``, if given) with backoff."""

    def stop(state: RetryCallState) -> bool:
        if stop_event is not None and stop_event.is_set():
            return True
        return max_seconds is not None and (state.seconds_since_start or 0) >= max_seconds

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry()
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "retry",
            extra={
                "what": what,
                "attempt": state.attempt_number,
                "delay_s": round(state.upcoming_sleep, 2),
                "error": f"{type(error).__name__}: {error}"[:300],
            },
        )

    return AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, exceptions) and (when is None or when(e))),
        wait=wait_exponential(multiplier=0.2, max=max_wait),
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
    )
