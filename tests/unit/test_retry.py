"""Transient-fault retries: only the named exceptions, backoff logged, stop on request."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.retry import transient


def run(coro):
    return asyncio.run(coro)


def test_retries_transient_errors_until_success(caplog) -> None:
    calls = []
    seen = []

    async def flaky() -> str:
        async for attempt in transient("thing", ConnectionError, on_retry=lambda: seen.append(1)):
            with attempt:
                calls.append(1)
                if len(calls) < 3:
                    raise ConnectionRefusedError("down")
                return "ok"
        raise AssertionError

    assert run(flaky()) == "ok"
    assert len(calls) == 3 and len(seen) == 2
    assert [r.__dict__["what"] for r in caplog.records if r.getMessage() == "retry"] == [
        "thing"
    ] * 2


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    async def broken() -> None:
        async for attempt in transient("thing", ConnectionError):
            with attempt:
                calls.append(1)
                raise ValueError("bad input")

    with pytest.raises(ValueError):
        run(broken())
    assert len(calls) == 1


def test_stop_event_ends_the_retries_with_the_last_error() -> None:
    async def outage() -> None:
        stop = asyncio.Event()
        async for attempt in transient("db", ConnectionError, stop_event=stop):
            with attempt:
                stop.set()
                raise ConnectionResetError("still down")

    with pytest.raises(ConnectionResetError):
        run(outage())
