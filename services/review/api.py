"""``/v1``: the desk's JSON API, on the same contracts as the Kafka messages (``schemas/``).

Auth: ``Authorization: Bearer <token>`` (``vitrine users token``), or the desk's session with an
``X-CSRF-Token`` header.  Reading needs a viewer, writing a reviewer.  Every refusal is a
:class:`schemas.api.Problem`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from minio.error import S3Error

from schemas.api import (
    CardEdit,
    CardPage,
    Decision,
    Problem,
    ProductAccepted,
    QualityReport,
    UploadAccepted,
)
from services.review import decisions, listing, quality, uploads
from services.review.accounts import Role, User
from services.review.bodies import json_body_doc, read_json, read_optional_json
from services.review.channels import CardWithChannels
from services.review.desk import Desk, card_view, desk_of
from services.review.edits import EditRefused
from services.review.security import api_user
from services.runtime.object_keys import key_problem

log = logging.getLogger("vitrine.review")
router = APIRouter(prefix="/v1", tags=["v1"])
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (401, 403, 404, 409, 413, 415, 422, 429)
}


class ApiProblem(Exception):
    def __init__(self, status: int, error: str, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = Problem(error=error, message=message, fields=fields or {})


def problem_response(exc: ApiProblem) -> JSONResponse:
    return JSONResponse(exc.problem.model_dump(), status_code=exc.status)


async def _card_or_404(desk: Desk, bucket: str, key: str) -> CardWithChannels:
    view = await desk.card(bucket, key)
    if view is None:
        raise ApiProblem(404, "not_found", f"no card for {bucket}/{key}")
    return view


def _refusal(exc: Exception) -> ApiProblem:
    if isinstance(exc, EditRefused):
        return ApiProblem(422, "invalid_card", "the edited card breaks the contract", exc.fields)
    if isinstance(exc, decisions.NotFound):
        return ApiProblem(404, "not_found", str(exc))
    if isinstance(exc, decisions.Conflict):
        return ApiProblem(409, "conflict", str(exc))
    if isinstance(exc, ValueError):
        return ApiProblem(422, "invalid", str(exc))
    raise exc


FACT_DOCS = {
    "sku": "The shop's SKU (copied onto the card).",
    "brand": "The brand (copied; the name carries it).",
    "gtin": "GTIN/EAN, 8-14 digits with a valid check digit (copied).",
    "title": "The shop's working title (a hint for the name).",
    "cor": "The product's colour (forced on the card).",
}
"""The shop's facts an upload may carry (schemas/facts.py); a bad one is a 422."""

UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The photo (JPEG, PNG, WebP, ...).",
                        },
                        "key": {
                            "type": "string",
                            "description": "Object key; default: <prefix>/<date>/<id>-<name>.",
                        },
                        "prefix": {
                            "type": "string",
                            "default": "uploads",
                            "description": "Prefix of a generated key.",
                        },
                        **{
                            name: {"type": "string", "description": what}
                            for name, what in FACT_DOCS.items()
                        },
                    },
                    "additionalProperties": {
                        "type": "string",
                        "description": "attr.<name>: a category attribute (material=couro).",
                    },
                }
            }
        },
    }
}


@router.post(
    "/images",
    status_code=202,
    response_model=UploadAccepted,
    responses=PROBLEMS,
    openapi_extra=UPLOAD_FORM,
)
async def upload_image(request: Request) -> JSONResponse:
    """Put a photo into the bucket; the pipeline takes it from there.  Follow ``status_url``.

    The caller is checked before the body is read, and the body is read only up to the image
    limit (VITRINE_IMAGE_MAX_BYTES): a stranger cannot make the desk receive 200 MB.  A given
    ``key`` and a ``prefix`` are held to ingest's key rule (422), a key that exists is refused
    by the bucket itself (409), and ``status_url``/``Location`` are built from
    VITRINE_REVIEW_PUBLIC_URL with the key percent-encoded, never from the Host header."""
    user = await api_user(request, Role.reviewer)
    desk = desk_of(request)
    try:
        received = await uploads.read_form(request, desk.settings.image_max_bytes)
        stored = await desk.upload(
            received, received.fields.get("key"), received.fields.get("prefix") or "uploads"
        )
    except uploads.UploadRefused as exc:
        raise ApiProblem(exc.status, exc.code, str(exc), exc.fields) from None
    except S3Error as exc:  # the bucket refused (the upload user's policy, a missing bucket)
        log.error("review.upload_refused", extra={"code": exc.code})
        raise ApiProblem(
            502, "storage_refused", f"the bucket refused the upload: {exc.code}"
        ) from None
    log.info(
        "review.uploaded",
        extra={
            "key": f"{desk.settings.bucket}/{stored.key}",
            "user": user.username,
            "bytes": stored.size,
        },
    )
    body = UploadAccepted(
        bucket=desk.settings.bucket,
        key=stored.key,
        etag=stored.etag,
        version_id=stored.version_id,
        size=stored.size,
        content_type=stored.content_type,
        status_url=desk.status_url(desk.settings.bucket, stored.key),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": body.status_url}
    )


