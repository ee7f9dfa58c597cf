"""The desk's bound on request bodies, applied before any route reads one or checks its caller.

A stranger must not make the desk hold a body it will refuse anyway: without a bound, FastAPI and
the form parser read a 50 MB JSON body or spool a 200 MB multipart form to disk before the route
even asks who is calling.  This pure ASGI middleware (not ``BaseHTTPMiddleware``, which would
stand between the app and the body it streams) refuses a body over the limit with 413:

* a declared ``Content-Length`` over it before a byte of the body is read;
* a chunked body (no length) the moment it passes the limit: the route reading it gets
  :class:`BodyTooLarge` from ``receive``, answered 413 by the app's handler, or here when it
  escapes the app before an answer started.

Every 413 closes the connection, so the rest of the body is not read either.  The upload routes
are exempt: they check the caller first and read their larger body under their own cap
(``uploads.read_form``).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TooLarge = Callable[[str, int], Response]  # (the request's path, the limit) -> the 413 answer


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.  An ``HTTPException`` so
    that FastAPI's body parsing passes it on (it turns other errors into a 400) to the app's
    handler for it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")
        self.limit = limit


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None  # the server refuses a bad one
    return None


class BodyLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: frozenset[tuple[str, str]], too_large: TooLarge
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt  # (method, path) pairs that bound their own bodies
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self.refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, watched)
        except BodyTooLarge:
            if started:
                raise
            await self.refuse(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.too_large(scope["path"], self.max_bytes)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
