"""What the ingest service reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py).

The S3 settings are there for three reads (services/ingest/head.py): the first bytes of an
upload whose declared type and name are both silent, a product's manifest, and the listing of a
removed manifest's folder.  Ingest's own MinIO user (``VITRINE_INGEST_S3_*``, infra/services.sh)
holds GetObject on the bucket's objects and ListBucket on the bucket; the dev defaults are the
native stack's.
"""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import (
    IngestGroup,
    KafkaSettings,
    S3Settings,
    batch_max_field,
    product_max_photos_field,
)


class IngestSettings(KafkaSettings, IngestGroup, S3Settings):
    ingest_batch_max: int = batch_max_field("ingest", "notifications")
    product_max_photos: int = product_max_photos_field(
        "a manifest (product.json) naming more is rejected bad_manifest (schemas/products.py)."
    )
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
