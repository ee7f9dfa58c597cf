"""Messages on vitrine's Kafka topics, and MinIO's bucket notification as ingest receives it.

Every message carries ``schema_version``; consumers reject versions they do not know instead of
guessing.  Messages name objects, never carry their bytes: an ``ObjectRef`` is the identity of one
version of one object, and ``sequencer`` orders the events of that object (MinIO's per-event
sequencer: the hex nanosecond time of the change), which is how the sink refuses stale results.

Topic  ``vitrine.jobs``     ← ``ImageJob``    (ingest)            key ``"{bucket}/{key}"``
Topic  ``vitrine.results``  ← ``CardResult``  (ingest, inference)  key ``"{bucket}/{key}"``
Topic  ``vitrine.cards.approved`` ← ``ApprovedCard`` (the review desk) key ``"{bucket}/{key}"``
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.card import ProductCard
from schemas.facts import FactsCheck, GivenFacts, facts_from_metadata
from schemas.products import ProductSpec
from schemas.reasons import Reason

SCHEMA_VERSION: Literal[1] = 1
JOB_NAMESPACE = uuid.UUID("5d7c1f0e-4b7a-4f55-9a52-6f1c8a1e3b21")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ObjectRef(BaseModel):
    """One version of one object in the bucket; keys are opaque identifiers, never paths."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024, description="Decoded object key.")
    version_id: str | None = None
    etag: str | None = None
    size: int | None = Field(None, ge=0, description="Bytes; absent on removal events.")
    content_type: str | None = None
    sequencer: str = Field(
        pattern=r"^[0-9A-Fa-f]{1,32}$",
        description="MinIO's event sequencer (hex); orders events of the same object.",
    )
    event_time: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ObjectRef:
        """The object a ``product_cards`` row names, as its last event described it (the row
        keeps the sequencer as a number, messages carry it as hex)."""
        return cls(
            bucket=row["bucket"],
            key=row["object_key"],
            version_id=row.get("version_id"),
            etag=row.get("etag"),
            size=row.get("size_bytes"),
            content_type=row.get("content_type"),
            sequencer=format(int(row["sequencer"]), "X"),
            event_time=row["event_time"],
        )

    @property
    def message_key(self) -> bytes:
        """Kafka key: all events of one object land in one partition, in order."""
        return f"{self.bucket}/{self.key}".encode()

    @property
    def sequence(self) -> int:
        return int(self.sequencer, 16)