async def a_viewer(request: Request) -> User:
    """The caller, checked as a dependency: FastAPI solves dependencies before it validates
    the query, so a stranger's malformed query gets 401, not the schema's 422."""
    return await api_user(request, Role.viewer)


PRODUCT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "The photos, in the order the model sees them "
                            "(repeat the field; at most VITRINE_PRODUCT_MAX_PHOTOS).",
                        },
                        "main": {
                            "type": "string",
                            "default": "1",
                            "description": "The main photo's position (1 = the first).",
                        },
                        "folder": {
                            "type": "string",
                            "description": "The product's folder; default <prefix>/<date>/<id>/.",
                        },
                        "prefix": {"type": "string", "default": "products"},
                        **{
                            name: {"type": "string", "description": what}
                            for name, what in FACT_DOCS.items()
                        },
                    },
                    "additionalProperties": {
                        "type": "string",
                        "description": "attr.<name>: a category attribute (material=couro).",
                    },
                }
            }
        },
    }
}


@router.post(
    "/products",
    status_code=202,
    response_model=ProductAccepted,
    responses=PROBLEMS,
    openapi_extra=PRODUCT_FORM,
)
async def upload_product(request: Request) -> JSONResponse:
    """Put a product into the bucket: its photos, then the manifest that commits them
    (``product.json``, schemas/products.py), so the card is written from all of them.

    The same limits as ``POST /v1/images`` per photo (the body is read only up to
    VITRINE_PRODUCT_MAX_PHOTOS photos of VITRINE_IMAGE_MAX_BYTES), the facts checked by
    ingest's rules (422), a folder held to the key rule; follow ``status_url``."""
    user = await api_user(request, Role.reviewer)
    desk = desk_of(request)
    most = desk.settings.product_max_photos
    try:
        # one file more than allowed is read (bounded), so that too many is said as such
        received = await uploads.read_form(request, desk.settings.image_max_bytes, files=most + 1)
        manifest, photos = await desk.upload_product(
            received, received.fields.get("folder"), received.fields.get("prefix") or "products"
        )
    except uploads.UploadRefused as exc:
        raise ApiProblem(exc.status, exc.code, str(exc), exc.fields) from None
    except S3Error as exc:
        log.error("review.upload_refused", extra={"code": exc.code})
        raise ApiProblem(
            502, "storage_refused", f"the bucket refused the upload: {exc.code}"
        ) from None
    log.info(
        "review.product_uploaded",
        extra={
            "key": f"{desk.settings.bucket}/{manifest.key}",
            "user": user.username,
            "photos": len(photos),
        },
    )
    body = ProductAccepted(
        bucket=desk.settings.bucket,
        key=manifest.key,
        photos=photos,
        status_url=desk.status_url(desk.settings.bucket, manifest.key),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=202, headers={"Location": body.status_url}
    )


