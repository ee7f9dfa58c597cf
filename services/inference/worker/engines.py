"""What the worker needs from an engine, and the registry that names the engines.

The worker knows engines only through :class:`Engine`; ``VITRINE_ENGINE`` picks one by name.
The package registers one, ``llama`` (llama.cpp, ``engine.py``).  Stand-ins for benchmarks and
tests (a fixed card after N ms, say) register themselves from ``bench/`` or ``tests/`` in the
process that runs them, and the shipping package never imports them, so a deployment cannot
select what it does not contain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from schemas.facts import ProductFacts
from services.inference.card.outcome import CardOutcome
from services.inference.card.prompt import Prompt
from services.inference.settings import EngineSettings

log = logging.getLogger("vitrine.inference")


class Engine(Protocol):
    """A card maker loaded once per process."""

    model_id: str
    load_ms: float
    prompt: Prompt
    parallel: int
    """Cards it makes at once: how many threads may be in :meth:`card_for_bytes` together
    (the worker keeps that many jobs in flight)."""

    def card_for_bytes(
        self, data: bytes, *, seed: int | None = None, facts: ProductFacts | None = None
    ) -> CardOutcome:
        """A checked card, or a ``CardError`` with a stable reason; thread-safe.  ``facts``:
        what the shop said about the product (``schemas/facts.py``), which binds the card."""
        ...

    def card_for_photos(
        self,
        photos: list[bytes],
        *,
        facts: ProductFacts | None = None,
        main: int = 0,
        seed: int | None = None,
    ) -> CardOutcome:
        """One card from a product's photos (in order; the pixel colour from ``main``);
        ``seed`` as for one photo (``vitrine eval`` runs every candidate on the same seeds)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the ``model.loaded`` log line says about it (handler, backend, ...)."""
        ...

    def close(self) -> None: ...


class UnknownEngine(ValueError):
    """``VITRINE_ENGINE`` names no engine registered in this process."""


EngineFactory = Callable[[EngineSettings], Engine]

_ENGINES: dict[str, EngineFactory] = {}


def register(name: str, factory: EngineFactory) -> None:
    """Make ``VITRINE_ENGINE=name`` build engines with ``factory`` in this process."""
    _ENGINES[name] = factory


def names() -> list[str]:
    return sorted(_ENGINES)


def load_engine(name: str, settings: EngineSettings) -> Engine:
    try:
        factory = _ENGINES[name]
    except KeyError:
        raise UnknownEngine(
            f"VITRINE_ENGINE={name!r} is not an engine this process knows "
            f"(known: {', '.join(names())})"
        ) from None
    return factory(settings)


def _llama(settings: EngineSettings) -> Engine:
    from services.inference.engine.card_engine import CardEngine
    from services.inference.engine.model_files import resolve

    engine = CardEngine(resolve(settings), settings)
    # before the worker joins its group: the first card then copies the prompt's shared
    # prefix instead of waiting seconds for it (a no-op without one)
    started = time.perf_counter()
    try:
        engine.warm_prefix()
    except BaseException:
        engine.close()
        raise
    log.info(
        "engine.prefix_warmed",
        extra={"ms": round((time.perf_counter() - started) * 1000), "shared": bool(engine.slots)},
    )
    _report_photo_capacity(engine, settings)
    return engine


def _report_photo_capacity(engine: Any, settings: EngineSettings) -> None:
    """Say at start-up how many of a product's photos one generation holds; a warning when
    that is fewer than ``VITRINE_PRODUCT_MAX_PHOTOS`` (such products then fail
    ``context_overflow`` before their prefill, naming both settings).  Single photos are not
    affected, so the worker still starts."""
    try:
        capacity = engine.photo_capacity()
    except BaseException:
        engine.close()
        raise
    wanted = getattr(settings, "product_max_photos", 1)
    short = capacity.short_of(wanted)
    (log.warning if short else log.info)(
        "engine.photo_capacity",
        extra={
            "photo_tokens": capacity.photo_tokens,
            "text_tokens": capacity.text_tokens,
            "n_ctx_per_slot": capacity.n_ctx,
            "photos_fit": capacity.photos_fit,
            "product_max_photos": wanted,
            "detail": short,
        },
    )


register("llama", _llama)
