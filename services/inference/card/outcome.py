"""What one generation produced and what one image became: the types the engine hands out and
the worker turns into results, free of any model runtime so both sides can import them."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.card import ProductCard
from schemas.messages import Checks, Timings
from services.inference.card.errors import AttemptFailure


@dataclass
class RawGeneration:
    """One constrained generation's text, before parsing and checks."""

    text: str
    finish_reason: str | None
    timings: Timings


@dataclass
class CardOutcome:
    """A card that passed every check, and what it cost."""

    card: ProductCard
    model_id: str
    prompt_version: str
    attempts: int
    seed: int
    timings: Timings
    """Every attempt's stages summed, and the image's preprocessing."""
    failures: list[AttemptFailure] = field(default_factory=list)
    checks: Checks | None = None
    """The colour check beside the card (``VITRINE_COLOUR_CHECK``), when it ran."""
