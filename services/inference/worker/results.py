"""Turning what happened to one job into the ``CardResult`` the pipeline publishes."""

from __future__ import annotations

from schemas.messages import CardResult, CardStatus, ImageJob, Timings
from schemas.reasons import Reason
from services.inference.card.errors import CardError, GenerationError, ImageError
from services.inference.card.outcome import CardOutcome


def done(job: ImageJob, outcome: CardOutcome, fetch_ms: float, total_ms: float) -> CardResult:
    return CardResult(
        job_id=job.job_id,
        trace_id=job.trace_id,
        object=job.object,
        status=CardStatus.done,
        card=outcome.card,
        model_id=outcome.model_id,
        prompt_version=outcome.prompt_version,
        attempts=outcome.attempts,
        timings=outcome.timings.model_copy(update={"fetch_ms": fetch_ms, "total_ms": total_ms}),
        checks=outcome.checks,
        facts=job.facts,
        product=job.product,
        producer="inference",
    )


def not_done(
    job: ImageJob,
    *,
    status: CardStatus,
    reason: Reason,
    detail: str,
    model_id: str | None = None,
    prompt_version: str | None = None,
    attempts: int = 0,
    fetch_ms: float = 0.0,
    total_ms: float = 0.0,
    spent: Timings | None = None,
) -> CardResult:
    return CardResult(
        job_id=job.job_id,
        trace_id=job.trace_id,
        object=job.object,
        status=status,
        reason=reason,
        detail=detail[:2000],
        model_id=model_id,
        prompt_version=prompt_version,
        attempts=attempts,
        timings=(spent or Timings()).model_copy(
            update={"fetch_ms": fetch_ms, "total_ms": total_ms}
        ),
        facts=job.facts,
        product=job.product,
        producer="inference",
    )


def from_error(
    job: ImageJob,
    exc: CardError,
    *,
    model_id: str,
    prompt_version: str,
    fetch_ms: float,
    total_ms: float,
) -> CardResult:
    """Bad images are *rejected* (the input's fault); everything else *failed* (ours)."""
    return not_done(
        job,
        status=CardStatus.rejected if isinstance(exc, ImageError) else CardStatus.failed,
        reason=exc.reason,
        detail=str(exc),
        model_id=model_id,
        prompt_version=prompt_version,
        attempts=len(exc.attempts) if isinstance(exc, GenerationError) else 0,
        fetch_ms=fetch_ms,
        total_ms=total_ms,
        spent=exc.timings,
    )
