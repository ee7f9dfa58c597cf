"""One PostgreSQL connection that a stage keeps across outages.

The sink and the export stage each hold one connection and run each batch's statements on it;
when PostgreSQL goes away the batch is retried with backoff on a fresh connection (the broken
one dropped), and nothing is skipped: a stop request ends the waiting instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from services.runtime.retry import transient

T = TypeVar("T")


class Reconnecting:
    """A connection made on first use and made again after an OperationalError."""

    def __init__(self, dsn: str, application_name: str, *, autocommit: bool = False) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.autocommit = autocommit
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                connect_timeout=5,
                application_name=self.application_name,
                autocommit=self.autocommit,
            )
        return self.conn

    async def run(
        self,
        what: str,
        op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        stop: asyncio.Event,
        on_retry: Callable[[], Any],
    ) -> T:
        """``op(connection)`` until it works: an outage delays it, it never drops it."""
        async for attempt in transient(
            what, psycopg.OperationalError, max_wait=10, stop_event=stop, on_retry=on_retry
        ):
            with attempt:
                try:
                    return await op(await self.connection())
                except psycopg.OperationalError:
                    await self.close()
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        self.conn = None
