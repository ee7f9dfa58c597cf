"""The desk's pages: login, the list, a card, and the forms that change cards.

Server-rendered (Jinja2, autoescaped: model output is untrusted text and never reaches the page
unescaped), plain forms, one small script for keyboard shortcuts.  Every POST carries the
session's CSRF token; a change answers with a redirect (post/redirect/get), a refused edit with
the page again, the person's text kept and the contract's message beside each field.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from minio.error import S3Error
from pydantic import ValidationError

from schemas.api import EDITABLE_FIELDS, NOTE_MAX, Decision
from services.review import decisions, listing, quality, uploads
from services.review.accounts import Role, Session, User, close_session, login, open_session
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
from services.review.uploads import REFUSALS
from services.runtime.object_keys import object_path
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
    """A card page's link, its key percent-encoded as the API's status URL is (object_path)."""
    url = f"/cards/{object_path(bucket, key)}"
    return f"{url}?{urlencode(filters)}" if filters else url


def image_url(size: str, bucket: str, key: str) -> str:
    return f"/images/{size}/{object_path(bucket, key)}"


NOTICES: dict[str, tuple[str, bool]] = {
    "Saved": ("Saved.", False),
    "Unchanged": ("Nothing changed.", False),
    "Approved": ("Approved.", False),
    "ApprovedNext": ("Approved. This is the next card of the list.", False),
    "Rejected": ("Rejected.", False),
    "RejectedNext": ("Rejected. This is the next card of the list.", False),
    "Regenerated": ("Sent back to the workers: the new card will replace this one.", False),
    "Uploaded": ("Uploaded: its card appears here once the pipeline has written it.", False),
    "BucketRefused": ("Not uploaded: the bucket refused the upload.", True),
    **{f"NotUploaded-{code}": (f"Not uploaded: {why}", True) for code, why in REFUSALS.items()},
}
"""What ``?msg=`` can make a page say: the desk's own codes, each a fixed text (and whether it
is an error).  Any other value shows nothing: a link that makes the desk say any text is a
phishing tool, however well escaped."""


def flash(message: str | None, refused: bool, params: Mapping[str, str]) -> dict[str, Any]:
    """A page's flash: the desk's own message of this request, else its ``msg`` code's."""
    text, bad = (message, refused) if message else notice(params)
    return {"message": text, "error_flash": bad}


BULK_APPROVED = re.compile(r"Approved [0-9]{1,7} cards\.")
"""The one code with a number in it: a bulk approval's count."""


def notice(params: Mapping[str, str]) -> tuple[str | None, bool]:
    """The flash message of a page's ``msg`` code, and whether it is an error."""
    code = params.get("msg") or ""
    if BULK_APPROVED.fullmatch(code):
        return code, False
    return NOTICES.get(code, (None, False))


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


templates.globals.update(card_url=card_url, image_url=image_url, duration=quality.duration)
templates.filters["shown"] = shown


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def refused_page(session: Session, message: str, status: int = 422) -> HTMLResponse:
    """The error page for a form or link the desk did not make (the message is the desk's)."""
    return render("error.html", status, user=session.user, csrf=session.csrf_token, message=message)


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
    """The login form.  Its body is bounded before it is read (body_limit.BodyLimit); the
    attempt takes its place in the user's and the address's budgets in one step before anything
    else is awaited, so a burst checks no more passwords than the limits allow; the password is
    checked in a thread (accounts.PasswordChecks), never on the event loop."""
    desk = desk_of(request)
    check_origin(request)
    form = await request.form()
    csrf = str(form.get("csrf", ""))
    if not same_token(csrf, request.cookies.get(LOGIN_CSRF_COOKIE, "-")):
        raise Forbidden("missing or wrong CSRF token: reload the login page")
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    keys = (f"user:{username}", f"addr:{client_address(request)}")
    reserved = desk.limiter.reserve(*keys)
    if reserved is None:
        wait = int(desk.limiter.retry_after(*keys)) + 1
        log.warning("review.login_limited", extra={"user": username})
        error = f"Too many failed logins: try again in {wait} s."
        response = render("login.html", 429, csrf=csrf, user=None, error=error)
        response.headers["Retry-After"] = str(wait)
        return response
    user = await login(desk.pool, request.app.state.password_checks, username, password)
    if user is None:  # the reservation stays, as a failure
        log.warning("review.login_failed", extra={"user": username})
        error = "Wrong username or password."
        return render("login.html", 401, csrf=csrf, user=None, error=error)
    desk.limiter.succeeded(*keys, at=reserved)
    async with desk.pool.connection() as conn:
        token, _csrf = await open_session(conn, user, desk.settings.review_session_hours)
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
    """The session is checked before the form is read (no session: to the login page, the
    body unread), its CSRF token from the form after."""
    check_origin(request)
    await page_session(request)
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
    except listing.BadQuery as exc:
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
    message, bad = notice(request.query_params)
    return render(
        "list.html",
        422 if error else 200,  # a filter or cursor the desk did not make: the list, refused
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
        message=message,
        error_flash=bad,
        bulk_max=desk.settings.review_bulk_max,
        can_review=session.user.can(Role.reviewer),
        can_bulk=session.user.can(Role.admin),
    )


