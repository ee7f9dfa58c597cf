"""`vitrine reprocess` and `vitrine backfill` against the real stack."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from services.runtime.s3 import make_minio
from services.runtime.settings import S3Settings
from tests.support.pipeline import (
    REPO,
    Pipeline,
    ensure_stack,
    new_namespace,
    rows,
    s3_client,
    tiny_model_env,
    wait_for,
)
from vitrine.requeue import Selection

pytestmark = [pytest.mark.pipeline, pytest.mark.model]


def test_selection_is_parameterised_and_never_includes_deleted() -> None:
    where, params = Selection(statuses=("failed",), prefix="a'; DROP TABLE x; --").where()
    assert (
        where.as_string()
        == "status <> 'deleted' AND status = ANY(%s) AND starts_with(object_key, %s)"
    )
    assert params == [["failed"], "a'; DROP TABLE x; --"]
    assert Selection().empty and not Selection(everything=True).empty


def jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (shade, 80, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipeline(tiny_pairs, tmp_path_factory) -> Iterator[Pipeline]:
    ensure_stack()
    ns = new_namespace(tiny_model_env(tiny_pairs["llava"]))
    p = Pipeline(ns, tmp_path_factory.mktemp("requeue-logs"))
    for name in ("ingest", "sink", "inference"):
        p.add(name, f"services.{name}")
    p.start_all()
    yield p
    p.close()


def vitrine(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vitrine.cli", *args],
        cwd=REPO,
        env=p.ns.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def finals(p: Pipeline, prefix: str) -> dict[str, dict]:
    return {
        r["object_key"]: r
        for r in rows(
            p.ns.dsn, p.ns.bucket, "starts_with(object_key, %s) AND status_rank = 1", (prefix,)
        )
    }


def test_reprocess_regenerates_selected_cards(pipeline: Pipeline) -> None:
    s3 = s3_client(pipeline.ns.env)
    for i in range(2):
        s3.put_object(
            Bucket=pipeline.ns.bucket,
            Key=f"r/{i}.jpg",
            Body=jpeg(i * 50),
            ContentType="image/jpeg",
            Metadata={"sku": f"R-{i}"},
        )
    before = wait_for(lambda: (f := finals(pipeline, "r/")) and len(f) == 2 and f, 300, "2 cards")

    dry = vitrine(
        pipeline, "reprocess", "--bucket", pipeline.ns.bucket, "--prefix", "r/", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.split() == [f"{pipeline.ns.bucket}/r/0.jpg", f"{pipeline.ns.bucket}/r/1.jpg"]
    time.sleep(2)
    assert finals(pipeline, "r/")["r/0.jpg"]["produced_at"] == before["r/0.jpg"]["produced_at"]

    done = vitrine(
        pipeline, "reprocess", "--bucket", pipeline.ns.bucket, "--prefix", "r/", "--status", "done"
    )
    assert done.returncode == 0, done.stderr
    assert "2 job(s) enqueued" in done.stderr
    after = wait_for(
        lambda: (
            (f := finals(pipeline, "r/"))
            and all(f[k]["produced_at"] > before[k]["produced_at"] for k in before)
            and f
        ),
        300,
        "regenerated cards",
    )
    for key, row in after.items():
        assert row["status"] == "done" and row["sequencer"] == before[key]["sequencer"]
        assert row["results_applied"] == before[key]["results_applied"] + 1
        assert row["card"]["sku"] == row["sku"] == f"R-{key[2]}"  # the facts went back too


def test_reprocess_needs_a_selection(pipeline: Pipeline) -> None:
    result = vitrine(pipeline, "reprocess")
    assert result.returncode == 2 and "say what to reprocess" in result.stderr


def test_backfill_enqueues_objects_that_predate_the_notification(pipeline: Pipeline) -> None:
    minio = make_minio(S3Settings())
    bucket = pipeline.ns.bucket
    config = minio.get_bucket_notification(bucket)
    minio.delete_bucket_notification(bucket)
    try:
        s3 = s3_client(pipeline.ns.env)
        for i in range(2):
            s3.put_object(
                Bucket=bucket,
                Key=f"old/{i}.jpg",
                Body=jpeg(100 + i),
                ContentType="image/jpeg",
                Metadata={"sku": f"OLD-{i}"},  # the facts come back with the listing
            )
        time.sleep(5)  # longer than MinIO's 3 s event queue ticker: no event is coming
        assert finals(pipeline, "old/") == {}
    finally:
        minio.set_bucket_notification(bucket, config)
    result = vitrine(pipeline, "backfill", "--bucket", bucket, "--prefix", "old/")
    assert result.returncode == 0, result.stderr
    assert "backfill: 2 job(s) enqueued" in result.stderr
    rows_ = wait_for(
        lambda: (f := finals(pipeline, "old/")) and len(f) == 2 and f, 300, "backfilled cards"
    )
    assert {r["status"] for r in rows_.values()} == {"done"}
    assert {r["sku"] for r in rows_.values()} == {"OLD-0", "OLD-1"}
    assert {r["card"]["sku"] for r in rows_.values()} == {"OLD-0", "OLD-1"}
    again = vitrine(pipeline, "backfill", "--bucket", bucket, "--prefix", "old/")
    assert "nothing to backfill" in again.stderr
