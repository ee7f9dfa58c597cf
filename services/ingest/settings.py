"""What the ingest service reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py)."""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import ImageSettings, IngestGroup, KafkaSettings, batch_max_field


class IngestSettings(KafkaSettings, IngestGroup, ImageSettings):
    ingest_batch_max: int = batch_max_field("ingest", "notifications")
    dedup_capacity: int = Field(
        200_000,
        ge=0,
        description="Handled notifications remembered to drop the second copy MinIO's two "
        "targets send (services/ingest/dedup.py); 0 turns the check off.",
    )
    dedup_lookback_s: float = Field(
        60.0,
        ge=0,
        description="At start, events handled this long before the last committed one are read "
        "back from the events topic and remembered, so a copy arriving across a restart is "
        "dropped too (services/ingest/recall.py); 0 turns it off.",
    )
