"""Least privilege of the review desk against the running stack: what role ``vitrine_review``
and the desk's two MinIO users (``vitrine-review`` reads, ``vitrine-upload`` writes) can do.

The desk's own statements run as the role in tests/stack/test_review.py; here, the grants are read
back exactly, and what the desk must never do is tried and refused.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError

from tests.support.pipeline import DEFAULT_DSN, ensure_stack, s3_client
from tests.support.review_desk import REVIEW_DSN, card, photo, result, upsert

pytestmark = pytest.mark.pipeline

REVIEW_COLUMNS = {
    "review_state",
    "reviewed_by",
    "reviewed_at",
    "review_note",
    "edited_card",
    "approved_card",
    "review_rev",
}


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    ensure_stack()


def grants(table: str) -> dict[str, set[str]]:
    """privilege → columns vitrine_review holds on ``table`` (column-level, as PostgreSQL
    reports table grants too)."""
    with psycopg.connect(DEFAULT_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT privilege_type, column_name FROM information_schema.column_privileges "
            "WHERE grantee = 'vitrine_review' AND table_name = %s",
            (table,),
        ).fetchall()
        whole = conn.execute(
            "SELECT privilege_type FROM information_schema.table_privileges "
            "WHERE grantee = 'vitrine_review' AND table_name = %s",
            (table,),
        ).fetchall()
    out: dict[str, set[str]] = {}
    for privilege, column in rows:
        out.setdefault(privilege, set()).add(column)
    for (privilege,) in whole:
        out.setdefault(privilege, set()).add("*")
    return out


def columns(table: str) -> set[str]:
    with psycopg.connect(DEFAULT_DSN, autocommit=True) as conn:
        return {
            c
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                (table,),
            )
        }


def test_the_desk_role_reads_cards_and_writes_only_the_review_columns() -> None:
    cards = grants("product_cards")
    assert cards["SELECT"] >= columns("product_cards")
    assert cards["UPDATE"] == REVIEW_COLUMNS
    assert set(cards) == {"SELECT", "UPDATE"}
    assert grants("card_reviews").keys() == {"SELECT", "INSERT", "UPDATE"}
    assert grants("card_reviews")["UPDATE"] == {"published_at"}
    assert grants("review_users") == {"SELECT": {"username", "role", "password_hash"}}
    assert grants("api_tokens") == {
        "SELECT": {"token_hash", "username", "name"},
        "UPDATE": {"last_used_at"},
    }
    assert set(grants("review_sessions")) == {"SELECT", "INSERT", "DELETE"}
    assert grants("schema_migrations") == {}
    with psycopg.connect(DEFAULT_DSN, autocommit=True) as conn:
        (connect, create, temp, schema) = conn.execute(
            "SELECT has_database_privilege('vitrine_review', current_database(), 'CONNECT'), "
            "has_database_privilege('vitrine_review', current_database(), 'CREATE'), "
            "has_database_privilege('vitrine_review', current_database(), 'TEMP'), "
            "has_schema_privilege('vitrine_review', 'public', 'CREATE')"
        ).fetchone()
    assert (connect, create, temp, schema) == (True, False, False, False)


@pytest.fixture
def row_key() -> Iterator[tuple[str, str]]:
    bucket, key = f"grants-{uuid.uuid4().hex[:8]}", "card.jpg"
    from schemas.messages import ObjectRef

    ref = ObjectRef(
        bucket=bucket,
        key=key,
        etag="e",
        size=1,
        content_type="image/jpeg",
        sequencer="1",
        event_time="2026-12-01T10:00:00Z",
    )
    upsert([result(ref, card("Garrafa das permissões"))])
    yield bucket, key
    with psycopg.connect(DEFAULT_DSN) as conn:
        conn.execute("DELETE FROM card_reviews WHERE bucket = %s", (bucket,))
        conn.execute("DELETE FROM product_cards WHERE bucket = %s", (bucket,))


FORBIDDEN = [
    "UPDATE product_cards SET product_name = 'x' WHERE bucket = %s",
    "UPDATE product_cards SET card = '{}' WHERE bucket = %s",
    "UPDATE product_cards SET status = 'failed' WHERE bucket = %s",
    "DELETE FROM product_cards WHERE bucket = %s",
    "DELETE FROM card_reviews WHERE bucket = %s",
    "UPDATE card_reviews SET after = '{}' WHERE bucket = %s",
    "INSERT INTO review_users (username, role, password_hash) VALUES (%s, 'admin', 'x')",
    "UPDATE review_users SET role = 'admin' WHERE username = %s",
    "INSERT INTO api_tokens (token_hash, username, name) VALUES ('\\x00', %s, 'x')",
    "SELECT created_at FROM api_tokens WHERE username = %s",
    "CREATE TABLE x AS SELECT %s::text AS a",
]


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_what_the_desk_must_never_do_is_refused(row_key: tuple[str, str], statement: str) -> None:
    bucket, _ = row_key
    with psycopg.connect(REVIEW_DSN) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, (bucket,))


def test_the_desk_role_can_record_a_decision(row_key: tuple[str, str]) -> None:
    bucket, key = row_key
    with psycopg.connect(REVIEW_DSN) as conn:
        conn.execute(
            "UPDATE product_cards SET review_state = 'approved', reviewed_by = 'x', "
            "reviewed_at = now(), review_rev = review_rev + 1 WHERE bucket = %s",
            (bucket,),
        )
        (review_id,) = conn.execute(
            "INSERT INTO card_reviews (bucket, object_key, reviewer, decision) "
            "VALUES (%s, %s, 'x', 'approve') RETURNING id",
            (bucket, key),
        ).fetchone()
        conn.execute("UPDATE card_reviews SET published_at = now() WHERE id = %s", (review_id,))


def minio_as(access: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:29000",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def refused(call: Any) -> bool:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def test_the_desk_minio_users_read_only_and_put_only() -> None:
    """On the pipeline's bucket (VITRINE_BUCKET, the one the policies name)."""
    root = s3_client({})
    key = f"grants-test/{uuid.uuid4().hex}.jpg"
    root.put_object(Bucket="incoming", Key=key, Body=photo((1, 2, 3)), ContentType="image/jpeg")
    reader = minio_as("vitrine-review", "vitrine-review-dev-secret")
    uploader = minio_as("vitrine-upload", "vitrine-upload-dev-secret")
    try:
        assert reader.get_object(Bucket="incoming", Key=key)["Body"].read()[:2] == b"\xff\xd8"
        assert refused(lambda: reader.put_object(Bucket="incoming", Key=key + ".x", Body=b"x"))
        assert refused(lambda: reader.delete_object(Bucket="incoming", Key=key))
        assert refused(lambda: reader.list_objects_v2(Bucket="incoming"))
        uploaded = key + ".up.jpg"
        uploader.put_object(Bucket="incoming", Key=uploaded, Body=io.BytesIO(photo((4, 5, 6))))
        assert root.head_object(Bucket="incoming", Key=uploaded)["ContentLength"] > 0
        assert refused(lambda: uploader.get_object(Bucket="incoming", Key=key))
        assert refused(lambda: uploader.list_objects_v2(Bucket="incoming"))
        assert refused(lambda: uploader.put_object(Bucket="elsewhere", Key="x", Body=b"x"))
    finally:
        for k in (key, key + ".up.jpg"):
            root.delete_object(Bucket="incoming", Key=k)


