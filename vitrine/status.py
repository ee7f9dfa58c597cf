"""``vitrine status``: one snapshot of the whole pipeline, for the screen and for ``--json``.

Each part is gathered on its own and a failing part becomes a *down* entry with its error, never
an exception: the status screen is what an operator opens when something is broken, so it must
show whatever it can still reach.  ``healthy`` is false when any server or service is not up;
the command turns that into exit code 3.  Review quality (services/review/quality.py) is shown
for information only: it never makes the pipeline unhealthy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.api import QualityReport
from vitrine.cards import CardStats, DatabaseUnreachable, card_stats, connect, jsonable
from vitrine.config import OpsSettings
from vitrine.health import (
    ServerHealth,
    ServiceHealth,
    minio_health,
    service_health,
    service_targets,
)
from vitrine.lag import GroupLag, KafkaUnreachable, consumer_lag


@dataclass
class Status:
    taken_at: datetime
    bucket: str
    servers: list[ServerHealth]
    services: list[ServiceHealth]
    lag: list[GroupLag] = field(default_factory=list)
    cards: CardStats | None = None
    cards_error: str | None = None
    quality: QualityReport | None = None
    quality_error: str | None = None

    @property
    def healthy(self) -> bool:
        return all(s.up for s in self.servers) and all(s.up for s in self.services)

    @property
    def problems(self) -> list[str]:
        found = [f"server {s.name} down" for s in self.servers if not s.up]
        found += [f"service {s.name} {s.state}" for s in self.services if not s.up]
        return found

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "taken_at": self.taken_at,
                "healthy": self.healthy,
                "problems": self.problems,
                "bucket": self.bucket,
                "servers": [asdict(s) for s in self.servers],
                "services": [{**asdict(s), "up": s.up, "state": s.state} for s in self.services],
                "lag": [{**asdict(g), "total": g.total} for g in self.lag],
                "cards": asdict(self.cards) if self.cards else None,
                "cards_error": self.cards_error,
                "quality": self.quality.model_dump(mode="json") if self.quality else None,
                "quality_error": self.quality_error,
            }
        )


def gather(settings: OpsSettings, bucket: str, minutes: int = 10) -> Status:
    """Probe everything once; never raises for an unreachable server."""
    groups = {
        settings.ingest_group: settings.topic_events,
        settings.inference_group: settings.topic_jobs,
        settings.sink_group: settings.topic_results,
        settings.export_group: settings.topic_approved,
    }
    kafka = ServerHealth("kafka", settings.kafka_bootstrap, True)
    lag: list[GroupLag] = []
    try:
        lag = consumer_lag(settings.kafka_bootstrap, groups)
    except (KafkaUnreachable, TimeoutError) as exc:
        kafka.up, kafka.error = False, str(exc) or "timed out"

    dsn = settings.pg_dsn.get_secret_value()
    postgres = ServerHealth("postgres", _dsn_address(dsn), True)
    cards: CardStats | None = None
    cards_error: str | None = None
    try:
        cards = card_stats(dsn, bucket, minutes=minutes)
    except DatabaseUnreachable as exc:
        postgres.up, postgres.error = False, str(exc)
        cards_error = str(exc)
    except Exception as exc:  # reachable, but the query failed (missing table, grants)
        cards_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    quality: QualityReport | None = None
    quality_error: str | None = None
    if postgres.up:
        try:
            quality = review_quality(dsn, bucket)
        except Exception as exc:  # information only: said, never a reason to fail
            quality_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"

    return Status(
        taken_at=datetime.now(UTC),
        bucket=bucket,
        servers=[kafka, minio_health(settings.s3_endpoint), postgres],
        services=[service_health(t) for t in service_targets(settings)],
        lag=lag,
        cards=cards,
        cards_error=cards_error,
        quality=quality,
        quality_error=quality_error,
    )


def review_quality(dsn: str, bucket: str) -> QualityReport:
    """What reviewers made of the bucket's cards, by model and prompt version (the desk's
    ``GET /v1/quality``, read with the operator's read-only role)."""
    from services.review.quality import summary_sync

    with connect(dsn) as conn:
        return summary_sync(conn, bucket)


QUALITY_LINES = 3
"""Model and prompt pairs the status screen shows (the most decided first)."""


def quality_lines(snapshot: Status) -> list[str]:
    """``review quality gemma-3:Q4_K_M / card-v3: 40 decided, approved 75.0 % (unchanged
    50.0 %), edited description_long 20.0 %, product_name 10.0 %, decision p50 12 min, p90
    3.5 h``: one line per model and prompt pair, the most decided first."""
    from services.review.quality import duration

    if snapshot.quality is None:
        return [f"review quality: {snapshot.quality_error}"] if snapshot.quality_error else []
    groups = snapshot.quality.groups
    if not groups:
        return ["review quality: no decided cards"]
    lines = []
    for g in groups[:QUALITY_LINES]:
        edits = sorted((-rate, name) for name, rate in g.edit_rate.items() if rate > 0)
        edited = ", ".join(f"{name} {-100 * rate:.1f} %" for rate, name in edits) or "none"
        lines.append(
            f"review quality {g.model_id or '-'} / {g.prompt_version or '-'}: "
            f"{g.decided} decided, approved {100 * g.approval_rate:.1f} % "
            f"(unchanged {100 * g.unchanged_approval_rate:.1f} %), edited {edited}, "
            f"decision p50 {duration(g.median_decision_s)}, p90 {duration(g.p90_decision_s)}"
        )
    if len(groups) > QUALITY_LINES:
        lines.append(f"review quality: {len(groups) - QUALITY_LINES} more (vitrine status --json)")
    return lines


def colour_flags(cards: CardStats | None) -> str | None:
    """``colour flags: 3 of 120 done (2.5 %)``: done cards whose colour the pixels contradict,
    and how many done cards carry no colour check; None when the cards could not be read."""
    if cards is None:
        return None
    done = cards.counts.get("done", 0)
    if not done:
        return "colour flags: no done cards"
    line = (
        f"colour flags: {cards.colour_flagged} of {done} done "
        f"({100 * cards.colour_flagged / done:.1f} %)"
    )
    unchecked = done - cards.colour_checked
    if unchecked > 0:
        line += f"; {unchecked} without a colour check"
    return line


def _dsn_address(dsn: str) -> str:
    """host:port/db of a DSN, without the credentials (the screen must not show a password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "(invalid VITRINE_PG_DSN)"
    return (
        f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    )