class ImageJob(BaseModel):
    """Ask the inference service to generate the card of one object version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: uuid.UUID
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    object: ObjectRef
    attempt: int = Field(1, ge=1, description="Delivery attempt; >1 after a re-enqueue.")
    enqueued_at: datetime = Field(default_factory=utcnow)
    facts: GivenFacts | None = Field(
        None,
        description="What the shop said about the product (the object's user metadata), and "
        "the facts dropped for breaking their rules (schemas/facts.py).",
    )
    product: ProductSpec | None = Field(
        None,
        description="A product's photos (the object is its manifest, schemas/products.py): "
        "the card is written from all of them.",
    )

    @staticmethod
    def job_id_for(obj: ObjectRef) -> uuid.UUID:
        """Deterministic: a replayed event yields the same job id, so duplicates are visible."""
        return uuid.uuid5(JOB_NAMESPACE, f"{obj.bucket}/{obj.key}@{obj.sequencer}")

    @classmethod
    def reprocess(cls, obj: ObjectRef, facts: GivenFacts | None = None) -> ImageJob:
        """The object sent through again (`vitrine reprocess` and `backfill`, the desk's
        regenerate): the job id of its event, so the new card replaces the old one and never a
        newer version's; a new trace; attempt 2 marks it as a re-enqueue; the facts its row
        kept."""
        return cls(
            job_id=cls.job_id_for(obj),
            trace_id=secrets.token_hex(16),
            object=obj,
            attempt=2,
            facts=facts,
        )


class CardStatus(StrEnum):
    queued = "queued"
    done = "done"
    rejected = "rejected"
    failed = "failed"
    deleted = "deleted"
    grouped = "grouped"
    """A photo a product's manifest names: its card is the product's (``detail`` names the
    manifest's key; schemas/products.py)."""

    @property
    def final(self) -> bool:
        return self is not CardStatus.queued


class Timings(BaseModel):
    """Where the time of one card went, in milliseconds (engine stages summed over attempts).

    The one timings shape: the engine fills the stages of each generation, attempts are summed
    with :meth:`plus`, and the worker adds ``fetch_ms`` and ``total_ms`` before publishing."""

    model_config = ConfigDict(extra="forbid")

    fetch_ms: float = 0.0
    preprocess_ms: float = 0.0
    image_encode_ms: float = 0.0
    prompt_eval_ms: float = 0.0
    generate_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = Field(
        0,
        description="Of prompt_tokens, those taken from the KV cache (the shared prefix, a "
        "retry's image) instead of evaluated.",
    )
    completion_tokens: int = 0
    forced_tokens: int = Field(
        0, description="Of completion_tokens, those the grammar forced (llguidance fast-forward)."
    )
    mask_ms: float = Field(0.0, description="Time spent computing and applying grammar masks.")
    tokens_per_s: float = Field(
        0.0, description="completion_tokens over generate_ms; filled in when left at 0."
    )
    total_ms: float = 0.0

    @model_validator(mode="after")
    def _rate(self) -> Timings:
        if not self.tokens_per_s and self.generate_ms > 0:
            self.tokens_per_s = self.completion_tokens / (self.generate_ms / 1000.0)
        return self

    def plus(self, other: Timings) -> Timings:
        """Both summed, stage by stage (attempts add up); the rate is that of the sums."""
        summed = {
            name: getattr(self, name) + getattr(other, name)
            for name in type(self).model_fields
            if name != "tokens_per_s"
        }
        return Timings(**summed)


class ColourCheck(BaseModel):
    """The model's ``color_primary`` held against the colour the pixels show.

    The estimate separates the product from its background, clusters the product's pixels in
    CIELAB and names the dominant cluster with the output language's nearest colour
    (``services/inference/image/pixel_colour.py``).  ``agrees`` is the same name, an accepted
    neighbour (azul / azul-marinho) or a colour within the agreement distance; a colour the
    pixels cannot check (transparente, multicolorido, estampado) is ``checkable: false``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The card's color_primary (after the policy's action).")
    generated: str | None = Field(
        None, description="What the model wrote, where the policy replaced it."
    )
    estimate: str = Field(description="The colour name the pixels give.")
    distance: float | None = Field(
        None,
        ge=0,
        description="CIEDE2000 from the model colour's reference to the pixels' colour; none "
        "when the model's colour has no reference (not checkable).",
    )
    agrees: bool
    checkable: bool = True
    policy: Literal["flag", "retry", "replace"] = "flag"
    action: Literal["none", "flagged", "retried", "replaced"] = Field(
        "none",
        description="none: it agreed; flagged: kept as written; retried: a corrective attempt "
        "was made (the card is that attempt's); replaced: color_primary is the estimate.",
    )


class Checks(BaseModel):
    """Checks made beside the card, kept on the row (``checks`` JSON) for review."""

    model_config = ConfigDict(extra="forbid")

    colour: ColourCheck | None = None
    facts: FactsCheck | None = None

    @property
    def flagged(self) -> bool:
        return self.colour is not None and not self.colour.agrees


class CardResult(BaseModel):
    """The outcome for one object version: a card, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: uuid.UUID
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    object: ObjectRef
    status: CardStatus
    card: ProductCard | None = None
    reason: Reason | None = Field(None, description="Stable machine code (schemas/reasons.py).")
    detail: str | None = Field(None, max_length=2000, description="Human explanation.")
    model_id: str | None = None
    prompt_version: str | None = None
    attempts: int = Field(0, ge=0, description="Generation attempts spent on this result.")
    timings: Timings | None = None
    checks: Checks | None = Field(
        None, description="Checks beside a done card (colour, the shop's facts)."
    )
    facts: GivenFacts | None = Field(
        None, description="The job's facts (schemas/facts.py), kept on the row whatever the status."
    )
    product: ProductSpec | None = Field(
        None, description="A product's photo keys, in order, and the main one (its row's)."
    )
    producer: Literal["ingest", "inference", "reprocess"]
    produced_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _consistent(self) -> CardResult:
        if self.status is CardStatus.done and self.card is None:
            raise ValueError("a done result needs a card")
        if self.status is not CardStatus.done and self.card is not None:
            raise ValueError(f"a {self.status} result carries no card")
        if self.status in (CardStatus.rejected, CardStatus.failed) and not self.reason:
            raise ValueError(f"a {self.status} result needs a reason")
        return self


class ReviewState(StrEnum):
    """Where a card stands with the people who review it (the desk, ``services/review``)."""

    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class ApprovedCard(BaseModel):
    """A card a person approved: what a shop publishes.

    One message per approval; the newest per key is the card to show (a later approval of the
    same object replaces it, a rejection or a regeneration publishes nothing, so a consumer
    that must withdraw cards reads ``product_cards.review_state``).  ``review_id`` identifies
    the approval, so a consumer can drop a redelivered one.  ``ai_generated`` is always true:
    the text was written by a model even when a person edited it, and Google Merchant Center
    asks that such text be labelled.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    review_id: int = Field(ge=1, description="The approval's row in card_reviews.")
    object: ObjectRef
    card: ProductCard = Field(description="The approved card: the person's edit, if any.")
    ai_generated: Literal[True] = Field(
        True, description="The text was generated by a model (label it as such)."
    )
    edited: bool = Field(description="A person changed the model's card before approving it.")
    edited_fields: list[str] = Field(
        default_factory=list, description="The card fields the person changed."
    )
    approved_by: str
    approved_at: datetime
    note: str | None = Field(None, max_length=2000)
    model_id: str | None = None
    prompt_version: str | None = None


# -- MinIO's bucket notification (the subset vitrine reads; MinIO adds more) -----------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(_Lenient):
    name: str


class S3Object(_Lenient):
    key: str
    size: int | None = None
    etag: str | None = Field(None, alias="eTag")
    content_type: str | None = Field(None, alias="contentType")
    version_id: str | None = Field(None, alias="versionId")
    sequencer: str
    user_metadata: dict[str, Any] | None = Field(
        None, alias="userMetadata", description="X-Amz-Meta-* (and a few standard headers)."
    )


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Lenient):
    event_name: str = Field(alias="eventName")
    event_time: datetime = Field(alias="eventTime")
    s3: S3Entity

    def facts(self) -> GivenFacts | None:
        """The shop's facts in the object's user metadata; None when it gave none."""
        given = facts_from_metadata(self.s3.object.user_metadata)
        return None if given.facts.empty and not given.problems else given

    def object_ref(self) -> ObjectRef:
        o = self.s3.object
        return ObjectRef(
            bucket=self.s3.bucket.name,
            key=unquote_plus(o.key),  # MinIO URL-encodes keys in events
            version_id=o.version_id or None,
            etag=o.etag or None,
            size=o.size,
            content_type=o.content_type or None,
            sequencer=o.sequencer,
            event_time=self.event_time,
        )


class MinioEvent(_Lenient):
    event_name: str | None = Field(None, alias="EventName")
    key: str | None = Field(None, alias="Key")
    records: list[S3Record] = Field(alias="Records", min_length=1)
