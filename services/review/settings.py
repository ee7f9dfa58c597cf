"""What the review desk reads from ``VITRINE_*`` variables (shared ones: runtime/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.export.shop import ShopSettings
from services.runtime.settings import (
    DEV_S3_SECRET_KEYS,
    ApprovedTopic,
    CardContractSettings,
    KafkaSettings,
    PostgresSettings,
    S3Settings,
    SecretSettingsError,
    product_max_photos_field,
    read_secret_file,
)


class ReviewSettings(
    KafkaSettings, ApprovedTopic, S3Settings, PostgresSettings, CardContractSettings, ShopSettings
):
    """The desk: its address, its database role (VITRINE_PG_DSN), its read-only MinIO user
    (VITRINE_S3_*), its put-only upload user (VITRINE_UPLOAD_S3_*), its limits, and the card
    contract (VITRINE_LANGUAGE, VITRINE_TAXONOMY*, ...: the same variables the workers read)."""

    review_host: str = Field("127.0.0.1", description="Address the desk listens on.")
    product_max_photos: int = product_max_photos_field(
        "POST /v1/products takes no more (the workers read as many)."
    )
    review_port: int = Field(29080, ge=1, le=65535, description="The desk's HTTP port.")
    exports_bucket: str = Field(
        "exports",
        description="Where the export stage keeps the channels' feeds (the desk offers them for "
        "download: the same variable as the export stage's).",
    )
    upload_s3_access_key: str = Field("vitrine-upload", description="The upload user (put only).")
    upload_s3_secret_key: SecretStr = Field(
        SecretStr("vitrine-upload-dev-secret"),
        description="The upload user's secret (dev default refused in production).",
    )
    upload_s3_secret_key_file: Path | None = Field(
        None, description="File holding the upload user's secret; wins over the variable."
    )
    review_secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Secure flag of the session cookie: auto = when the request came over "
        "HTTPS (directly or as X-Forwarded-Proto from VITRINE_REVIEW_TRUSTED_PROXIES).",
    )
    review_trusted_proxies: str = Field(
        "",
        description="Addresses of the TLS proxies in front of the desk, comma-separated, whose "
        "X-Forwarded-Proto/For are believed (the Secure cookie, the login limit's address); "
        "empty: none (any local process could otherwise claim any client address).",
    )
    review_session_hours: float = Field(12.0, gt=0, description="A login lasts this long.")
    review_login_attempts: int = Field(
        5, ge=1, description="Failed logins per username per window."
    )
    review_login_attempts_per_address: int = Field(
        20,
        ge=1,
        description="Failed logins per client address per window (higher: an office behind "
        "one NAT address shares it).",
    )
    review_login_window_s: float = Field(300.0, gt=0, description="The login limits' window.")
    review_page_size: int = Field(50, ge=1, le=500, description="Cards per list page.")
    review_bulk_max: int = Field(
        1000, ge=1, description="Most cards one bulk approval may approve."
    )
    review_thumb_dir: Path | None = Field(
        None,
        description="Cache of generated thumbnails; None = $VITRINE_STATE_DIR/thumbs, or "
        "~/.cache/vitrine/thumbs.",
    )
    review_thumb_px: int = Field(160, ge=32, le=1024, description="Thumbnail side.")
    review_large_px: int = Field(1280, ge=256, le=4096, description="The card page's photo side.")
    review_publish_interval_s: float = Field(
        5.0, gt=0, description="How often approvals Kafka has not acknowledged are retried."
    )
    review_public_url: str = Field(
        "",
        description="The desk's address as clients reach it (https://desk.example.com), for "
        "the Location and status_url of an upload; empty: http://VITRINE_REVIEW_HOST:"
        "VITRINE_REVIEW_PORT. Never taken from the request's Host header.",
    )
    review_body_max_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request body of any route but the upload (forms, JSON edits), "
        "refused with 413 before it is read and before the caller is checked.",
    )
    review_password_checks: int = Field(
        2,
        ge=1,
        description="Password hashes checked at once (argon2 runs in threads, off the event "
        "loop); more logins wait their turn.",
    )
    state_dir: Path | None = Field(None, description="The dev stack's state directory.")

    @model_validator(mode="after")
    def _upload_secret(self) -> ReviewSettings:
        if self.upload_s3_secret_key_file is not None:
            self.upload_s3_secret_key = SecretStr(
                read_secret_file(
                    "VITRINE_UPLOAD_S3_SECRET_KEY_FILE", self.upload_s3_secret_key_file, self.env
                )
            )
        secret = self.upload_s3_secret_key.get_secret_value()
        if self.env != "dev" and secret in DEV_S3_SECRET_KEYS | {"vitrine-upload-dev-secret"}:
            raise SecretSettingsError(
                f"VITRINE_UPLOAD_S3_SECRET_KEY holds a built-in dev credential, refused with "
                f"VITRINE_ENV={self.env}: set it (or its _FILE) to the upload user's secret"
            )
        return self

    @property
    def thumb_dir(self) -> Path:
        if self.review_thumb_dir is not None:
            return self.review_thumb_dir
        if self.state_dir is not None:
            return self.state_dir / "thumbs"
        return Path.home() / ".cache" / "vitrine" / "thumbs"

    def upload_s3(self) -> S3Settings:
        """The S3 settings of the upload user (same endpoint and bucket)."""
        return S3Settings.model_validate(
            {
                **self.model_dump(include=set(S3Settings.model_fields)),
                "s3_access_key": self.upload_s3_access_key,
                "s3_secret_key": self.upload_s3_secret_key,
                "s3_secret_key_file": None,
            }
        )
