"""Readiness checks and idempotent provisioning for the native dev stack.

Called by infra/stack (which exports the VITRINE_* variables from infra/dev.env), one
sub-command at a time:

    python infra/provision.py kafka-ready   # wait until the broker answers a metadata request
    python infra/provision.py topics        # create missing topics, raise partition counts
    python infra/provision.py bucket        # create the bucket, put its Kafka notification
    python infra/provision.py minio-users   # the services' users, each with its one policy

Uses only packages the project depends on anyway (aiokafka, minio), so no extra tooling is
needed to administer Kafka or MinIO. Every step is safe to repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

# Bucket events that reach Kafka: every create (PUT, POST, COPY, multipart) and every removal.
BUCKET_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
NOTIFICATION_ID = "vitrine"
# The inference service's MinIO policy: read objects of the pipeline's bucket, nothing else.
INFERENCE_POLICY = "vitrine-inference-read"
# Ingest's: read objects of the bucket (manifests, the first bytes of uploads) and list its keys
# (a product folder's photos once its manifest is deleted), nothing else.
INGEST_POLICY = "vitrine-ingest-read"
# The review desk's two: its reader shows the photos (the same actions as the inference one), its
# upload user only puts new photos into the bucket (no read, list, overwrite check or delete).
REVIEW_POLICY = "vitrine-review-read"
UPLOAD_POLICY = "vitrine-upload-put"
# The export stage's: keep the feeds in the exports bucket (read, write, list, remove a card's
# file there), nothing in the pipeline's bucket. The desk's reader may read the feeds too.
EXPORT_POLICY = "vitrine-export-feeds"
READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion")
PUT_ACTIONS = ("s3:PutObject",)
FEED_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
LIST_ACTIONS = ("s3:ListBucket",)


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
    for kind in ("EVENTS", "JOBS", "RESULTS", "DLQ", "APPROVED"):
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
    exports = exports_bucket()
    if not client.bucket_exists(exports):  # the feeds' bucket: no notification, no events
        client.make_bucket(exports)
        log(f"created bucket {exports} (the channels' feeds)")

    # The durable target (disk queue, never loses an event, up to 3 s late) always; the fast one
    # (immediate, drops events while Kafka is down) too unless VITRINE_MINIO_FAST_PATH=off.
    targets = {NOTIFICATION_ID: env("VITRINE_MINIO_TARGET")}
    if os.environ.get("VITRINE_MINIO_FAST_PATH", "on") != "off":
        targets[NOTIFICATION_ID + "-fast"] = env("VITRINE_MINIO_FAST_TARGET")
    want = {
        (f"arn:minio:sqs::{target}:kafka", config_id, tuple(sorted(BUCKET_EVENTS)))
        for config_id, target in targets.items()
    }
    current = client.get_bucket_notification(bucket)
    have = {(q.queue, q.config_id, tuple(sorted(q.events))) for q in current.queue_config_list}
    if have == want:
        return
    # Replaces the bucket's whole notification config with ours: the dev stack owns this bucket.
    client.set_bucket_notification(
        bucket,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(queue=arn, events=BUCKET_EVENTS, config_id=config_id)
                for arn, config_id, _ in sorted(want)
            ]
        ),
    )
    arns = ", ".join(sorted(arn for arn, _, _ in want))
    log(f"bucket {bucket}: notifications {', '.join(BUCKET_EVENTS)} -> {arns}")


def allow(actions: tuple[str, ...], resource: str) -> dict[str, Any]:
    """One policy statement: allow ``actions`` on ``resource`` (an ARN)."""
    return {"Effect": "Allow", "Action": list(actions), "Resource": [resource]}


def object_policy(bucket: str, actions: tuple[str, ...]) -> dict[str, Any]:
    """A policy allowing ``actions`` on the objects of ``bucket`` (``arn:aws:s3:::bucket/*``) and
    nothing else: no bucket-level action (ListBucket, GetBucketLocation, ...), no other bucket, no
    admin action."""
    return {"Version": "2012-10-17", "Statement": [allow(actions, f"arn:aws:s3:::{bucket}/*")]}


def inference_policy(bucket: str) -> dict[str, Any]:
    """s3:GetObject (+ s3:GetObjectVersion, which AWS requires for reads by version id; MinIO
    accepts GetObject alone) on the bucket's objects. No GetBucketLocation, ListBucket,
    ListAllMyBuckets, Put*, Delete* or admin action: the workers sign for VITRINE_S3_REGION, so
    they never ask the server for the bucket's region. The review desk's reader gets the same."""
    return object_policy(bucket, READ_ACTIONS)


def ingest_policy(bucket: str) -> dict[str, Any]:
    """The read policy's statement plus s3:ListBucket on the bucket itself
    (``arn:aws:s3:::bucket``): ingest lists a product folder (ListObjects, with MinIO's user
    metadata) once its manifest is deleted. No GetBucketLocation (ingest signs for
    VITRINE_S3_REGION), ListBucketVersions, ListBucketMultipartUploads, ListAllMyBuckets, Put*,
    Delete*, other bucket or admin action."""
    policy = inference_policy(bucket)
    policy["Statement"].append(allow(LIST_ACTIONS, f"arn:aws:s3:::{bucket}"))
    return policy


def exports_bucket() -> str:
    return os.environ.get("VITRINE_EXPORTS_BUCKET") or "exports"


def review_policy(bucket: str, exports: str) -> dict[str, Any]:
    """The read policy on the pipeline's bucket (the photos) and on the exports bucket's
    objects (the desk offers the feeds for download); nothing else."""
    policy = inference_policy(bucket)
    policy["Statement"].append(allow(READ_ACTIONS, f"arn:aws:s3:::{exports}/*"))
    return policy


def export_policy(exports: str) -> dict[str, Any]:
    """s3:GetObject, PutObject and DeleteObject on the exports bucket's objects and ListBucket on
    it (a card's JSON-LD file is removed once the card leaves the feed); nothing on the pipeline's
    bucket, no other bucket, no admin action."""
    policy = object_policy(exports, FEED_ACTIONS)
    policy["Statement"].append(allow(LIST_ACTIONS, f"arn:aws:s3:::{exports}"))
    return policy


def upload_policy(bucket: str) -> dict[str, Any]:
    """s3:PutObject on the bucket's objects, nothing else (multipart uploads are covered by
    PutObject too): the desk's upload form cannot read, list or delete what is there."""
    return object_policy(bucket, PUT_ACTIONS)


def minio_admin() -> Any:
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    url = urlsplit(env("VITRINE_S3_ENDPOINT"))
    return MinioAdmin(
        endpoint=url.netloc,
        credentials=StaticProvider(env("VITRINE_S3_ACCESS_KEY"), env("VITRINE_S3_SECRET_KEY")),
        secure=url.scheme == "https",
    )


def normalised_policy(policy: dict[str, Any] | None) -> Any:
    """A policy document in a comparable form: MinIO returns the actions and resources of a
    statement in no fixed order."""
    if policy is None:
        return None
    statements = [
        {k: sorted(v) if isinstance(v, list) else v for k, v in statement.items()}
        for statement in policy.get("Statement", [])
    ]
    return {
        **policy,
        "Statement": sorted(statements, key=lambda st: json.dumps(st, sort_keys=True)),
    }


def credentials_work(access_key: str, secret: str, bucket: str) -> bool:
    """Whether MinIO accepts this key pair: a GET of a key that does not exist answers
    NoSuchKey (or AccessDenied) for a valid pair, InvalidAccessKeyId/SignatureDoesNotMatch
    otherwise. Signed for VITRINE_S3_REGION, so no GetBucketLocation is needed."""
    from minio import Minio
    from minio.error import S3Error

    url = urlsplit(env("VITRINE_S3_ENDPOINT"))
    client = Minio(
        url.netloc,
        access_key=access_key,
        secret_key=secret,
        secure=url.scheme == "https",
        region=os.environ.get("VITRINE_S3_REGION") or "us-east-1",
    )
    try:
        client.get_object(bucket, ".vitrine-credentials-probe").close()
    except S3Error as exc:
        return exc.code not in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    return True


def apply_user(
    admin: Any, user: str, secret: str, bucket: str, policy: str, wanted: dict[str, Any]
) -> bool:
    """Make ``user`` (with ``secret``) hold exactly ``policy``, whose document is ``wanted``.

    Idempotent, and read-only when nothing changed (several `up`s may run at once): the policy
    document, the user's secret and its mapping are each written only when they differ from the
    wanted state. ``bucket`` is where the secret is probed (credentials_work). Returns whether
    anything was written.
    """
    from minio.error import MinioAdminException

    try:
        current = json.loads(admin.policy_info(policy))
    except MinioAdminException:  # no such policy yet
        current = None
    changed = False
    if normalised_policy(current) != normalised_policy(wanted):
        admin.policy_add(policy, policy=wanted)
        changed = True
    try:
        info = json.loads(admin.user_info(user))
    except MinioAdminException:  # no such user yet
        info = None
    if (
        info is None
        or info.get("status") != "enabled"
        or not credentials_work(user, secret, bucket)
    ):
        # Creates the user, or re-sets the secret of an existing one (its mapping is kept).
        admin.user_add(user, secret)
        changed = True
    if info is None or info.get("policyName") != policy:
        # Replaces the user's whole policy mapping: any policy attached by hand is dropped.
        admin.policy_set(policy, user=user)
        changed = True
    return changed


def apply_read_only_user(admin: Any, user: str, secret: str, bucket: str, policy: str) -> bool:
    """Make ``user`` (with ``secret``) hold exactly ``policy`` = read objects of ``bucket``."""
    return apply_user(admin, user, secret, bucket, policy, inference_policy(bucket))


# Each service's MinIO user: (variable prefix, policy name, the policy's document for the
# pipeline's bucket and the exports bucket). infra/services.sh gives each service its own user's
# credentials instead of the root ones.
PolicyDocument = Callable[[str, str], dict[str, Any]]
MINIO_USERS: tuple[tuple[str, str, PolicyDocument], ...] = (
    ("VITRINE_INFERENCE_S3", INFERENCE_POLICY, lambda b, _: inference_policy(b)),  # workers
    ("VITRINE_INGEST_S3", INGEST_POLICY, lambda b, _: ingest_policy(b)),  # reads, lists folders
    ("VITRINE_REVIEW_S3", REVIEW_POLICY, review_policy),  # the desk's photos and the feeds
    ("VITRINE_UPLOAD_S3", UPLOAD_POLICY, lambda b, _: upload_policy(b)),  # the upload form
    ("VITRINE_EXPORT_S3", EXPORT_POLICY, lambda _, e: export_policy(e)),  # the export stage
)


def describe_policy(policy: dict[str, Any]) -> str:
    """``GetObject + GetObjectVersion on incoming/*; ListBucket on incoming`` for a log line."""
    parts = []
    for statement in policy["Statement"]:
        resources = ", ".join(r.removeprefix("arn:aws:s3:::") for r in statement["Resource"])
        parts.append(f"{' + '.join(statement['Action'])} on {resources}")
    return "; ".join(parts)


def ensure_minio_users() -> None:
    """Every user of MINIO_USERS (``<prefix>_ACCESS_KEY`` / ``<prefix>_SECRET_KEY``), each holding
    exactly its one policy on VITRINE_BUCKET."""
    bucket = env("VITRINE_BUCKET")
    root = env("VITRINE_S3_ACCESS_KEY")
    users = [(env(f"{p}_ACCESS_KEY"), env(f"{p}_SECRET_KEY"), p, n, d) for p, n, d in MINIO_USERS]
    seen: dict[str, str] = {}
    for user, secret, prefix, _, _ in users:
        if user == root:
            sys.exit(f"provision: {prefix}_ACCESS_KEY must differ from the root user")
        if user in seen:
            sys.exit(f"provision: {prefix}_ACCESS_KEY and {seen[user]}_ACCESS_KEY are one user")
        seen[user] = prefix
        if len(secret) < 8:
            sys.exit(f"provision: {prefix}_SECRET_KEY needs at least 8 characters")
    admin = minio_admin()
    for user, secret, _, policy, document in users:
        wanted = document(bucket, exports_bucket())
        if apply_user(admin, user, secret, bucket, policy, wanted):
            log(f"minio user {user}: policy {policy} = {describe_policy(wanted)} (updated)")


COMMANDS = ("kafka-ready", "topics", "bucket", "minio-users")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        sys.exit(f"usage: provision.py {'|'.join(COMMANDS)}")
    command = argv[1]
    if command == "kafka-ready":
        asyncio.run(kafka_ready(float(os.environ.get("VITRINE_START_TIMEOUT", "120"))))
    elif command == "topics":
        asyncio.run(ensure_topics())
    elif command == "bucket":
        ensure_bucket()
    else:
        ensure_minio_users()


if __name__ == "__main__":
    main(sys.argv)
