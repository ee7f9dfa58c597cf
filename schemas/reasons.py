"""Why an object has no card, and why a message was parked: the one vocabulary of reason codes.

Codes are stable machine values: rows, metrics labels, dead-letter headers and alerts key on
them, so a code is never renamed, only added (and documented here, where `vitrine` and the
docs read it).  The human explanation of one occurrence travels beside it as ``detail``.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A stable reason code; ``Reason.X.doc`` says when it is used."""

    doc: str

    def __new__(cls, value: str, doc: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.doc = doc
        return member

    # -- rejected by ingest from the notification alone (no work was spent) ------------------
    empty_object = "empty_object", "The object is 0 bytes."
    image_too_large = "image_too_large", "The object is over VITRINE_IMAGE_MAX_BYTES."
    not_an_image = (
        "not_an_image",
        "Its content type and extension say it is not a raster image (or, when both are "
        "silent, its first bytes do).",
    )
    bad_key = (
        "bad_key",
        "Its key breaks the key rule (services/runtime/object_keys.py): a control character "
        "(CR/LF, C1, a bidirectional override), an empty, '.' or '..' segment, a leading '/', "
        "or over 1,024 bytes.",
    )

    bad_manifest = (
        "bad_manifest",
        "A product's manifest (product.json) is not valid: not JSON, a photo name that is "
        "not a name in its folder, more photos than VITRINE_PRODUCT_MAX_PHOTOS, ...",
    )

    # -- the worker (or ingest, reading an upload's first bytes) could not get the object ---
    object_missing = "object_missing", "Deleted before it was read."
    superseded = "superseded", "Overwritten before it was read (the ETag changed)."
    access_denied = "access_denied", "The reading service's S3 user may not read it."
    product_incomplete = (
        "product_incomplete",
        "A photo its manifest names was still missing after VITRINE_PRODUCT_PHOTO_WAIT_S.",
    )
    foreign_bucket = "foreign_bucket", "The job names a bucket this worker does not serve."

    # -- the image or the model --------------------------------------------------------------
    bad_image = "bad_image", "The bytes do not decode as a supported image."
    card_error = "card_error", "The engine failed in a way no narrower code describes."
    model_load = "model_load", "The model or projector could not be loaded."
    grammar = "grammar", "The card's schema could not be compiled into a grammar."
    generation = "generation", "Generation failed in a way no narrower code describes."
    truncated = "truncated", "The token budget ran out before the JSON closed."
    invalid_output = "invalid_output", "The output does not match the card schema."
    semantic_check = "semantic_check", "The card broke a content rule on every attempt."
    inference = "inference", "llama.cpp failed during evaluation."
    context_overflow = "context_overflow", "The prompt and image do not fit the context window."
    timeout = "timeout", "The job ran past VITRINE_JOB_TIMEOUT_S."
    internal_error = "internal_error", "A bug: a service caught an unexpected exception."

    # -- delivery ------------------------------------------------------------------------------
    poison = "poison", "Workers died on this job VITRINE_MAX_DELIVERIES times; it was parked."
    invalid_result = "invalid_result", "A result message broke the contract; it was parked."

    # -- dead-letter only (no row: the message names no object) ------------------------------
    malformed_event = "malformed_event", "A notification that does not parse as a MinIO event."
    invalid_object = "invalid_object", "An event record whose object fields are invalid."
    malformed_job = "malformed_job", "A job message that does not parse as an ImageJob."
    malformed_approval = (
        "malformed_approval",
        "An approved-card message that does not parse as an ApprovedCard.",
    )
