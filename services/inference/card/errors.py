"""Typed failures of the card engine.

Each error carries a stable ``reason`` code (``schemas/reasons.py``), which becomes the
``reason`` of a failed result and a metrics label, plus a human message.  Callers branch on
the type, never on message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.messages import Timings
from schemas.reasons import Reason


class CardError(Exception):
    """Base class: something prevented a valid card for this image."""

    reason: Reason = Reason.card_error
    permanent = True
    """Permanent errors will fail again on retry with the same input; transient ones may not."""
    timings: Timings | None = None
    """What the failed attempts cost (tokens, stages), where the engine got that far: a failed
    row still says what it spent."""
    photo_index: int | None = None
    """For a product's card: which of its photos the error is about (the worker names its key
    on the row, ``worker/job.py``)."""


class ImageError(CardError):
    """The bytes are not an image we can use (corrupt, unsupported, or over a limit)."""

    reason: Reason = Reason.bad_image


class EmptyImage(ImageError):
    """Zero bytes: MinIO omits the size of empty objects from events, so it surfaces here."""

    reason: Reason = Reason.empty_object


class ImageTooLarge(ImageError):
    """Over the pixel or byte limit: refuses decompression bombs before decoding them."""

    reason: Reason = Reason.image_too_large


class ModelLoadError(CardError):
    """The model or projector file is missing, unreadable, or incompatible."""

    reason: Reason = Reason.model_load


class GrammarError(CardError):
    """The card's JSON Schema could not be compiled into a decoding grammar."""

    reason: Reason = Reason.grammar


@dataclass
class AttemptFailure:
    """One failed generation attempt, kept so the final error tells the whole story."""

    attempt: int
    reason: Reason
    detail: str
    checks: tuple[str, ...] = ()
    """For a ``semantic_check`` attempt, every content rule it broke."""


class GenerationError(CardError):
    """Generation finished but produced no acceptable card within the retry budget."""

    reason: Reason = Reason.generation

    def __init__(self, message: str, attempts: list[AttemptFailure] | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts or []


class TruncatedOutput(GenerationError):
    """``finish_reason == "length"``: the token budget ran out inside the JSON."""

    reason: Reason = Reason.truncated


class InvalidOutput(GenerationError):
    """The text is not JSON, or the JSON does not validate against the card model."""

    reason: Reason = Reason.invalid_output


class SemanticCheckFailed(GenerationError):
    """Valid JSON that breaks a rule the grammar cannot express (word count, colour, ...)."""

    reason: Reason = Reason.semantic_check

    def __init__(
        self,
        message: str,
        checks: list[str],
        attempts: list[AttemptFailure] | None = None,
        card: Any = None,
    ) -> None:
        super().__init__(message, attempts)
        self.checks = checks
        self.card = card
        """The last attempt's card (a ``ProductCard``), refused by the checks: not delivered,
        but what ``vitrine eval`` scores as "as written" beside the delivered cards."""


class InferenceError(CardError):
    """llama.cpp refused to run this request (e.g. the prompt does not fit the context)."""

    reason: Reason = Reason.inference


class EngineClosed(InferenceError):
    """The engine was closed (the worker is shutting down): a call after that is refused here,
    in Python, rather than reaching a freed llama.cpp context.  Not a verdict on the image: the
    worker publishes nothing for it, and the job is redelivered."""


class ContextOverflow(InferenceError):
    """Image tokens + prompt exceed ``n_ctx``: raise ``VITRINE_N_CTX`` or shrink the image."""

    reason: Reason = Reason.context_overflow


class JobTimeout(CardError):
    """The image's processing-time budget (``VITRINE_JOB_TIMEOUT_S``) ran out mid-generation."""

    reason: Reason = Reason.timeout


def decode_failure(exc: Exception, *, timed_out: bool, budget_s: float) -> CardError:
    """What a failed llama.cpp evaluation means for the job.

    An aborted decode surfaces as RuntimeError from ``llama_decode``, but as
    ``ValueError("Failed to evaluate chunk: error code 2")`` when the abort lands in the mtmd
    handler's prefill: the deadline, not the type, tells them apart."""
    if timed_out:
        return JobTimeout(f"processing time budget of {budget_s:g}s spent")
    if "n_ctx" in str(exc) or "context window" in str(exc):
        return ContextOverflow(f"{exc}; raise VITRINE_N_CTX")
    return InferenceError(str(exc))
