"""A stand-in for the card engine that measures the pipeline, not the model.

    VITRINE_ENGINE=bench VITRINE_BENCH_ENGINE_MS=0 python -m services.inference

The pipeline's own cost (notifications, Kafka hops, the object fetch, the sink's transaction) is
hidden behind seconds of inference with any real model, so ``bench/pipeline_bench.py`` swaps the
model for this engine: it returns one fixed, schema-valid card after ``bench_engine_ms`` (zero for
"what does the pipeline add", a fixed sleep for "how do workers scale").  The bytes are not even
decoded.  Every card it makes says so (model id ``bench:<ms>ms``), and the service refuses it
with ``VITRINE_ENV=production``, so it cannot quietly stand in for a model.
"""

from __future__ import annotations

import time

from schemas.messages import Timings
from services.inference.engine import CardOutcome
from services.inference.prompt import Prompt
from services.inference.settings import EngineSettings

_WORDS = (
    "Cartão sintético do motor de benchmark, sem modelo nem imagem: serve apenas para medir "
    "o custo do pipeline, das notificações do bucket às filas do Kafka e à linha gravada no "
    "PostgreSQL."
)


class BenchEngine:
    """Duck-types ``CardEngine`` for the worker: ``card_for_bytes``, ``model_id``, ``prompt``."""

    def __init__(self, settings: EngineSettings, delay_ms: float) -> None:
        self.delay_s = delay_ms / 1000.0
        self.model_id = f"bench:{delay_ms:g}ms"
        card_type = settings.card_type()
        self.prompt: Prompt = settings.prompt(card_type.model_json_schema())
        self.load_ms = 0.0
        self._card = card_type(
            product_name="Cartão de benchmark",
            category_standard=settings.categories()[0],
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

    def close(self) -> None:
        pass