@router.get("/cards", response_model=CardPage, responses=PROBLEMS)
async def list_cards(
    request: Request,
    _viewer: Annotated[User, Depends(a_viewer)],
    status: str | None = None,
    review: str | None = None,
    q: Annotated[str | None, Query(description="Full-text search (Portuguese).")] = None,
    category: Annotated[str | None, Query(description="A category path and its subtree.")] = None,
    prefix: str | None = None,
    model: str | None = None,
    prompt: str | None = None,
    flagged: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CardPage:
    """Cards newest first; pass ``next`` back as ``cursor`` for the following page."""
    desk = desk_of(request)
    try:
        filters = listing.Filters.parse(
            {
                "status": status or "",
                "review": review or "",
                "q": q or "",
                "category": category or "",
                "prefix": prefix or "",
                "model": model or "",
                "prompt": prompt or "",
                "flagged": "1" if flagged else "",
            }
        )
        async with desk.pool.connection() as conn:
            rows, next_cursor = await listing.list_cards(
                conn, filters, limit=limit, cursor=cursor, full=True
            )
    except listing.BadQuery as exc:  # a filter or cursor: the desk's own message
        raise ApiProblem(422, "invalid", str(exc), {exc.field: str(exc)}) from None
    return CardPage(items=[card_view(r) for r in rows], next=next_cursor)


@router.get(
    "/cards/{bucket}/{key:path}",
    response_model=CardWithChannels,
    responses=PROBLEMS,
    name="get_card",
)
async def get_card(request: Request, bucket: str, key: str) -> CardWithChannels:
    """The object's status (``uploaded`` until the pipeline has seen it), card and review,
    and each channel's verdict on the card as it stands (``channels``: ready, or the rules of
    Google Merchant Center, Shopify or schema.org it breaks), pending cards included.

    A row is found by any key it has; the bucket is asked only about keys that follow the key
    rule (an empty, ``..`` or 2,000-byte key is no object, not a question for MinIO)."""
    await api_user(request, Role.viewer)
    desk = desk_of(request)
    view = await desk.card(bucket, key)
    if view is not None:
        return view
    problem = key_problem(key)
    if problem is not None:
        raise ApiProblem(404, "not_found", f"no such object: {problem}")
    if bucket == desk.settings.bucket and await desk.exists(key):
        return CardWithChannels(bucket=bucket, key=key, status="uploaded")
    raise ApiProblem(404, "not_found", f"no object {bucket}/{key}")


@router.patch(
    "/cards/{bucket}/{key:path}",
    response_model=CardWithChannels,
    responses=PROBLEMS,
    openapi_extra=json_body_doc(CardEdit),
)
async def edit_card(request: Request, bucket: str, key: str) -> CardWithChannels:
    """Change fields of the card; the whole card is validated (422 with per-field errors)."""
    user = await api_user(request, Role.reviewer)  # the caller first, then the body
    edit = await read_json(request, CardEdit)
    desk = desk_of(request)
    try:
        async with desk.pool.connection() as conn:
            await decisions.edit(
                conn, desk.card_type, user, bucket, key, edit.changes(), edit.expected_rev
            )
    except (EditRefused, decisions.NotFound, decisions.Conflict) as exc:
        raise _refusal(exc) from None
    log.info("review.edited", extra={"key": f"{bucket}/{key}", "user": user.username})
    return await _card_or_404(desk, bucket, key)


async def _decide(
    request: Request, user: User, bucket: str, key: str, decision: Decision, approve: bool
) -> CardWithChannels:
    desk = desk_of(request)
    try:
        async with desk.pool.connection() as conn:
            if approve:
                await desk.approve(
                    conn, user, bucket, key, note=decision.note, expected_rev=decision.expected_rev
                )
            else:
                await decisions.reject(
                    conn,
                    user,
                    bucket,
                    key,
                    note=decision.note or "",
                    expected_rev=decision.expected_rev,
                )
    except (ValueError, decisions.NotFound, decisions.Conflict) as exc:
        raise _refusal(exc) from None
    log.info(
        "review.approved" if approve else "review.rejected",
        extra={"key": f"{bucket}/{key}", "user": user.username},
    )
    return await _card_or_404(desk, bucket, key)


@router.post(
    "/cards/{bucket}/{key:path}/approve",
    response_model=CardWithChannels,
    responses=PROBLEMS,
    openapi_extra=json_body_doc(Decision, required=False),
)
async def approve_card(request: Request, bucket: str, key: str) -> CardWithChannels:
    """Approve the card as it stands; it is published to ``vitrine.cards.approved``."""
    user = await api_user(request, Role.reviewer)
    decision = await read_optional_json(request, Decision)
    return await _decide(request, user, bucket, key, decision or Decision(), approve=True)


@router.post(
    "/cards/{bucket}/{key:path}/reject",
    response_model=CardWithChannels,
    responses=PROBLEMS,
    openapi_extra=json_body_doc(Decision),
)
async def reject_card(request: Request, bucket: str, key: str) -> CardWithChannels:
    """Reject the card; ``note`` says why (required)."""
    user = await api_user(request, Role.reviewer)
    decision = await read_json(request, Decision)
    return await _decide(request, user, bucket, key, decision, approve=False)


@router.get("/quality", response_model=QualityReport, responses=PROBLEMS)
async def review_quality(
    request: Request,
    _viewer: Annotated[User, Depends(a_viewer)],
    bucket: Annotated[
        str | None, Query(description="Only this bucket's cards; default: every bucket.")
    ] = None,
) -> QualityReport:
    """What people made of each model and prompt version's cards: approval rate, approvals
    without a person's edit, edit rate per field, time to decision (services/review/quality.py).
    Each decided card counts once, by its current decision; read from the table, so it holds
    across restarts (the desk's Prometheus metrics count decisions since it started)."""
    desk = desk_of(request)
    try:
        wanted = quality.bucket_filter(bucket)
    except ValueError as exc:
        raise ApiProblem(422, "invalid", str(exc), {"bucket": str(exc)}) from None
    async with desk.pool.connection() as conn:
        return await quality.summary(conn, wanted)
