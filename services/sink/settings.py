"""What the sink reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from services.runtime.settings import KafkaSettings, PostgresSettings, SinkGroup


class SinkSettings(KafkaSettings, SinkGroup, PostgresSettings):
    sink_batch_max: int = Field(
        500,
        ge=1,
        validation_alias=AliasChoices("VITRINE_SINK_BATCH_MAX", "VITRINE_BATCH_MAX"),
        description="Results per transaction (VITRINE_BATCH_MAX, the old shared name, still "
        "works).",
    )
    batch_wait_ms: int = Field(50, ge=0, description="How long a batch may wait to fill.")
