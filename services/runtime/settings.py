"""Connection settings shared by the services, from ``VITRINE_*`` environment variables.

Defaults match the native dev stack (``infra/dev.env``); each service composes these into its one
settings object.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:29092"
    topic_events: str = "minio.events"
    topic_jobs: str = "vitrine.jobs"
    topic_results: str = "vitrine.results"
    topic_dlq: str = "vitrine.jobs.dlq"
    metrics_port: int | None = Field(None, description="Prometheus /metrics port; None = off.")
    log_level: str = "INFO"


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    s3_endpoint: str = "http://127.0.0.1:29000"
    s3_access_key: str = "vitrine"
    s3_secret_key: SecretStr = SecretStr("vitrine-dev-secret")
    s3_region: str | None = None
    bucket: str = "incoming"


class PostgresSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    pg_dsn: SecretStr = SecretStr("postgresql://vitrine:vitrine@127.0.0.1:25432/vitrine")
