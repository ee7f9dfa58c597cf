"""The desk's ASGI app: pages, ``/v1``, static files, and how refusals are answered."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import Histogram
from starlette.exceptions import HTTPException

from services.review import api, exports, pages
from services.review.accounts import PasswordChecks
from services.review.bodies import document_bodies
from services.review.body_limit import BodyLimit, BodyTooLarge
from services.review.desk import open_desk
from services.review.security import Forbidden, NotSignedIn, SecurityHeaders
from services.review.settings import ReviewSettings

log = logging.getLogger("vitrine.review")
HERE = Path(__file__).resolve().parent
# They check the caller before reading their body, and read it under their own, larger, cap
# (VITRINE_IMAGE_MAX_BYTES and the form's overhead: uploads.read_form).
UPLOAD_ROUTES = frozenset({("POST", "/v1/images"), ("POST", "/upload")})
FRAMEWORK_ERRORS = {
    404: ("not_found", "nothing at this path (a key with a control character is no object)"),
    405: ("method_not_allowed", "this path does not take that method"),
}

REQUEST_SECONDS = Histogram(
    "vitrine_review_request_seconds",
    "Time to answer a request, by route and status class.",
    ["route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)


async def timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every request timed, into the histogram and the ``Server-Timing`` header."""
    started = time.perf_counter()
    response = await call_next(request)
    seconds = time.perf_counter() - started
    route = request.scope.get("route")
    REQUEST_SECONDS.labels(
        getattr(route, "path", "other"), f"{response.status_code // 100}xx"
    ).observe(seconds)
    # The time the desk spent, for the browser's devtools and bench/review_bench.py.
    response.headers["Server-Timing"] = f"app;dur={seconds * 1000:.1f}"
    return response


def too_large(path: str, limit: int) -> Response:
    """The 413 for a body over VITRINE_REVIEW_BODY_MAX_BYTES: a problem for ``/v1``, the
    error page otherwise; the connection is closed, so the rest of the body is never read."""
    message = f"the request body is over the limit of {limit} bytes"
    response: Response
    if path.startswith("/v1"):
        body = {"error": "body_too_large", "message": message, "fields": {}}
        response = JSONResponse(body, status_code=413)
    else:
        response = pages.render("error.html", 413, user=None, message=message)
    response.headers["Connection"] = "close"
    return response


def answer_refusals(app: FastAPI) -> None:
    """How refusals are answered: a page for a person (the login page when not signed in),
    a :class:`schemas.api.Problem` for ``/v1``."""

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if request.url.path.startswith("/v1"):
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return JSONResponse(
                {
                    "error": "unauthorized" if exc.status == 401 else "forbidden",
                    "message": str(exc),
                    "fields": {},
                },
                status_code=exc.status,
                headers=headers,
            )
        return pages.render("error.html", exc.status, user=None, message=str(exc))

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> Response:
        return too_large(request.url.path, exc.limit)

    @app.exception_handler(HTTPException)
    async def framework_refusal(request: Request, exc: HTTPException) -> Response:
        """The router's own refusals (no route: 404, a wrong method: 405) as a problem under
        ``/v1``, like every other answer there: a path no route can take (a key with a line
        feed, which ``{key:path}`` does not match) included.  Pages keep FastAPI's answer."""
        if not request.url.path.startswith("/v1"):
            return await http_exception_handler(request, exc)
        error, message = FRAMEWORK_ERRORS.get(exc.status_code, ("refused", str(exc.detail)))
        response = api.problem_response(api.ApiProblem(exc.status_code, error, message))
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    @app.exception_handler(api.ApiProblem)
    async def problem(request: Request, exc: api.ApiProblem) -> Response:
        return api.problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        fields = {".".join(str(p) for p in e["loc"][1:]) or "body": e["msg"] for e in exc.errors()}
        return JSONResponse(
            {
                "error": "invalid_request",
                "message": "the request breaks the contract",
                "fields": fields,
            },
            status_code=422,
        )


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.password_checks = checks = PasswordChecks(settings.review_password_checks)
        try:
            async with open_desk(settings) as desk:
                app.state.desk = desk
                log.info(
                    "review.started",
                    extra={
                        "url": f"http://{settings.review_host}:{settings.review_port}/",
                        "bucket": settings.bucket,
                        "tree": desk.tree.name,
                    },
                )
                yield
        finally:
            checks.close()
        log.info("review.stopped")

    # Swagger UI and ReDoc served from the package, not a CDN (the desk may run offline).
    app = FastAPIOffline(
        title="vitrine review desk",
        version="1",
        summary="Upload photos, read cards and their status, edit, approve and reject them.",
        lifespan=lifespan,
    )
    # innermost of the middleware: the 413s it answers get the security headers and timing
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.review_body_max_bytes,
        exempt=UPLOAD_ROUTES,
        too_large=too_large,
    )
    app.add_middleware(SecurityHeaders)
    app.middleware("http")(timing)
    answer_refusals(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(exports.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    document_bodies(app)
    return app
