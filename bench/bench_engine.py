"""A stand-in for the card engine that measures the pipeline, not the model.

    VITRINE_ENGINE=bench VITRINE_BENCH_ENGINE_MS=0 python -m bench.bench_engine

Run as a module, it registers itself as engine ``bench`` and starts the inference service
(``services.inference.worker.service.main``); the service itself never imports it.

The pipeline's own cost (notifications, Kafka hops, the object fetch, the sink's transaction) is
hidden behind seconds of inference with any real model, so ``bench/pipeline_bench.py`` swaps the
model for this engine: it returns one fixed, schema-valid card after VITRINE_BENCH_ENGINE_MS
(zero for "what does the pipeline add", a fixed sleep for "how do workers scale").  The bytes
are not even decoded.  Every card it makes says so (model id ``bench:<ms>ms``), and it refuses
to start with ``VITRINE_ENV=production``, so it cannot quietly stand in for a model.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from schemas.card import generation_schema
from schemas.messages import Timings
from services.inference.card.outcome import CardOutcome
from services.inference.card.prompt import Prompt
from services.inference.settings import EngineSettings
from services.runtime.settings import ModeSettings

_WORDS = (
    "Cartão sintético do motor de benchmark, sem modelo nem imagem: serve apenas para medir "
    "o custo do pipeline, das notificações do bucket às filas do Kafka e à linha gravada no "
    "PostgreSQL."
)


class BenchEngine:
    """An ``Engine`` (services/inference/worker/engines.py) that makes one fixed card.

    It takes ``VITRINE_ENGINE_PARALLEL`` cards at once (``auto`` = 1): a stand-in for the
    batched engine, each card still taking ``delay_ms``."""

    def __init__(self, settings: EngineSettings, delay_ms: float) -> None:
        self.delay_s = delay_ms / 1000.0
        parallel = settings.engine_parallel
        self.parallel = parallel if isinstance(parallel, int) else 1
        self.model_id = f"bench:{delay_ms:g}ms"
        card_type = settings.card_type()
        self.prompt: Prompt = settings.prompt(generation_schema(card_type))
        self.load_ms = 0.0
        # a leaf no attribute is required of (the card carries none)
        leaf = next(c for c in settings.tree().leaves if not any(a.required for a in c.attributes))
        self._card = card_type(
            product_name="Cartão de benchmark",
            category_standard=leaf.top,
            category_path=leaf.path_text,
            category_id=leaf.id,
            description_long=" ".join([_WORDS] * 6),
            color_primary=sorted(settings.profile.colours)[0],
            features_list=[
                "Nenhum modelo foi executado.",
                "Nenhum byte da imagem foi decodificado.",
                "Só o tempo do pipeline é medido.",
            ],
        )

    def card_for_bytes(self, data: bytes, *, seed: int | None = None) -> CardOutcome:
        if self.delay_s:
            time.sleep(self.delay_s)
        return CardOutcome(
            card=self._card,
            model_id=self.model_id,
            prompt_version=self.prompt.version,
            attempts=1,
            seed=0 if seed is None else seed,
            timings=Timings(generate_ms=self.delay_s * 1000.0),
        )

    def describe(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_s * 1000.0, "parallel": self.parallel}

    def close(self) -> None:
        pass


def bench_engine(settings: EngineSettings) -> BenchEngine:
    mode = ModeSettings().env
    if mode != "dev":
        raise SystemExit(
            f"inference: the bench engine is a benchmark stand-in without a model; "
            f"refused with VITRINE_ENV={mode}"
        )
    delay_ms = float(os.environ.get("VITRINE_BENCH_ENGINE_MS", "0") or 0)
    logging.getLogger("vitrine.inference").warning("engine.bench", extra={"delay_ms": delay_ms})
    return BenchEngine(settings, delay_ms)


def register() -> None:
    from services.inference.worker.engines import register as register_engine

    register_engine("bench", bench_engine)


if __name__ == "__main__":
    from services.inference.worker.service import main

    register()
    main()
