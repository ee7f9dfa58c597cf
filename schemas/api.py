"""The review desk's HTTP API (``/v1``): what it answers and what it accepts.

The card, its checks and its statuses are the Kafka messages' own types, so a client of the API
and a consumer of the topics read the same contract.  The upload flow is the design report's
task-id flow with the object key as the task id: ``POST /v1/images`` answers 202 with the key
and a status URL, and that URL answers ``uploaded`` until the pipeline has a row for the object,
then ``queued``, then a final status (``done``, ``rejected``, ``failed``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from schemas.card import ProductCard
from schemas.facts import GivenFacts
from schemas.messages import CardStatus, Checks, ReviewState
from schemas.storable import value_problem

# Fields of a card a person may edit; the category's three derived fields follow category_path.
EDITABLE_FIELDS = (
    "product_name",
    "category_path",
    "attributes",
    "description_long",
    "color_primary",
    "features_list",
)
NOTE_MAX = 2000
"""Longest note of a decision, on the API and the desk's card form alike."""


def _storable(value: Any) -> Any:
    """A request's text without NUL or lone surrogates and its numbers finite, refused as a
    422 of the request itself: PostgreSQL could not store them (schemas/storable.py)."""
    problem = value_problem(value)
    if problem:
        raise PydanticCustomError("unstorable", problem)
    return value


class ReviewEvent(BaseModel):
    """One line of an object's review history (table ``card_reviews``)."""

    id: int
    reviewer: str = Field(description="A username, or 'pipeline' for a regeneration.")
    at: datetime
    decision: Literal["edit", "approve", "reject", "regenerate", "reset"]
    fields: list[str] = Field(default_factory=list, description="Card fields that changed.")
    note: str | None = None


class CardView(BaseModel):
    """An object's row: its pipeline status, its card and where its review stands."""

    bucket: str
    key: str
    status: CardStatus | Literal["uploaded"] = Field(
        description="uploaded: in the bucket, not yet seen by the pipeline; else the row's."
    )
    reason: str | None = Field(None, description="Why it was rejected or failed.")
    detail: str | None = None
    review_state: ReviewState | None = Field(None, description="None until the object has a row.")
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = None
    card: ProductCard | None = Field(None, description="The card: the person's edit, if any.")
    model_card: ProductCard | None = Field(None, description="The model's own card.")
    edited: bool = False
    edited_fields: list[str] = Field(default_factory=list)
    changed_since_approval: list[str] = Field(
        default_factory=list,
        description="Fields of a card regenerated after its approval that differ from the "
        "approved card (the desk shows the diff).",
    )
    checks: Checks | None = None
    facts: GivenFacts | None = Field(
        None, description="What the shop said about the product, and the facts dropped."
    )
    photo_keys: list[str] | None = Field(
        None, description="A product's photos, in the order the model saw them."
    )
    main_photo: str | None = Field(None, description="A product's main photo.")
    model_id: str | None = None
    prompt_version: str | None = None
    updated_at: datetime | None = None
    rev: int = Field(0, description="Send it back as expected_rev to refuse lost updates.")
    history: list[ReviewEvent] = Field(default_factory=list)


class CardPage(BaseModel):
    """``GET /v1/cards``: one page, newest first; ``next`` is the cursor of the next page."""

    items: list[CardView]
    next: str | None = None


class UploadAccepted(BaseModel):
    """``POST /v1/images`` → 202: the object is in the bucket; follow ``status_url``."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size: int
    content_type: str
    status_url: str


class ProductAccepted(BaseModel):
    """``POST /v1/products`` → 202: the photos and the manifest that commits them are in the
    bucket; the product's row is the manifest's: follow ``status_url``."""

    bucket: str
    key: str = Field(description="The manifest's key: <folder>/product.json.")
    photos: list[str] = Field(description="The photos' keys, in the order the model sees them.")
    status_url: str


class CardEdit(BaseModel):
    """``PATCH /v1/cards/{bucket}/{key}``: the fields to change; the whole card is then
    validated by the deployment's card contract (its tree, colours, word minimum)."""

    model_config = ConfigDict(extra="forbid")

    product_name: str | None = None
    category_path: str | None = None
    attributes: dict[str, Any] | None = None
    description_long: str | None = None
    color_primary: str | None = None
    features_list: list[str] | None = None
    expected_rev: int | None = Field(
        None, description="The rev the edit was made on; a newer row refuses it (409)."
    )

    _storable = field_validator("*")(_storable)

    def changes(self) -> dict[str, Any]:
        return {
            name: value for name in EDITABLE_FIELDS if (value := getattr(self, name)) is not None
        }


class Decision(BaseModel):
    """``POST …/approve`` and ``…/reject``; a rejection needs a note."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=NOTE_MAX)
    expected_rev: int | None = None

    _storable = field_validator("note")(_storable)


class Problem(BaseModel):
    """Every 4xx answer: a stable code, a message, and per-field errors for a refused card."""

    error: str
    message: str
    fields: dict[str, str] = Field(default_factory=dict)


class ReviewQuality(BaseModel):
    """What people made of one model and prompt version's cards, each card counted once by its
    current decision (``GET /v1/quality``, the desk's Quality page, ``vitrine status``).

    A card is *decided* when its review state is approved or rejected; a regenerated card is
    pending again, so a decision always belongs to the model and prompt that made the card."""

    model_id: str | None = Field(description="The model that generated the cards.")
    prompt_version: str | None = Field(description="The prompt version they were made with.")
    decided: int = Field(description="Cards approved or rejected.")
    approved: int
    approved_unchanged: int = Field(description="Approved as the model wrote them.")
    rejected: int
    approval_rate: float = Field(ge=0, le=1, description="approved / decided")
    unchanged_approval_rate: float = Field(ge=0, le=1, description="approved_unchanged / decided")
    edited_fields: dict[str, int] = Field(
        description="Per editable field: decided cards whose field a person changed."
    )
    edit_rate: dict[str, float] = Field(description="edited_fields / decided, per field.")
    median_decision_s: float | None = Field(
        description="Median seconds from the card's generation to its decision."
    )
    p90_decision_s: float | None = Field(description="The 90th percentile of the same.")


class QualityReport(BaseModel):
    """``GET /v1/quality``: review quality by model and prompt version, most decided first."""

    bucket: str | None = Field(description="The bucket it covers; null: every bucket.")
    groups: list[ReviewQuality]
