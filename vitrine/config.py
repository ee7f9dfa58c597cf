"""Where the operator's commands find the stack: settings from ``VITRINE_*`` and the repo paths.

The operator tools talk to every server with the *owner/root* credentials (they read
``product_cards``, upload to the bucket, inspect consumer groups), so their settings compose all
three connection classes; defaults match ``infra/dev.env``, the environment wins.  The services'
own settings classes are not imported: the inference one pulls in llama.cpp, which a status
screen has no business loading.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from services.runtime.settings import (
    ApprovedTopic,
    ExportGroup,
    InferenceGroup,
    IngestGroup,
    KafkaSettings,
    PostgresSettings,
    S3Settings,
    SinkGroup,
)
from vitrine.targets import parse_targets

# The package lives in the repository checkout (editable install): infra/ is beside it.  An
# installed wheel has no infra/, and the commands that need it say so (vitrine.stack).
REPO_DIR = Path(__file__).resolve().parents[1]
INFRA_DIR = REPO_DIR / "infra"


class OpsSettings(
    KafkaSettings,
    IngestGroup,
    InferenceGroup,
    SinkGroup,
    ExportGroup,
    ApprovedTopic,
    S3Settings,
    PostgresSettings,
):
    """Everything ``vitrine status / put / cards / show / up`` read from the environment."""

    state_dir: Path | None = Field(
        None, description="infra/stack's state dir; None = <repo>/.vitrine"
    )
    inference_processes: int = Field(1, ge=0, description="Workers infra/services.sh runs.")
    # infra/services.sh: ingest base+1, sink base+2, review base+3, inference-N base+9+N.
    metrics_base_port: int = Field(
        29100, description="infra/services.sh's metrics ports start here (vitrine/targets.py)."
    )
    metrics_targets: str = Field(
        "",
        description=(
            "Where the services run elsewhere (compose, other hosts): comma-separated "
            "name=host:port of their /metrics, e.g. ingest=ingest:9100,sink=sink:9100,"
            "inference=inference-workers:9100. A host that resolves to several addresses (a "
            "scaled service) is one process per address. Empty = the native stack's pid files "
            "and ports."
        ),
    )

    @field_validator("metrics_targets")
    @classmethod
    def _targets_parse(cls, value: str) -> str:
        parse_targets(value)  # a typo is said at start, not shown as a service down
        return value

    @property
    def state_path(self) -> Path:
        return self.state_dir or REPO_DIR / ".vitrine"
