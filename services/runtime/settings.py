"""Connection settings shared by the services, from ``VITRINE_*`` environment variables.

Defaults match the native dev stack (``infra/dev.env``); each service composes these into its one
settings object.

Secrets (the S3 secret key, the PostgreSQL DSN with its password) come from the environment or
from a file named by ``VITRINE_<NAME>_FILE`` (a mounted Docker/Kubernetes secret, a file outside
the repository); the file, when set, wins over the variable.  The built-in dev credentials are
accepted only in dev mode, ``VITRINE_ENV=dev`` (the default); with ``VITRINE_ENV=production``
a dev credential — whether defaulted or set explicitly, e.g. by sourcing ``infra/dev.env`` — and a
secret file inside a git work tree are refused at start-up with an error naming the variable.
Validation errors never echo the input values (``hide_input_in_errors``), so a refused
setting cannot print a secret into a log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.contract import CardContract, ColourVocabulary, WordMinimum
from schemas.language import profile_for

Mode = Literal["dev", "production"]

# The dev stack's credentials (infra/dev.env, and the defaults below).  Outside dev mode each is
# refused wherever it comes from; tests/stack/test_security.py checks that this list covers dev.env.
DEV_S3_SECRET_KEY = "vitrine-dev-secret"
DEV_PG_DSN = "postgresql://vitrine:vitrine@127.0.0.1:25432/vitrine"
DEV_S3_SECRET_KEYS = frozenset(
    {
        DEV_S3_SECRET_KEY,
        "vitrine-inference-dev-secret",
        "vitrine-ingest-dev-secret",
        "vitrine-review-dev-secret",
        "vitrine-upload-dev-secret",
        "vitrine-export-dev-secret",
    }
)
DEV_PG_PASSWORDS = frozenset(
    {"vitrine", "vitrine-sink-dev", "vitrine-reader-dev", "vitrine-review-dev"}
)

# Secret files larger than this are refused (a DSN or a key is a few hundred bytes at most).
SECRET_FILE_MAX_BYTES = 64 * 1024


class SecretSettingsError(ValueError):
    """A secret setting that must not be used (dev default outside dev mode, unreadable file)."""


def git_work_tree_of(path: Path) -> Path | None:
    """The git work tree that contains ``path``, if any (a ``.git`` entry in a parent)."""
    for parent in path.resolve().parents:
        if (parent / ".git").exists():
            return parent
    return None


def read_secret_file(variable: str, path: Path, mode: Mode) -> str:
    """The secret in ``path`` (one trailing newline dropped); errors name ``variable``."""
    if mode != "dev" and (tree := git_work_tree_of(path)) is not None:
        raise SecretSettingsError(
            f"{variable}={path} is inside the git work tree {tree}; with VITRINE_ENV={mode} "
            "secrets must live outside the repository"
        )
    try:
        with path.open("rb") as fh:
            raw = fh.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SecretSettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > SECRET_FILE_MAX_BYTES:
        raise SecretSettingsError(f"{variable}: {path} is over {SECRET_FILE_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretSettingsError(f"{variable}: {path} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if not text.strip():
        raise SecretSettingsError(f"{variable}: {path} is empty")
    return text


def dsn_password(dsn: str) -> str | None:
    """The password inside a libpq DSN (URL or ``key=value`` form); None when it has none."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # the message may quote the DSN, password included: never re-raise it
        raise SecretSettingsError("VITRINE_PG_DSN is not a valid libpq connection string") from None
    password = params.get("password")
    return None if password is None else str(password)


class VitrineSettings(BaseSettings):
    """The one base of every settings class: ``VITRINE_<FIELD>`` variables, unknown ones
    ignored (one environment serves every service), an empty value meaning "not set" (compose
    passes every setting as ``${VITRINE_X:-}``), and validation errors that never echo a value
    (a refused setting cannot print a secret into a log)."""

    model_config = SettingsConfigDict(
        env_prefix="VITRINE_",
        extra="ignore",
        env_ignore_empty=True,
        hide_input_in_errors=True,
        populate_by_name=True,  # a field renamed with its old variable kept as an alias
    )


