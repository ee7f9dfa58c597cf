"""The operator's S3 client: the services' MinIO settings, but quick to give up.

The minio package retries a refused connection for a long while by default, which is right for
a service riding out a restart and wrong for a person at a prompt: here a down MinIO is reported
within seconds, in one line.
"""

from __future__ import annotations

import urllib3
from minio import Minio
from minio.error import S3Error

from services.runtime.s3 import make_minio
from services.runtime.settings import S3Settings


class S3Unreachable(ConnectionError):
    """MinIO did not answer, refused the credentials, or has no such bucket."""


def ops_minio(settings: S3Settings) -> Minio:
    """Raises S3Unreachable for an endpoint that is not a usable URL."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3, read=120),
        retries=urllib3.Retry(total=2, backoff_factor=0.3, status_forcelist=(502, 503, 504)),
    )
    try:
        return make_minio(settings, http)
    except ValueError as exc:
        raise S3Unreachable(f"VITRINE_S3_ENDPOINT={settings.s3_endpoint}: {exc}") from None


def check_bucket(client: Minio, bucket: str, endpoint: str) -> None:
    """Fail early, in one line, when the bucket cannot be written to at all."""
    try:
        exists = client.bucket_exists(bucket)
    except S3Error as exc:
        raise S3Unreachable(f"{endpoint}: {exc.code}: {exc.message}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise S3Unreachable(f"cannot reach MinIO at {endpoint}: {reason}") from None
    if not exists:
        raise S3Unreachable(
            f"bucket {bucket} does not exist at {endpoint} (infra/stack up creates "
            "VITRINE_BUCKET with its notification)"
        )
