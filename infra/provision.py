"""Readiness checks and idempotent provisioning for the native dev stack.

Called by infra/stack (which exports the VITRINE_* variables from infra/dev.env), one
sub-command at a time:

    python infra/provision.py kafka-ready   # wait until the broker answers a metadata request
    python infra/provision.py topics        # create missing topics, raise partition counts
    python infra/provision.py bucket        # create the bucket, put its Kafka notification

Uses only packages the project depends on anyway (aiokafka, minio), so no extra tooling is
needed to administer Kafka or MinIO. Every step is safe to repeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from urllib.parse import urlsplit

# Bucket events that reach Kafka: every create (PUT, POST, COPY, multipart) and every removal.
BUCKET_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
NOTIFICATION_ID = "vitrine"


def env(name: str) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        sys.exit(f"provision: {name} is not set (run through infra/stack, or source infra/dev.env)")
    return value


def log(msg: str) -> None:
    print(f"provision: {msg}", flush=True)


# --- Kafka ------------------------------------------------------------------------------------


async def kafka_ready(timeout: float) -> None:
    """Wait until the broker answers metadata requests (the port alone opens before that)."""
    from aiokafka.admin import AIOKafkaAdminClient

    # "Unable connect to ..." is expected while the broker starts; keep it out of the output.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    # infra/stack passes the broker's pid, so that a broker that died is reported at once.
    pid = os.environ.get("VITRINE_WAIT_PID")
    while time.monotonic() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            sys.exit(f"provision: the Kafka process (pid {pid}) exited during startup")
        admin = AIOKafkaAdminClient(
            bootstrap_servers=env("VITRINE_KAFKA_BOOTSTRAP"), request_timeout_ms=5000
        )
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # any failure just means "not yet"
            last_error = exc
        finally:
            await admin.close()
        await asyncio.sleep(1)
    sys.exit(f"provision: Kafka not ready after {timeout:.0f}s: {last_error!r}")


def wanted_topics() -> dict[str, int]:
    topics = {}
    for kind in ("EVENTS", "JOBS", "RESULTS", "DLQ"):
        topics[env(f"VITRINE_TOPIC_{kind}")] = int(env(f"VITRINE_TOPIC_{kind}_PARTITIONS"))
    return topics


async def ensure_topics() -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=env("VITRINE_KAFKA_BOOTSTRAP"))
    await admin.start()
    try:
        wanted = wanted_topics()
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name, wanted[name], replication_factor=1) for name in missing]
            )
            for name in missing:
                log(f"created topic {name} ({wanted[name]} partitions)")

        present = [name for name in wanted if name in existing]
        if present:
            grow = {}
            for desc in await admin.describe_topics(present):
                name, count = desc["topic"], len(desc["partitions"])
                if count < wanted[name]:
                    grow[name] = NewPartitions(total_count=wanted[name])
                elif count > wanted[name]:
                    # Kafka cannot shrink a topic; keeping more partitions is harmless.
                    log(f"topic {name} has {count} partitions (> {wanted[name]} wanted), kept")
            if grow:
                await admin.create_partitions(grow)
                for name, np in grow.items():
                    log(f"raised topic {name} to {np.total_count} partitions")
    finally:
        await admin.close()


# --- MinIO ------------------------------------------------------------------------------------


def minio_client():
    from minio import Minio

    url = urlsplit(env("VITRINE_S3_ENDPOINT"))
    return Minio(
        url.netloc,
        access_key=env("VITRINE_S3_ACCESS_KEY"),
        secret_key=env("VITRINE_S3_SECRET_KEY"),
        secure=url.scheme == "https",
    )


def ensure_bucket() -> None:
    from minio.notificationconfig import NotificationConfig, QueueConfig

    client = minio_client()
    bucket = env("VITRINE_BUCKET")
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
        log(f"created bucket {bucket}")

    arn = f"arn:minio:sqs::{env('VITRINE_MINIO_TARGET')}:kafka"
    current = client.get_bucket_notification(bucket)
    have = {
        (q.queue, q.config_id, tuple(sorted(q.events)))
        for q in current.queue_config_list
    }
    want = (arn, NOTIFICATION_ID, tuple(sorted(BUCKET_EVENTS)))
    if have == {want}:
        return
    # Replaces the bucket's whole notification config with ours: the dev stack owns this bucket.
    client.set_bucket_notification(
        bucket,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(queue=arn, events=BUCKET_EVENTS, config_id=NOTIFICATION_ID)
            ]
        ),
    )
    log(f"bucket {bucket}: notifications {', '.join(BUCKET_EVENTS)} -> {arn}")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in ("kafka-ready", "topics", "bucket"):
        sys.exit("usage: provision.py kafka-ready|topics|bucket")
    command = argv[1]
    if command == "kafka-ready":
        asyncio.run(kafka_ready(float(os.environ.get("VITRINE_START_TIMEOUT", "120"))))
    elif command == "topics":
        asyncio.run(ensure_topics())
    else:
        ensure_bucket()


if __name__ == "__main__":
    main(sys.argv)