@router.post("/bulk-approve")
async def bulk_approve(request: Request) -> Response:
    await page_session(request)  # not signed in: to the login page, the body unread
    form = await request.form()
    session = await form_session(request, str(form.get("csrf", "")), Role.admin)
    desk = desk_of(request)
    values = {k: str(v) for k, v in form.items() if k != "csrf"}
    try:
        filters = listing.Filters.parse(values)
        note = form_note(values) or "bulk approval"
    except ValueError as exc:  # a filter or note the list's form never sends
        return refused_page(session, str(exc))
    async with desk.pool.connection() as conn:
        keys = await listing.matching_keys(conn, filters, limit=desk.settings.review_bulk_max)
        ids = await desk.bulk_approve(conn, session.user, keys, note=note)
    log.info("review.bulk_approved", extra={"user": session.user.username, "count": len(ids)})
    params = {**filters.query_params(), "msg": f"Approved {len(ids)} cards."}
    return RedirectResponse("/?" + urlencode(params), status_code=303)


@router.post("/upload")
async def upload_page(request: Request) -> Response:
    """The list's upload form: one photo into the bucket, as ``POST /v1/images`` does, or
    several as one product, as ``POST /v1/products`` does, with the shop's facts.  The
    session and role are checked before the body is read, the CSRF token right after."""
    check_origin(request)
    session = await page_session(request)
    if not session.user.can(Role.reviewer):
        raise Forbidden(f"{session.user.role.name} may not upload (reviewer needed)")
    desk = desk_of(request)
    try:
        received = await uploads.read_form(
            request, desk.settings.image_max_bytes, files=desk.settings.product_max_photos + 1
        )
        if not same_token(received.fields.get("csrf"), session.csrf_token):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
        prefix = received.fields.get("prefix") or "uploads"
        if len(received.photos) > 1:  # several photos: one product (schemas/products.py)
            stored, _photos = await desk.upload_product(received, None, prefix)
        else:
            stored = await desk.upload(received, None, prefix)
    except uploads.UploadRefused as exc:
        code = f"NotUploaded-{exc.code}" if f"NotUploaded-{exc.code}" in NOTICES else ""
        return RedirectResponse("/?" + urlencode({"msg": code, "error": "1"}), status_code=303)
    except S3Error as exc:
        log.error("review.upload_refused", extra={"code": exc.code})
        return RedirectResponse(
            "/?" + urlencode({"msg": "BucketRefused", "error": "1"}), status_code=303
        )
    key = f"{desk.settings.bucket}/{stored.key}"
    log.info("review.uploaded", extra={"key": key, "user": session.user.username})
    return RedirectResponse(
        "/?" + urlencode({"prefix": stored.key, "msg": "Uploaded"}), status_code=303
    )


@router.get("/quality")
async def quality_page(request: Request) -> Response:
    """Review quality by model and prompt version (``GET /v1/quality`` as a page), for anyone
    signed in; ``?bucket=`` narrows it to one bucket."""
    session = await page_session(request)
    desk = desk_of(request)
    error = None
    try:
        bucket = quality.bucket_filter(request.query_params.get("bucket"))
    except ValueError as exc:
        bucket, error = None, str(exc)
    groups = []
    if error is None:
        async with desk.pool.connection() as conn:
            groups = (await quality.summary(conn, bucket)).groups
    return render(
        "quality.html",
        422 if error else 200,
        user=session.user,
        csrf=session.csrf_token,
        bucket=bucket,
        groups=groups,
        fields=EDITABLE_FIELDS,
        error=error,
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
    except listing.BadQuery:
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
        **flash(message, refused, request.query_params),
        params=params,
        back_url="/?" + urlencode(params),
        prev_url=card_url(*before, params) if before else None,
        next_url=card_url(*after, params) if after else None,
        can_review=session.user.can(Role.reviewer),
        colour=view.checks.colour if view.checks else None,
        facts=view.facts,
        bound=view.checks.facts if view.checks else None,
        channels=desk.verdicts(row),
    )


