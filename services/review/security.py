"""Who is asking, and whether they may: sessions, API tokens, CSRF and response headers.

Browser requests carry a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) and every
state-changing form a CSRF token bound to the session, compared in constant time; a cross-site
request is also refused by its ``Origin``.  API clients send ``Authorization: Bearer <token>``
(no cookie, so no CSRF); the desk's own scripts may use the session instead, with the token in
an ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from services.review.accounts import Role, Session, User, session_of, token_user

SESSION_COOKIE = "vitrine_session"
LOGIN_CSRF_COOKIE = "vitrine_login_csrf"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The API's documentation pages start Swagger UI / ReDoc with an inline script; they show no
# model output, so only they may run one.
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; frame-ancestors 'none'"
)
CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class NotSignedIn(Exception):
    """A page needs a session: the desk answers with a redirect to the login page."""


class Forbidden(Exception):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"  # uvicorn's proxy headers set it behind a proxy


def secure_cookie(request: Request, policy: str) -> bool:
    return policy == "always" or (policy == "auto" and is_https(request))


def cookie_options(request: Request, policy: str) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": secure_cookie(request, policy),
        "path": "/",
    }


def check_origin(request: Request) -> None:
    """A state-changing browser request must come from the desk's own pages."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser on same-origin form posts
        return
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("cross-site request refused")


async def request_session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    cached = request.scope.get("vitrine.session", False)
    if cached is not False:
        return cached
    async with request.app.state.desk.pool.connection() as conn:
        session = await session_of(conn, token)
    request.scope["vitrine.session"] = session
    return session


async def page_session(request: Request) -> Session:
    session = await request_session(request)
    if session is None:
        raise NotSignedIn()
    return session


async def form_session(request: Request, csrf: str | None, needed: Role) -> Session:
    """The session of a submitted form, its CSRF token checked, its role sufficient."""
    check_origin(request)
    session = await page_session(request)
    if not same_token(csrf, session.csrf_token):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    if not session.user.can(needed):
        raise Forbidden(f"{session.user.role.name} may not do this ({needed.name} needed)")
    return session


async def api_user(request: Request, needed: Role) -> User:
    """The caller of ``/v1``: a Bearer token, or the desk's session with its CSRF header."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        async with request.app.state.desk.pool.connection() as conn:
            user = await token_user(conn, header[7:].strip())
        if user is None:
            raise Forbidden("invalid API token", 401)
    else:
        session = await request_session(request)
        if session is None:
            raise Forbidden("sign in, or send Authorization: Bearer <token>", 401)
        if request.method in UNSAFE:
            check_origin(request)
            if not same_token(request.headers.get("x-csrf-token"), session.csrf_token):
                raise Forbidden("missing or wrong X-CSRF-Token header")
        user = session.user
    if not user.can(needed):
        raise Forbidden(f"{user.role.name} may not do this ({needed.name} needed)")
    return user


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        headers = response.headers
        headers.setdefault(
            "Content-Security-Policy", DOCS_CSP if request.url.path in DOCS_PATHS else CSP
        )
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if "cache-control" not in headers:
            headers["Cache-Control"] = "no-store"
        if is_https(request):
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
