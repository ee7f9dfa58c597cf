"""What the sink reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py)."""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import KafkaSettings, PostgresSettings, SinkGroup, batch_max_field


class SinkSettings(KafkaSettings, SinkGroup, PostgresSettings):
    sink_batch_max: int = batch_max_field("sink", "results")
    batch_wait_ms: int = Field(50, ge=0, description="How long a batch may wait to fill.")