@router.get("/cards/{bucket}/{key:path}")
async def card_page(request: Request, bucket: str, key: str) -> Response:
    return await _card_page(request, desk_of(request), bucket, key)


def form_note(form: Mapping[str, str]) -> str | None:
    """The form's note, held to the API's contract (``Decision``: at most ``NOTE_MAX``
    characters, no NUL): a ValueError with the desk's own message, not Pydantic's."""
    note = (form.get("note") or "").strip() or None
    try:
        Decision(note=note)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "string_too_long":
            raise ValueError(f"the note is longer than {NOTE_MAX} characters") from None
        raise ValueError(f"the note {error['msg']}") from None
    return note


def form_rev(form: Mapping[str, str]) -> int | None:
    """The ``rev`` the card page wrote into its form; None when absent.  Anything but a plain
    number of at most nine ASCII digits (``²`` is a digit to ``str.isdigit``, 5,000 digits are
    too many for ``int``) is a form the desk did not write: a ValueError."""
    text = form.get("rev") or ""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise ValueError("the form's revision is not one the desk wrote: reload the card")
    return int(text)


async def _act(
    desk: Desk,
    user: User,
    action: str,
    bucket: str,
    key: str,
    form: dict[str, str],
    rev: int | None,
) -> str:
    """Carry out one button of the card form; the :data:`NOTICES` code the page shows after.
    ``rev``: the form's revision, read once by the caller (:func:`form_rev`)."""
    note = form_note(form) if action != "save" else None
    async with desk.pool.connection() as conn:
        row = await listing.card_row(conn, bucket, key)
        current = (row or {}).get("edited_card") or (row or {}).get("card") or {}
        changes = form_changes(desk.card_type, current, form) if current else {}
        if action == "save":
            fields = await decisions.edit(conn, desk.card_type, user, bucket, key, changes, rev)
            return "Saved" if fields else "Unchanged"
        if action == "approve":
            await desk.approve(
                conn, user, bucket, key, note=note, expected_rev=rev, changes=changes
            )
            return "Approved"
        if action == "reject":
            await decisions.reject(conn, user, bucket, key, note=note or "", expected_rev=rev)
            return "Rejected"
        if action == "regenerate":
            await desk.enqueue_regeneration(bucket, key)
            await decisions.regenerate(conn, user, bucket, key, note=note)
            return "Regenerated"
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
    """One form, four buttons: save, approve (after saving), reject (with a note), regenerate.

    A list context the desk never links to (``?status=bogus``) is an error page, as is a form
    it did not write (a ``rev`` that is no revision number); a card that does not exist is the
    missing page: 4xx, and nothing changed."""
    await page_session(request)  # not signed in: to the login page, the body unread
    form = {k: str(v) for k, v in (await request.form()).items()}
    session = await form_session(request, form.get("csrf"), Role.reviewer)
    desk = desk_of(request)
    action = form.get("action", "save")
    try:
        filters = listing.Filters.parse(dict(request.query_params))
        rev = form_rev(form)
    except ValueError as exc:
        return refused_page(session, str(exc))
    params = filters.query_params()
    where = f"{bucket}/{key}"
    refusal: tuple[int, dict[str, str], str] | None = None
    try:
        message = await _act(desk, session.user, action, bucket, key, form, rev)
    except EditRefused as exc:
        refusal = (422, exc.fields, "The card was not saved.")
    except decisions.Conflict as exc:
        refusal = (409, {}, str(exc))
    except LookupError:  # no such card (decisions.NotFound, or no row to regenerate)
        refusal = (404, {}, "There is no card for this object.")
    except (TimeoutError, KafkaError) as exc:  # regenerate: the jobs topic is out of reach
        log.warning("review.regenerate_failed", extra={"key": where, "error": repr(exc)})
        refusal = (
            503,
            {},
            "Kafka is out of reach, so the card was not sent back: try again shortly.",
        )
    except ValueError as exc:  # a rejection without a note, a note over the limit
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
            target = card_url(*after, {**params, "msg": f"{message}Next"})
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