def batch_max_field(service: str, what: str) -> Any:
    """``VITRINE_<SERVICE>_BATCH_MAX``, most ``what`` per batch; the old shared name
    ``VITRINE_BATCH_MAX`` still sets it."""
    return Field(
        500,
        ge=1,
        validation_alias=AliasChoices(f"VITRINE_{service.upper()}_BATCH_MAX", "VITRINE_BATCH_MAX"),
        description=f"Most {what} per batch (VITRINE_BATCH_MAX, the old shared name, still works).",
    )


def product_max_photos_field(what: str) -> Any:
    """``VITRINE_PRODUCT_MAX_PHOTOS``: the photos one product card reads at most, one bound for
    every service that holds a product to it (``what`` says how this one does)."""
    return Field(6, ge=1, le=20, description=f"Photos one product card reads at most: {what}")


class ModeSettings(VitrineSettings):
    """``VITRINE_ENV``: ``dev`` accepts the dev stack's credentials, ``production`` does not."""

    env: Mode = Field(
        "dev",
        description="dev: the built-in dev credentials are accepted; production: refused.",
    )


class ImageSettings(VitrineSettings):
    """Which objects are photos for this pipeline; read by ingest (from the event's metadata)
    and by the worker (from the fetched bytes)."""

    bucket: str = Field("incoming", description="The bucket served; events of others are ignored.")
    image_max_bytes: int = Field(
        30 * 1024 * 1024, ge=1, description="Larger objects are rejected as image_too_large."
    )


class CardContractSettings(VitrineSettings):
    """The card contract (``schemas/contract.py``), read alike by the workers, which generate
    the card, and by the review desk, which holds a person's edits to the same rules."""

    language: str = Field(
        "pt-BR", description="Output language: its taxonomy, colours, checks and prompt."
    )
    taxonomy: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, description="Categories: a JSON list or ';'-separated; None = language default."
    )
    taxonomy_file: Path | None = Field(
        None,
        description="A category tree: YAML/JSON (.yaml, .yml, .json; attributes per category) "
        "or Google's text format ('id - A > B > C' per line; 'A > B' and plain names too); "
        "None = the language's shipped tree.",
    )
    min_description_words: int = Field(
        150, ge=1, description="Words description_long must have (grammar and check)."
    )
    word_minimum: WordMinimum = Field(
        "grammar",
        description="grammar: the description's word minimum is a pattern the grammar "
        "enforces (its character bounds are then checked after generation); check: the "
        "grammar enforces the character bounds and the word count is checked after.",
    )
    colour_vocabulary: ColourVocabulary = Field(
        "grammar",
        description="grammar: the grammar allows the language's colour names with modifiers "
        "('azul-marinho', 'verde claro'); enforce: only the base names (a fixed facet, an "
        "enum); check: free text, checked against the vocabulary after generation.",
    )

    @field_validator("taxonomy", mode="before")
    @classmethod
    def _parse_taxonomy(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(";") if part.strip())
        return value

    @model_validator(mode="after")
    def _known_language(self) -> CardContractSettings:
        profile_for(self.language)  # an unsupported language fails at start, naming the known
        return self

    def card_contract(self) -> CardContract:
        """The contract these settings describe (its fields are this class's, by name)."""
        return CardContract(**self.model_dump(include=set(CardContractSettings.model_fields)))


class KafkaSettings(VitrineSettings):
    """The broker and the topics (every service and `vitrine` read them)."""

    kafka_bootstrap: str = Field("127.0.0.1:29092", description="Kafka brokers, host:port[,...].")
    topic_events: str = Field("minio.events", description="MinIO's bucket notifications.")
    topic_jobs: str = Field("vitrine.jobs", description="Jobs from ingest to the workers.")
    topic_results: str = Field(
        "vitrine.results", description="Results (every status) for the sink and consumers."
    )
    topic_dlq: str = Field(
        "vitrine.jobs.dlq", description="The one dead-letter topic, for every service."
    )
    metrics_port: int | None = Field(None, description="Prometheus /metrics port; None = off.")
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address /metrics binds to: loopback for the native stack; 0.0.0.0 in a "
        "container, where Prometheus scrapes it over the container network.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")