def test_the_export_user_keeps_the_feeds_and_the_desk_only_reads_them() -> None:
    """On the exports bucket (VITRINE_EXPORTS_BUCKET, the one the policies name): the export
    stage's user reads, writes, lists and removes there and nothing in the pipeline's bucket;
    the desk's reader reads a feed and cannot change one."""
    root = s3_client({})
    key = f"grants-test/{uuid.uuid4().hex}"
    root.put_object(Bucket="incoming", Key=key + ".jpg", Body=photo((1, 2, 3)))
    exporter = minio_as("vitrine-export", "vitrine-export-dev-secret")
    reader = minio_as("vitrine-review", "vitrine-review-dev-secret")
    try:
        exporter.put_object(Bucket="exports", Key=key + ".tsv", Body=b"id\ttitle\n")
        assert exporter.get_object(Bucket="exports", Key=key + ".tsv")["Body"].read() == (
            b"id\ttitle\n"
        )
        listed = exporter.list_objects_v2(Bucket="exports", Prefix=key)
        assert [o["Key"] for o in listed["Contents"]] == [key + ".tsv"]
        assert reader.get_object(Bucket="exports", Key=key + ".tsv")["Body"].read()
        assert refused(lambda: reader.put_object(Bucket="exports", Key=key + ".x", Body=b"x"))
        assert refused(lambda: reader.delete_object(Bucket="exports", Key=key + ".tsv"))
        assert refused(lambda: exporter.get_object(Bucket="incoming", Key=key + ".jpg"))
        assert refused(lambda: exporter.put_object(Bucket="incoming", Key=key, Body=b"x"))
        assert refused(lambda: exporter.list_objects_v2(Bucket="incoming"))
        exporter.delete_object(Bucket="exports", Key=key + ".tsv")
    finally:
        root.delete_object(Bucket="incoming", Key=key + ".jpg")
        root.delete_object(Bucket="exports", Key=key + ".tsv")
