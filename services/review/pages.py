"""The desk's pages: login, the list, a card, and the forms that change cards.

Server-rendered (Jinja2, autoescaped: model output is untrusted text and never reaches the page
unescaped), plain forms, one small script for keyboard shortcuts.  Every POST carries the
session's CSRF token; a change answers with a redirect (post/redirect/get), a refused edit with
the page again, the person's text kept and the contract's message beside each field.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from minio.error import S3Error

from services.review import decisions, listing, uploads
from services.review.accounts import Role, User, close_session, login, open_session
from services.review.desk import Desk, card_view, desk_of
from services.review.edits import EditRefused, attributes_of, form_changes
from services.review.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    check_origin,
    cookie_options,
    form_session,
    page_session,
    same_token,
)
from services.runtime.s3 import ObjectChanged, ObjectForbidden, ObjectMissing

log = logging.getLogger("vitrine.review")
router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def card_url(bucket: str, key: str, filters: dict[str, str] | None = None) -> str:
    url = f"/cards/{quote(bucket, safe='')}/{quote(key, safe='/')}"
    return f"{url}?{urlencode(filters)}" if filters else url


def image_url(size: str, bucket: str, key: str) -> str:
    return f"/images/{size}/{quote(bucket, safe='')}/{quote(key, safe='/')}"


def shown(value: Any) -> Any:
    """A card field as a person reads it: lists one item after another, attributes as
    ``name: value`` (numbers with their unit), not Python's notation."""
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if isinstance(value, dict):
        parts = [
            f"{k}: {v['value']} {v['unit']}"
            if isinstance(v, dict) and "value" in v
            else f"{k}: {v}"
            for k, v in value.items()
        ]
        return ", ".join(parts) or "—"
    return value


templates.globals.update(card_url=card_url, image_url=image_url)
templates.filters["shown"] = shown


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- login ------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render("login.html", csrf=token, error=error, user=None)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        **cookie_options(request, desk_of(request).settings.review_secure_cookies),
    )
    return response