# Each consumer group's name, defined once: its service reads it, and so do the operator's
# commands (vitrine status, lag), which compose all three.
class IngestGroup(VitrineSettings):
    ingest_group: str = Field("vitrine-ingest", description="Ingest's consumer group.")


class InferenceGroup(VitrineSettings):
    inference_group: str = Field(
        "vitrine-inference", description="The workers' consumer group (they share the jobs)."
    )


class SinkGroup(VitrineSettings):
    sink_group: str = Field("vitrine-sink", description="The sink's consumer group.")


class ExportGroup(VitrineSettings):
    export_group: str = Field("vitrine-export", description="The export stage's consumer group.")


class ApprovedTopic(VitrineSettings):
    """The topic approved cards go to: the desk publishes it, the export stage reads it."""

    topic_approved: str = Field(
        "vitrine.cards.approved", description="Approved cards (ApprovedCard), key bucket/key."
    )


class S3Settings(ImageSettings, ModeSettings):
    s3_endpoint: str = Field("http://127.0.0.1:29000", description="The S3 (MinIO) URL.")
    s3_access_key: str = Field("vitrine", description="The S3 user.")
    s3_secret_key: SecretStr = Field(
        SecretStr(DEV_S3_SECRET_KEY),
        description="The S3 user's secret (dev default refused in production).",
    )
    s3_secret_key_file: Path | None = Field(
        None, description="File holding the S3 secret key; wins over VITRINE_S3_SECRET_KEY."
    )
    s3_region: str | None = Field(
        None,
        description="Region to sign for; None = ask the server (GetBucketLocation), which a "
        "read-only user is not allowed to do: set it (us-east-1 for MinIO) with one.",
    )

    @model_validator(mode="after")
    def _s3_secret(self) -> S3Settings:
        if self.s3_secret_key_file is not None:
            self.s3_secret_key = SecretStr(
                read_secret_file("VITRINE_S3_SECRET_KEY_FILE", self.s3_secret_key_file, self.env)
            )
        if self.env != "dev" and self.s3_secret_key.get_secret_value() in DEV_S3_SECRET_KEYS:
            source = (
                "VITRINE_S3_SECRET_KEY_FILE" if self.s3_secret_key_file else "VITRINE_S3_SECRET_KEY"
            )
            raise SecretSettingsError(
                f"{source} holds a built-in dev credential, refused with VITRINE_ENV={self.env}: "
                "set VITRINE_S3_SECRET_KEY or VITRINE_S3_SECRET_KEY_FILE to a real secret "
                "(or VITRINE_ENV=dev for the dev stack)"
            )
        return self


class PostgresSettings(ModeSettings):
    pg_dsn: SecretStr = Field(
        SecretStr(DEV_PG_DSN),
        description="libpq connection string (dev default refused in production).",
    )
    pg_dsn_file: Path | None = Field(
        None, description="File holding the DSN; wins over VITRINE_PG_DSN."
    )

    @model_validator(mode="after")
    def _pg_secret(self) -> PostgresSettings:
        if self.pg_dsn_file is not None:
            self.pg_dsn = SecretStr(
                read_secret_file("VITRINE_PG_DSN_FILE", self.pg_dsn_file, self.env)
            )
        if self.env != "dev":
            dsn = self.pg_dsn.get_secret_value()
            if dsn == DEV_PG_DSN or dsn_password(dsn) in DEV_PG_PASSWORDS:
                source = "VITRINE_PG_DSN_FILE" if self.pg_dsn_file else "VITRINE_PG_DSN"
                raise SecretSettingsError(
                    f"{source} holds a built-in dev credential, refused with "
                    f"VITRINE_ENV={self.env}: set VITRINE_PG_DSN or VITRINE_PG_DSN_FILE to the "
                    "service's own role and password (or VITRINE_ENV=dev for the dev stack)"
                )
        return self
