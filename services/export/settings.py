"""What the export stage reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py,
the shop's: ``shop.py``)."""

from __future__ import annotations

from pydantic import Field

from services.export.shop import ShopSettings
from services.runtime.settings import (
    ApprovedTopic,
    CardContractSettings,
    ExportGroup,
    KafkaSettings,
    PostgresSettings,
    S3Settings,
    batch_max_field,
)


class ExportSettings(
    KafkaSettings,
    ApprovedTopic,
    ExportGroup,
    PostgresSettings,
    S3Settings,
    CardContractSettings,
    ShopSettings,
):
    """The stage: its group on the approved topic, its read-only database role (VITRINE_PG_DSN:
    the reader's), its MinIO user (VITRINE_S3_*: the exports bucket only), the bucket whose
    cards it exports (VITRINE_BUCKET), the tree that maps their categories, the shop."""

    exports_bucket: str = Field(
        "exports", description="Where the feeds are kept (a channel fetches them from here)."
    )
    export_batch_max: int = batch_max_field("export", "approvals")
    export_wait_ms: int = Field(
        2000,
        ge=0,
        description="How long a batch of approvals may wait to fill: a burst of approvals "
        "makes one write of the feeds.",
    )