@router.post("/login")
async def login_submit(request: Request) -> Response:
    desk = desk_of(request)
    check_origin(request)
    form = await request.form()
    if not same_token(str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "-")):
        raise Forbidden("missing or wrong CSRF token: reload the login page")
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    keys = (f"user:{username}", f"addr:{client_address(request)}")
    wait = desk.limiter.retry_after(*keys)
    if wait > 0:
        log.warning("review.login_limited", extra={"user": username})
        response = render(
            "login.html",
            429,
            csrf=str(form.get("csrf")),
            user=None,
            error=f"Too many failed logins: try again in {int(wait) + 1} s.",
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    async with desk.pool.connection() as conn:
        user = await login(conn, username, password)
        if user is None:
            desk.limiter.failed(*keys)
            log.warning("review.login_failed", extra={"user": username})
            return render(
                "login.html",
                401,
                csrf=str(form.get("csrf")),
                user=None,
                error="Wrong username or password.",
            )
        token, _csrf = await open_session(conn, user, desk.settings.review_session_hours)
    desk.limiter.succeeded(keys[0])
    log.info("review.login", extra={"user": user.username})
    redirect = RedirectResponse("/", status_code=303)
    options = cookie_options(request, desk.settings.review_secure_cookies)
    redirect.set_cookie(
        SESSION_COOKIE, token, max_age=int(desk.settings.review_session_hours * 3600), **options
    )
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return redirect


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    session = await form_session(request, str(form.get("csrf", "")), Role.viewer)
    async with desk_of(request).pool.connection() as conn:
        await close_session(conn, request.cookies[SESSION_COOKIE])
    log.info("review.logout", extra={"user": session.user.username})
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- the list ---------------------------------------------------------------------------------


def _filters(request: Request) -> listing.Filters:
    return listing.Filters.parse(dict(request.query_params))


@router.get("/")
async def list_page(request: Request) -> Response:
    session = await page_session(request)
    desk = desk_of(request)
    error = None
    try:
        filters = _filters(request)
    except ValueError as exc:
        filters, error = listing.Filters(), str(exc)
    cursor = request.query_params.get("cursor") or None
    try:
        async with desk.pool.connection() as conn:
            rows, next_cursor = await listing.list_cards(
                conn, filters, limit=desk.settings.review_page_size, cursor=cursor
            )
    except listing.BadCursor as exc:
        rows, next_cursor, error = [], None, str(exc)
    params = filters.query_params()
    return render(
        "list.html",
        user=session.user,
        csrf=session.csrf_token,
        rows=rows,
        filters=filters,
        params=params,
        next_url="/?" + urlencode({**params, "cursor": next_cursor}) if next_cursor else None,
        first_url="/?" + urlencode(params) if cursor else None,
        facets=await desk.facets(),
        roots=[r.name for r in desk.tree.roots],
        error=error,
        message=request.query_params.get("msg"),
        error_flash=request.query_params.get("error") == "1",
        bulk_max=desk.settings.review_bulk_max,
        can_review=session.user.can(Role.reviewer),
        can_bulk=session.user.can(Role.admin),
    )


@router.post("/bulk-approve")
async def bulk_approve(request: Request) -> Response:
    form = await request.form()
    session = await form_session(request, str(form.get("csrf", "")), Role.admin)
    desk = desk_of(request)
    values = {k: str(v) for k, v in form.items() if k != "csrf"}
    filters = listing.Filters.parse(values)
    async with desk.pool.connection() as conn:
        keys = await listing.matching_keys(conn, filters, limit=desk.settings.review_bulk_max)
        ids = await desk.bulk_approve(
            conn, session.user, keys, note=values.get("note") or "bulk approval"
        )
    log.info("review.bulk_approved", extra={"user": session.user.username, "count": len(ids)})
    params = {**filters.query_params(), "msg": f"Approved {len(ids)} cards."}
    return RedirectResponse("/?" + urlencode(params), status_code=303)


@router.post("/upload")
async def upload_page(request: Request) -> Response:
    """The list's upload form: one photo into the bucket, as ``POST /v1/images`` does.  The
    session and role are checked before the body is read, the CSRF token right after."""
    check_origin(request)
    session = await page_session(request)
    if not session.user.can(Role.reviewer):
        raise Forbidden(f"{session.user.role.name} may not upload (reviewer needed)")
    desk = desk_of(request)
    try:
        received = await uploads.read_form(request, desk.settings.image_max_bytes)
        if not same_token(received.fields.get("csrf"), session.csrf_token):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
        stored = await desk.upload(received, None, received.fields.get("prefix") or "uploads")
    except uploads.UploadRefused as exc:
        return RedirectResponse(
            "/?" + urlencode({"msg": f"Not uploaded: {exc}", "error": "1"}), status_code=303
        )
    except S3Error as exc:
        log.error("review.upload_refused", extra={"code": exc.code})
        return RedirectResponse(
            "/?" + urlencode({"msg": f"The bucket refused the upload: {exc.code}", "error": "1"}),
            status_code=303,
        )
    key = f"{desk.settings.bucket}/{stored.key}"
    log.info("review.uploaded", extra={"key": key, "user": session.user.username})
    message = f"Uploaded {key}: its card appears here once the pipeline has written it."
    return RedirectResponse(
        "/?" + urlencode({"prefix": stored.key, "msg": message}), status_code=303
    )


# --- a card -----------------------------------------------------------------------------------


async def _card_page(
    request: Request,
    desk: Desk,
    bucket: str,
    key: str,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    refused: bool = False,
) -> Response:
    session = await page_session(request)
    try:
        filters = _filters(request)
    except ValueError:
        filters = listing.Filters()
    async with desk.pool.connection() as conn:
        row = await listing.card_row(conn, bucket, key)
        if row is None:
            return render(
                "missing.html",
                404,
                user=session.user,
                csrf=session.csrf_token,
                bucket=bucket,
                key=key,
            )
        events = await listing.history(conn, bucket, key)
        before, after = await listing.neighbours(conn, filters, row)
    view = card_view(row, events)
    card = view.card.model_dump() if view.card else {}
    shown = dict(card)
    if form:  # a refused edit: show what the person typed
        shown.update({k: v for k, v in form.items() if k in shown})
        shown["features_list"] = [form.get(f"feature_{i}", "") for i in (1, 2, 3)]
    path = shown.get("category_path")
    params = filters.query_params()
    return render(
        "card.html",
        status,
        user=session.user,
        csrf=session.csrf_token,
        view=view,
        card=shown,
        form=form or {},
        approved=row.get("approved_card") or {},
        model_card=row.get("card") or {},
        attributes=attributes_of(desk.tree, str(path) if path else None),
        leaves=desk.leaf_paths,
        errors=errors or {},
        message=message or request.query_params.get("msg"),
        error_flash=refused,
        params=params,
        back_url="/?" + urlencode(params),
        prev_url=card_url(*before, params) if before else None,
        next_url=card_url(*after, params) if after else None,
        can_review=session.user.can(Role.reviewer),
        colour=view.checks.colour if view.checks else None,
    )


@router.get("/cards/{bucket}/{key:path}")
async def card_page(request: Request, bucket: str, key: str) -> Response:
    return await _card_page(request, desk_of(request), bucket, key)


async def _act(
    desk: Desk, user: User, action: str, bucket: str, key: str, form: dict[str, str]
) -> str:
    """Carry out one button of the card form; the message the card page shows after it."""
    note = (form.get("note") or "").strip() or None
    rev = int(form["rev"]) if form.get("rev", "").isdigit() else None
    async with desk.pool.connection() as conn:
        row = await listing.card_row(conn, bucket, key)
        current = (row or {}).get("edited_card") or (row or {}).get("card") or {}
        changes = form_changes(desk.card_type, current, form) if current else {}
        if action == "save":
            fields = await decisions.edit(conn, desk.card_type, user, bucket, key, changes, rev)
            return f"Saved: {', '.join(fields)}." if fields else "Nothing changed."
        if action == "approve":
            await desk.approve(
                conn, user, bucket, key, note=note, expected_rev=rev, changes=changes
            )
            return "Approved."
        if action == "reject":
            await decisions.reject(conn, user, bucket, key, note=note or "", expected_rev=rev)
            return "Rejected."
        if action == "regenerate":
            await desk.enqueue_regeneration(bucket, key)
            await decisions.regenerate(conn, user, bucket, key, note=note)
            return "Sent back to the workers: the new card will replace this one."
        raise Forbidden(f"unknown action {action!r}", 400)


async def _next_card(
    desk: Desk, filters: listing.Filters, bucket: str, key: str
) -> tuple[str, str] | None:
    """The card after this one in the list the person came from (for "approve, then next")."""
    async with desk.pool.connection() as conn:
        row = await listing.card_row(conn, bucket, key)
        _, after = await listing.neighbours(conn, filters, row) if row else (None, None)
    return after


@router.post("/cards/{bucket}/{key:path}")
async def card_action(request: Request, bucket: str, key: str) -> Response:
    """One form, four buttons: save, approve (after saving), reject (with a note), regenerate."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    session = await form_session(request, form.get("csrf"), Role.reviewer)
    desk = desk_of(request)
    action = form.get("action", "save")
    filters = listing.Filters.parse(dict(request.query_params))
    params = filters.query_params()
    where = f"{bucket}/{key}"
    refusal: tuple[int, dict[str, str], str] | None = None
    try:
        message = await _act(desk, session.user, action, bucket, key, form)
    except EditRefused as exc:
        refusal = (422, exc.fields, "The card was not saved.")
    except decisions.Conflict as exc:
        refusal = (409, {}, str(exc))
    except (TimeoutError, KafkaError) as exc:  # regenerate: the jobs topic is out of reach
        log.warning("review.regenerate_failed", extra={"key": where, "error": repr(exc)})
        refusal = (
            503,
            {},
            "Kafka is out of reach, so the card was not sent back: try again shortly.",
        )
    except ValueError as exc:  # a rejection without a note
        refusal = (422, {"note": str(exc)}, str(exc))
    if refusal is not None:  # the page again, the person's text kept, the reason on top
        status, errors, why = refusal
        return await _card_page(
            request,
            desk,
            bucket,
            key,
            status=status,
            form=form,
            errors=errors,
            message=why,
            refused=True,
        )
    log.info(f"review.{action}", extra={"key": where, "user": session.user.username})
    target = card_url(bucket, key, {**params, "msg": message})
    if action in ("approve", "reject") and form.get("then") == "next":
        after = await _next_card(desk, filters, bucket, key)
        if after:
            target = card_url(*after, {**params, "msg": f"{message} ({where})"})
    return RedirectResponse(target, status_code=303)


# --- photos -----------------------------------------------------------------------------------


@router.get("/images/{size}/{bucket}/{key:path}")
async def image(request: Request, size: str, bucket: str, key: str) -> Response:
    await page_session(request)
    desk = desk_of(request)
    side = {"thumb": desk.settings.review_thumb_px, "large": desk.settings.review_large_px}.get(
        size
    )
    if side is None:
        return Response("unknown size", status_code=404, media_type="text/plain")
    try:
        path = await desk.rendition(bucket, key, side)
    except (ObjectMissing, ObjectForbidden, ObjectChanged) as exc:
        return Response(f"photo unavailable: {exc}", status_code=404, media_type="text/plain")
    except Exception as exc:  # not decodable: the card page says why in the status
        log.warning("review.image_failed", extra={"key": f"{bucket}/{key}", "error": str(exc)})
        return Response("photo cannot be shown", status_code=415, media_type="text/plain")
    if path is None:
        return Response("no such card", status_code=404, media_type="text/plain")
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get("/healthz")
async def healthz() -> Response:
    return Response("ok", media_type="text/plain")
