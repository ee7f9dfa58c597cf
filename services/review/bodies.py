"""The API's JSON bodies, read by the route after it has checked the caller.

A body declared as a FastAPI parameter is read and validated before the route runs, so before
``api_user``: a stranger's malformed body got a 422 describing the schema, a large one was read
in full, and only then came the 401.  These routes read theirs with :func:`read_json` once the
caller is known (the body already bounded by :mod:`services.review.body_limit`), and
:func:`json_body_doc` keeps ``/openapi.json`` describing it as FastAPI did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
REF = "#/components/schemas/{model}"
_DOCUMENTED: dict[str, type[BaseModel]] = {}


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``.  Refusals are the same :class:`RequestValidationError` (a 422
    problem, per field) that FastAPI raised for a body parameter."""
    found = await read_optional_json(request, model)
    if found is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
        )
    return found


async def read_optional_json(request: Request, model: type[M]) -> M | None:
    """The body as ``model``, or None for an empty body or ``null``."""
    raw = (await request.body()).strip()
    if not raw or raw == b"null":
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        raise RequestValidationError(errors) from None


def json_body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body is ``model`` (nullable when not required)."""
    _DOCUMENTED[model.__name__] = model
    schema: dict[str, Any] = {"$ref": REF.format(model=model.__name__)}
    if not required:
        schema = {"anyOf": [schema, {"type": "null"}], "title": model.__name__}
    body: dict[str, Any] = {"content": {"application/json": {"schema": schema}}}
    if required:
        body["required"] = True
    return {"requestBody": body}


def document_bodies(app: FastAPI) -> None:
    """``/openapi.json`` with the schemas of the bodies :func:`json_body_doc` named (FastAPI
    lists only the models of the parameters it parses itself)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name, model in _DOCUMENTED.items():
                schema = model.model_json_schema(ref_template=REF, mode="validation")
                for nested, part in schema.pop("$defs", {}).items():
                    schemas.setdefault(nested, part)
                schemas.setdefault(name, schema)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
